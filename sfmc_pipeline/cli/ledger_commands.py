"""``sfmc-pipeline ledger standing`` and ``sfmc-pipeline ledger reset``: the sync's standing failures, for an
operator. A record deleted in the CRM, or whose values Salesforce rejects, is held back by every sync until its
values change; ``standing`` lists them, ``reset`` lets the next sync send them again (after the record was
restored, or a validation rule changed). Both work on the sync ledger of the storage directory
(``SFMC_PIPELINE_STORAGE``, default ``data/storage``), for every CRM the ledger knows."""

from __future__ import annotations

import os
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Callable, Sequence

from sfmc_pipeline import settings
from sfmc_pipeline.cli.config_file import load_or_report
from sfmc_pipeline.crm.standing_failures import listing, reset
from sfmc_pipeline.datasets.storage import DatasetStore, open_state_db
from sfmc_pipeline.defs.assets.crm import (
    ledger_path,  # the one place the ledger's location is defined
)
from sfmc_pipeline.salesforce.rules import RECORD_GONE, VALUE_REJECTED

EXIT_INVALID = 2
KIND_WORDS = {RECORD_GONE: "gone from the CRM", VALUE_REJECTED: "values rejected"}


def ledger_file() -> Path:
    """The sync ledger of the storage directory the pipeline uses (as the sync asset places it)."""
    base = Path(os.environ.get(settings.STORAGE_ENV) or settings.DEFAULT_STORAGE_DIR).expanduser()
    return ledger_path(DatasetStore(base))


def run_standing(*, config_path: Path | None, destination: str | None, out: Callable[[str], None] = print,
                 err: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> int:
    checked = _checked(config_path, destination, err)
    if checked is None:
        return EXIT_INVALID
    path = checked
    with closing(open_state_db(path)) as db:
        rows = listing(db, destination)
    for target, dest, rid, kind, code, fields, first, last, attempts in rows:
        named = f" ({fields})" if fields else ""
        out(f"{dest} {rid}: {KIND_WORDS.get(kind, kind)}, {code}{named}, since {first}, last failed {last}, "
            f"{attempts} failed send(s) [{target}]")
    out(f"{len(rows)} standing failure(s) in {path}" + (f" for {destination}" if destination else ""))
    if rows:
        out("Records listed are held back by every sync until their values change. After restoring a record or "
            "changing a validation rule: sfmc-pipeline ledger reset --destination NAME --record ID (or --gone, "
            "--rejected, --all).")
    return 0


def run_reset(*, config_path: Path | None, destination: str, record_ids: Sequence[str], kind: str | None,
              out: Callable[[str], None] = print,
              err: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> int:
    checked = _checked(config_path, destination, err)
    if checked is None:
        return EXIT_INVALID
    with closing(open_state_db(checked)) as db:
        removed = reset(db, destination, record_ids=record_ids, kind=kind)
    for target, rid, was, code in removed:
        out(f"reset {destination} {rid} ({KIND_WORDS.get(was, was)}, {code}) [{target}]")
    out(f"{len(removed)} standing failure(s) reset for {destination}; the next sync sends these records again")
    missing = sorted(set(record_ids) - {rid for _, rid, _, _ in removed} - {rid[:15] for _, rid, _, _ in removed})
    if record_ids and missing:
        err(f"no standing failure of {destination} for: {', '.join(missing)} (see sfmc-pipeline ledger standing)")
    return 0


def _checked(config_path: Path | None, destination: str | None, err: Callable[[str], None]) -> Path | None:
    """The ledger file, once the destination (if given) is one of the config's and the ledger exists."""
    path, pipeline = load_or_report(config_path, err)
    if pipeline is None:
        return None
    names = [d.name for d in pipeline.destinations]
    if destination is not None and destination not in names:
        err(f"error: --destination {destination!r} is not a destination of {path}; use one of: {', '.join(names)}")
        return None
    ledger = ledger_file()
    if not ledger.exists():
        err(f"error: there is no sync ledger at {ledger}: nothing was synced from this storage directory yet. Point "
            f"{settings.STORAGE_ENV} at the storage directory the pipeline uses.")
        return None
    try:
        with closing(sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)) as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        err(f"error: the sync ledger {ledger} cannot be read ({exc}); if it is damaged, move it away (the next sync "
            "is then a first sync)")
        return None
    return ledger
