"""Which date a segment evaluation is "as of", and why.

First set wins: run config ``as_of`` > ``$SFMC_PIPELINE_AS_OF`` > ``evaluation.as_of`` in the
pipeline config > the sample data's anchor date (embedded mode only, so the shipped demo stays
meaningful whatever today is) > today's date in the evaluation time zone.
"""

from __future__ import annotations

import datetime as dt
import os
import zoneinfo

from sfmc_pipeline.settings import AS_OF_ENV


def resolve_as_of(
    *,
    run_config: str | None,
    configured: dt.date | None,
    sample_anchor: dt.date | None,
    timezone: str = "UTC",
    today: dt.date | None = None,
) -> tuple[dt.date, str]:
    """``(as_of, where it came from)``; a malformed date raises ``ValueError`` naming its source."""
    for value, source in ((run_config, "run config as_of"), (os.environ.get(AS_OF_ENV), AS_OF_ENV)):
        if value:
            try:
                return dt.date.fromisoformat(value.strip()), source
            except ValueError:
                raise ValueError(f"{source} {value!r} is not a date; use YYYY-MM-DD, e.g. 2026-11-20") from None
    if configured is not None:
        return configured, "pipeline config evaluation.as_of"
    if sample_anchor is not None:
        return sample_anchor, "sample data anchor date (embedded mode)"
    return today or dt.datetime.now(zoneinfo.ZoneInfo(timezone)).date(), f"today ({timezone})"
