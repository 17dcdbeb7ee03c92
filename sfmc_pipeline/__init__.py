"""SFMC Data Extensions -> validated parquet datasets -> segments -> Salesforce CRM."""
