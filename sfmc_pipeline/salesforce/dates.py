"""Salesforce's date rule: the latest date it accepts, 4000-12-31.

Salesforce refuses a Date or Date/Time value after 4000-12-31 (its valid range is
1700-01-01T00:00:00Z to 4000-12-31, in GMT). SFMC can hold later ones (``12/31/9999 11:00:00
PM`` in SFMC system time, UTC-6, is year 10000 in UTC), so ``datasets/conversion.py`` quarantines
them when it types SFMC values, instead of landing a date the CRM would reject.

The rule lives here, in a module that imports nothing of the project, rather than in
``salesforce_rules.py`` next to Salesforce's other field rules: that module imports
``datasets/schemas.py``, which imports ``datasets/conversion.py``, so conversion importing it
would be an import cycle.
"""

from __future__ import annotations

import datetime as dt

# The latest calendar day (UTC) Salesforce accepts in a Date or Date/Time field.
SALESFORCE_LATEST_DATE = dt.date(4000, 12, 31)
