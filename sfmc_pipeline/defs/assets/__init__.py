"""Dagster assets, one module per stage: SFMC datasets, segments, CRM sync."""
