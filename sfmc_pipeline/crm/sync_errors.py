"""The sync-errors dataset (``crm/sync_errors/<destination>.parquet``): one row per record of the last
sync that failed in Salesforce or was rejected client-side, with Salesforce's code and the payload."""

from __future__ import annotations

import json
from typing import Any

from sfmc_pipeline.salesforce.records import RecordError

ERROR_COLUMNS = ["run_id", "destination", "object", "record_id", "stage", "status_code", "message", "fields", "payload"]


def error_row(run_id: str, destination: str, sobject: str, rid: str, fields: dict[str, Any], error: RecordError,
              stage: str) -> dict:
    """One row (``ERROR_COLUMNS``); ``stage`` is ``rejected`` (client-side) or ``failed`` (by Salesforce)."""
    return {
        "run_id": run_id, "destination": destination, "object": sobject, "record_id": rid,
        "stage": stage, "status_code": error.status_code, "message": error.message,
        "fields": ",".join(error.fields), "payload": json.dumps(fields, sort_keys=True, default=str),
    }
