"""Data governance: data-usage labels follow the columns into segments and destination fields
(``lineage``), policies forbid labels for marketing actions (``policies``), and personal data is
masked in what Dagster shows (``masking``)."""
