"""Date values (strings in SFMC system time) -> UTC timestamps, and system times for counting.

SFMC writes dates as ``M/D/YYYY h:mm:ss AM|PM`` (or ISO 8601) in system time, US Central Standard
Time, UTC-6 all year. A date after the latest Salesforce accepts (``salesforce/dates.py``) is a
problem, not a date: SFMC's ``12/31/9999 11:00:00 PM`` would otherwise land as year 10000. Strict
shapes go through arrow's ``strptime`` (impossible days such as 2/30 are caught); every other value
is decided by the exact logic (``_date_exact``).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sfmc_pipeline.config.data_extensions import ColumnConfig
from sfmc_pipeline.datasets.value_arrays import (
    PRINTABLE_ASCII,
    Problems,
    as_mask,
    match_mask,
    matches,
    present_mask,
    string_array,
    widen,
)
from sfmc_pipeline.salesforce.dates import SALESFORCE_LATEST_DATE

SFMC_SYSTEM_TZ = "Etc/GMT+6"  # POSIX sign convention: UTC-6 all year
DATE_DTYPE = "datetime64[us, UTC]"
# Formats a Date value may come in: the rowset/Data Extract format first, then ISO 8601.
DATE_FORMATS = (
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d",
)
_DATE_EXPECTED = "not a date (expected M/D/YYYY h:mm:ss AM/PM or YYYY-MM-DD)"
_MONTH, _DAY, _YEAR = r"(?:1[0-2]|0?[1-9])", r"(?:3[01]|[12][0-9]|0?[1-9])", r"[1-9][0-9]{3}"
_ISO_DATE = r"[1-9][0-9]{3}-(?:1[0-2]|0[1-9])-(?:3[01]|[12][0-9]|0[1-9])"
_ISO_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
# (pattern, format): in DATE_FORMATS order; a value one pattern admits is parsed by that format
# and by no earlier one. strptime rolls an impossible day over (2/30 -> 3/2): see _LATE_DAY.
_FAST_DATES = (
    (rf"^{_MONTH}/{_DAY}/{_YEAR} (?:1[0-2]|0?[1-9]):[0-5][0-9]:[0-5][0-9] [AP]M$", DATE_FORMATS[0]),
    (rf"^{_MONTH}/{_DAY}/{_YEAR}$", DATE_FORMATS[1]),
    (rf"^{_ISO_DATE}T{_ISO_TIME}$", DATE_FORMATS[2]),
    (rf"^{_ISO_DATE} {_ISO_TIME}$", DATE_FORMATS[3]),
    (rf"^{_ISO_DATE}$", DATE_FORMATS[4]),
)
_LATE_DAY = r"^(?:[0-9]{1,2}/(?:29|3[01])/|[0-9]{4}-[0-9]{2}-(?:29|3[01]))"  # day 29-31: may not exist
_SYSTEM_OFFSET = np.timedelta64(6, "h")  # SFMC system time is UTC-6: add 6 hours for UTC
# A date at or after this UTC instant is later than Salesforce accepts (salesforce/dates.py).
_AFTER_SALESFORCE = np.datetime64(SALESFORCE_LATEST_DATE + dt.timedelta(days=1), "us")
_TOO_LATE = f"after {SALESFORCE_LATEST_DATE.isoformat()} (UTC), the latest date Salesforce accepts"


def dates(values: pd.Series, column: ColumnConfig):
    utc, problems = _utc_times(values, column)
    too_late = utc >= _AFTER_SALESFORCE  # NaT compares False
    if too_late.any():  # quarantined, never landed as a date the CRM refuses (or as year 10000)
        utc[too_late] = np.datetime64("NaT")
        problems = [*problems, (too_late, _TOO_LATE)]
    return pd.Series(utc, index=values.index).dt.tz_localize("UTC").astype(DATE_DTYPE), problems


def sfmc_system_times(values: pd.Series) -> np.ndarray:
    """SFMC date strings as SFMC compares them: naive system times (``datetime64[us]``), NaT where a
    value is empty or not a date. No Salesforce range rule (``12/31/9999`` stays a date): for counting
    rows the way SFMC's ``$filter`` does."""
    utc, _ = _utc_times(values.astype("string"), None)
    return utc - _SYSTEM_OFFSET


def utc_to_system_times(values: pd.Series) -> np.ndarray:
    """Typed (UTC) dates as naive SFMC system times (``datetime64[us]``, NaT kept): the inverse of typing."""
    return values.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]") - _SYSTEM_OFFSET


def _utc_times(values: pd.Series, column: ColumnConfig | None) -> tuple[np.ndarray, Problems]:
    """The values as naive UTC ``datetime64[us]`` (NaT where not a date), and the rows that are not dates."""
    array = string_array(values)
    parsed = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[us]")  # SFMC system time
    remaining = present_mask(values)
    for pattern, fmt in _FAST_DATES:
        if not remaining.any():
            break
        rows = np.flatnonzero(remaining)
        if len(rows) > len(array) // 2:  # most values still to parse: match them all, no copy
            rows, subset = np.arange(len(array)), array
            hit = match_mask(subset, pattern) & remaining
        else:
            subset = array.take(pa.array(rows))
            hit = match_mask(subset, pattern)
        if not hit.any():
            continue
        rows, texts = rows[hit], subset.filter(pa.array(hit))
        found = pc.strptime(texts, format=fmt, unit="us", error_is_null=True)
        ok = as_mask(found.is_valid())
        # strptime rolls an impossible day over (2/30 -> 3/2, 4/31 -> 5/1): a day 29-31 that came
        # out as 1-3 did not exist, and is left to the exact parser.
        early = np.flatnonzero(as_mask(pc.less_equal(pc.day(found), 3)))
        if len(early):
            ok[early[match_mask(texts.take(pa.array(early)), _LATE_DAY)]] = False
        parsed[rows[ok]] = found.filter(pa.array(ok)).to_numpy(zero_copy_only=False)
        remaining[rows[ok]] = False
    utc = parsed + _SYSTEM_OFFSET
    problems: Problems = []
    if remaining.any():
        exact, subset_problems = _date_exact(values[remaining], column)
        utc[remaining] = exact.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
        problems = widen(subset_problems, remaining)
    return utc, problems


def _date_exact(values: pd.Series, column: ColumnConfig | None):
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us]")
    # pandas' strptime takes other scripts' digits ("1/15/２０２４"); SFMC writes ASCII.
    remaining = values.notna()
    candidates = matches(values, PRINTABLE_ASCII)
    # A format's "/" or "-" must be in the value: the others are not tried (nothing would parse).
    separated = {sep: values.str.contains(sep, regex=False).fillna(False).astype(bool) for sep in "/-"}
    for fmt in DATE_FORMATS:
        if not candidates.any():
            break
        tried = candidates & separated[fmt[2]]  # "%m/..." or "%Y-..."
        if not tried.any():
            continue
        attempt = pd.to_datetime(values[tried], format=fmt, errors="coerce")
        hit = attempt.notna()
        parsed.loc[hit[hit].index] = attempt[hit].astype("datetime64[us]")
        remaining.loc[hit[hit].index] = False
        candidates.loc[hit[hit].index] = False
    localized = parsed.dt.tz_localize(SFMC_SYSTEM_TZ).dt.tz_convert("UTC").astype(DATE_DTYPE)
    return localized, [(remaining, _DATE_EXPECTED)]
