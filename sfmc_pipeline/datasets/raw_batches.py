"""The raw side of a chunked validation: pages gathered into arrow batches of strings, and a spill.

A batch is the configured columns of about ``batch_rows`` rows (the pages' columns, not copied).
The raw batches are spilled to a temporary Arrow IPC file, so the raw values of a row found to
share a primary key with a later row can be read back without keeping every page in memory.
"""

from __future__ import annotations

import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as arrow

STRING = pd.StringDtype()
_SPILL_BATCH_ROWS = 8192


def raw_batches(pages: Iterable[pd.DataFrame], names: list[str], batch_rows: int) -> Iterator[tuple[int, arrow.Table]]:
    """``(first row number, raw batch)``: the configured columns as one arrow table of strings."""
    pending: list[arrow.Table] = []
    held = start = 0
    for page in pages:
        table = _raw_table(page, names)
        for offset in range(0, table.num_rows, batch_rows):
            piece = table.slice(offset, batch_rows)
            pending.append(piece)
            held += piece.num_rows
            if held >= batch_rows:
                yield start, arrow.concat_tables(pending)  # the pages' columns, not copied
                start, pending, held = start + held, [], 0
    if pending:
        yield start, arrow.concat_tables(pending)


def _raw_table(page: pd.DataFrame, names: list[str]) -> arrow.Table:
    """The configured columns of a page as arrow strings (no copy for a page the sources' way:
    exactly these columns, ``string`` dtype). A column the page lacks is empty (``""``), as in the
    quarantine (its typed value is null either way)."""
    columns = {}
    for name in names:
        if name in page:
            values = page[name]
            if values.dtype != STRING:
                values = values.astype(STRING)
            array = arrow.array(values.array)
        else:
            array = arrow.array([""] * len(page), type=arrow.large_string())
        columns[name] = array.cast(arrow.large_string()) if array.type != arrow.large_string() else array
    return arrow.table(columns)


def pandas_strings(table: arrow.Table, start: int) -> pd.DataFrame:
    """A raw arrow batch as a frame of ``string`` columns indexed by row number (no copy)."""
    frame = table.to_pandas(types_mapper=lambda _: STRING)
    return frame.set_axis(pd.RangeIndex(start, start + table.num_rows))


class RawSpill:
    """The raw batches of a read, kept for the rows that turn out to share a primary key with a
    later row. The newest batch stays in memory; earlier ones go to a temporary Arrow IPC file
    (written in the background as they are replaced, one write at a time, read back by row number,
    deleted by ``close``)."""

    def __init__(self, directory):
        self.directory = directory
        self.held: tuple[int, arrow.Table] | None = None
        self.path: str | None = None
        self.writer = None
        self.background: ThreadPoolExecutor | None = None
        self.writing = None  # the write in progress (a Future)

    def add(self, start: int, raw: arrow.Table) -> None:
        if self.held is not None:
            self._wait()
            if self.background is None:
                self.background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="validate-spill")
            self.writing = self.background.submit(self._write, self.held[1])
        self.held = (start, raw)

    def _wait(self) -> None:
        if self.writing is not None:
            writing, self.writing = self.writing, None
            writing.result()  # a failed write fails the read here

    def _write(self, raw: arrow.Table) -> None:
        if self.writer is None:
            fd, self.path = tempfile.mkstemp(prefix="sfmc-raw-", suffix=".arrow", dir=self.directory)
            os.close(fd)
            self.writer = arrow.ipc.new_file(self.path, raw.schema)
        self.writer.write_table(raw, max_chunksize=_SPILL_BATCH_ROWS)  # read back a small batch at a time

    def take(self, rows: np.ndarray) -> pd.DataFrame:
        """The raw values of these rows (row numbers of the read, ascending) as ``string`` columns."""
        self._wait()
        if self.writer is None:  # one batch: it is still here
            start, table = self.held
            picked = table.take(arrow.array(rows - start))
        else:
            if self.held is not None:
                self._write(self.held[1])
                self.held = None
            self.writer.close()
            self.writer = None
            pieces, first = [], 0
            # one record batch in memory at a time (a memory map would end up resident whole)
            with arrow.OSFile(self.path) as source:
                reader = arrow.ipc.open_file(source)
                for number in range(reader.num_record_batches):
                    batch = reader.get_batch(number)
                    local = rows[(rows >= first) & (rows < first + batch.num_rows)] - first
                    if len(local):
                        pieces.append(batch.take(arrow.array(local)))
                    first += batch.num_rows
            picked = arrow.Table.from_batches(pieces)
        return picked.to_pandas(types_mapper=lambda _: STRING).set_axis(pd.Index(rows))

    def close(self) -> None:
        self.held = None
        failing = sys.exc_info()[0] is not None  # closing because the read failed: keep that error
        try:
            self._wait()
        except Exception:
            if not failing:
                raise
        finally:
            if self.background is not None:
                self.background.shutdown(wait=True)
                self.background = None
            if self.writer is not None:
                self.writer.close()
                self.writer = None
            if self.path is not None:
                Path(self.path).unlink(missing_ok=True)
                self.path = None
