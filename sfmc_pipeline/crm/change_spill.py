"""The records a sync planned range by range, kept on disk until the exit guard has counted every range.

Nothing may be sent before the exit guard has seen the whole change set, so a sync planned in several ranges
(``record_ranges.py``) writes each range's records to send to a spill file in the storage, in record-id order, as
batches of ``(record_id, fields, ledger texts, profile key)``; the send reads them back a batch at a time. The file
is private to the pipeline's user (mode 0600), removed when the sync ends, whatever happens, and by the
destination's next sync when a killed run could not.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from bisect import bisect_right
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from sfmc_pipeline.crm.change_rows import RECENT_BATCHES, batches

Planned = tuple[str, dict, tuple, Any]  # record id, fields to send, their ledger texts, profile key


class ChangeSpill:
    """Planned records on disk, appended in record-id order, read back in that order or one record by id."""

    def __init__(self, directory: Path, destination: str):
        """A new spill of ``destination``'s plan in ``directory``; one a killed run left is removed first (the
        run lock keeps two runs from syncing the same destination at once)."""
        directory.mkdir(parents=True, exist_ok=True)
        prefix = f"planned-{destination}-"
        for left in directory.glob(f"{prefix}*.pickle"):
            left.unlink(missing_ok=True)
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=".pickle", dir=directory)
        self.path = Path(name)
        self._file = os.fdopen(handle, "w+b")
        self._firsts: list[str] = []  # each batch's first record id
        self._offsets: list[int] = []
        self._count = 0
        self._recent: OrderedDict[int, dict[str, Planned]] = OrderedDict()

    def add(self, records: Iterable[Planned]) -> None:
        """Append ``records`` (record ids above every id added before)."""
        for batch in batches(records):
            self._write(batch)

    def _write(self, batch: list[Planned]) -> None:
        self._file.seek(0, os.SEEK_END)
        self._offsets.append(self._file.tell())
        self._firsts.append(batch[0][0])
        pickle.dump(batch, self._file, protocol=pickle.HIGHEST_PROTOCOL)
        self._count += len(batch)

    def __len__(self) -> int:
        return self._count

    def _batch(self, number: int) -> dict[str, Planned]:
        if number in self._recent:
            self._recent.move_to_end(number)
            return self._recent[number]
        self._file.flush()
        self._file.seek(self._offsets[number])
        batch = {record[0]: record for record in pickle.load(self._file)}
        self._recent[number] = batch
        while len(self._recent) > RECENT_BATCHES:
            self._recent.popitem(last=False)
        return batch

    def __iter__(self) -> Iterator[Planned]:
        for number in range(len(self._offsets)):
            yield from self._batch(number).values()

    def find(self, rid: str) -> Planned | None:
        number = bisect_right(self._firsts, rid) - 1
        return None if number < 0 else self._batch(number).get(rid)

    def close(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


class SpilledRecords:
    """``(record_id, fields)`` of the spilled records, in order (what the send takes)."""

    def __init__(self, spill: ChangeSpill):
        self.spill = spill

    def __len__(self) -> int:
        return len(self.spill)

    def __bool__(self) -> bool:
        return len(self.spill) > 0

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        return ((rid, fields) for rid, fields, _, _ in self.spill)


class _SpillView(Mapping):
    """record -> one part of its spilled plan (``at``: 1 fields, 2 ledger texts, 3 profile key)."""

    def __init__(self, spill: ChangeSpill, at: int):
        self.spill, self.at = spill, at

    def __getitem__(self, rid: str):
        found = self.spill.find(rid) if isinstance(rid, str) else None
        if found is None:
            raise KeyError(rid)
        return found[self.at]

    def __len__(self) -> int:
        return len(self.spill)

    def __iter__(self) -> Iterator[str]:
        return (record[0] for record in self.spill)


class SpilledChanges:
    """What the send reads of a change set (``diff.Changes``: ``records``, ``encoded``, ``owners``), from a spill."""

    def __init__(self, spill: ChangeSpill):
        self.records, self.encoded, self.owners = (_SpillView(spill, at) for at in (1, 2, 3))
