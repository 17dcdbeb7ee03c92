"""Dagster resources: configuration only; each builds the plain client that does the work."""
