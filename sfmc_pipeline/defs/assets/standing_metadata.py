"""What a sync run's metadata says about failures that stand: records deleted in the CRM and values Salesforce
rejects, which the sync holds back instead of sending (and failing) again every run. The counts are numbers, so
the UI plots them across runs; a sample table names the records (masked like the failure table)."""

from __future__ import annotations

from collections import Counter

import dagster as dg
import pandas as pd

from sfmc_pipeline.config.destinations import DestinationConfig
from sfmc_pipeline.crm.outcome import SyncOutcome
from sfmc_pipeline.defs.metadata import markdown_table
from sfmc_pipeline.governance.masking import Masker
from sfmc_pipeline.salesforce.rules import RECORD_GONE, VALUE_REJECTED

SAMPLE_ROWS = 20
_KIND_WORDS = {RECORD_GONE: "gone from the CRM", VALUE_REJECTED: "values rejected"}


def standing_metadata(outcome: SyncOutcome, dest: DestinationConfig, masker: Masker) -> dict:
    standing = outcome.standing
    kinds = Counter(mark.kind for mark in standing.values())
    codes = Counter(mark.code for mark in standing.values())
    metadata = {
        "records_failed_new": outcome.new_failures,
        "records_failed_again": outcome.failed_total - outcome.new_failures,
        "records_held_back_standing": outcome.held_back_total,
        "standing_failures": len(standing),
        "standing_records_gone": kinds[RECORD_GONE],
        "standing_values_rejected": kinds[VALUE_REJECTED],
        "standing_failure_codes": ", ".join(f"{code}: {n}" for code, n in codes.most_common()) or "none",
    }
    if standing:
        marks = sorted(standing.values(), key=lambda m: (m.first_seen, m.record_id))[:SAMPLE_ROWS]
        rows = pd.DataFrame([{"record_id": m.record_id, "standing": _KIND_WORDS.get(m.kind, m.kind), "code": m.code,
                              "fields": m.fields, "since": m.first_seen, "last_failed": m.last_seen,
                              "failed_sends": m.attempts} for m in marks])
        rows["record_id"] = [r["record_id"] for r in masker.failures(rows[["record_id"]].to_dict("records"), dest)]
        metadata["standing_failures_sample"] = dg.MetadataValue.md(
            markdown_table(rows, max_rows=SAMPLE_ROWS, max_width=80)
            + (f"\n\n_{len(standing) - SAMPLE_ROWS} more; `sfmc-pipeline ledger standing --destination {dest.name}` "
               "lists them all_" if len(standing) > SAMPLE_ROWS else ""))
    return metadata
