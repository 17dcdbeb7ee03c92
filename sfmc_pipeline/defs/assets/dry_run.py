"""Dry runs: a run in which any CRM sync is configured ``dry_run: true`` changes no state.

The sync itself sends nothing and leaves the ledger alone; the other steps of the same run compute
and show everything as usual but do not move what the next real run compares with: the segment
baseline (so ``realized`` is still written by the next real run) and the volume-guard counts.
"""

from __future__ import annotations

import dagster as dg

SYNC_KEY_PREFIX = "salesforce"  # sync assets are salesforce/<destination>, ops salesforce__<destination>


def is_dry_run(context: dg.AssetExecutionContext) -> bool:
    """True when any sync step of this run is configured ``dry_run: true``."""
    ops = (context.run.run_config or {}).get("ops") or {}
    return any(
        name.startswith(f"{SYNC_KEY_PREFIX}__") and isinstance(entry, dict) and (entry.get("config") or {}).get("dry_run")
        for name, entry in ops.items()
    )
