"""The local SQLite CRM target: the embedded default's stand-in for a Salesforce org."""
