"""Large change sets through Salesforce Bulk API 2.0 jobs: results, job store, CSV, writer, recovery."""
