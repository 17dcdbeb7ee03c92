"""Unattended operation: the schedule, freshness expectations, downstream automation, the change
sensor and failure alerts. Everything that starts a run is shipped stopped except the alert sensor
(it only reports); turn the others on in the UI (Automation) or with ``dg``."""
