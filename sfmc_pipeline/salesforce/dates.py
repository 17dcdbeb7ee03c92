"""Salesforce's date rule: the latest date it accepts, 4000-12-31.

Salesforce refuses a Date or Date/Time value after 4000-12-31 (its valid range is 1700-01-01T00:00:00Z to
4000-12-31, in GMT). SFMC can hold later ones, so ``datasets/date_conversion.py`` quarantines them instead of
landing a date the CRM would reject. The rule lives here, in a module that imports nothing of the project,
rather than in ``salesforce/rules.py``: that module imports ``datasets/schemas.py``, which imports
``datasets/conversion.py`` and through it ``date_conversion.py``, so that would be an import cycle.
"""

from __future__ import annotations

import datetime as dt

# The latest calendar day (UTC) Salesforce accepts in a Date or Date/Time field.
SALESFORCE_LATEST_DATE = dt.date(4000, 12, 31)
