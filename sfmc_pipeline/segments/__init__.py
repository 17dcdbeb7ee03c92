"""Segments: declarative audience rules evaluated on the datasets, and membership statuses
(realized / existing / exited) tracked across evaluations."""
