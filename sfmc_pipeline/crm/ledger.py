"""The sync ledger: what was confirmed written to each (object, record Id, field).

SQLite, one transaction per batch, so a run killed at any point loses nothing: on the re-run
only the batch that was in flight is sent again, and an unchanged input sends nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Iterable

import pandas as pd

_SCHEMA = """
CREATE TABLE IF NOT EXISTS confirmed (
    object TEXT NOT NULL,
    record_id TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT,            -- JSON of the value confirmed written
    run_id TEXT NOT NULL,
    written_at TEXT NOT NULL,
    PRIMARY KEY (object, record_id, field)
)
"""


class SyncLedger:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def confirmed(self, sobject: str) -> pd.DataFrame:
        """``record_id, field, value`` (value as JSON text) confirmed for ``sobject``."""
        return pd.read_sql_query(
            "SELECT record_id, field, value FROM confirmed WHERE object = ?", self._db, params=(sobject,)
        )

    def record(self, sobject: str, run_id: str, rows: Iterable[tuple[str, str, object]]) -> None:
        """Confirm ``(record_id, field, value)`` rows in one transaction."""
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        data = [(sobject, rid, field, encode(value), run_id, now) for rid, field, value in rows]
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO confirmed (object, record_id, field, value, run_id, written_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (object, record_id, field) DO UPDATE SET value = excluded.value, "
                "run_id = excluded.run_id, written_at = excluded.written_at",
                data,
            )


def encode(value: object) -> str:
    return json.dumps(value, sort_keys=True)
