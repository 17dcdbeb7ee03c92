"""The SFMC source: read Data Extension rows, from the REST API or the embedded sample data."""
