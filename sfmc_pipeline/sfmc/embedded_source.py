"""The embedded default: Data Extension extracts as CSV files, shipped in ``data/sample`` or the user's.

Files are named ``<external key>.csv`` as an SFMC Data Extract writes them (a header row, every value
a string) and are typed and validated exactly as API rows. A file that cannot be read as such fails
with ``ExtractError`` naming the file, the line and the fix (missing in a folder a setting chose:
``ConfigurationError`` naming the setting). A windowed read (``since``) keeps the rows SFMC would,
compared in SFMC system time; an empty or non-date value is outside every window, as in SFMC.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.datasets.date_conversion import sfmc_system_times
from sfmc_pipeline.datasets.incremental import raw_cursor, to_system_time
from sfmc_pipeline.datasets.recount import count_times
from sfmc_pipeline.errors import ConfigurationError
from sfmc_pipeline.sfmc.source import (
    ExtractError,
    PageStream,
    RawExtract,
    SourceProbe,
    align_columns,
)


class EmbeddedSampleSource:
    mode = "embedded"

    def __init__(self, sample_dir: str | Path, page_size: int = 2500, *, setting: str | None = None):
        """``setting``: the environment variable that chose ``sample_dir`` (a user's extract folder), named
        when a configured extension has no file there."""
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size}")
        self.sample_dir = Path(sample_dir)
        self.page_size = page_size
        self.setting = setting

    def _label(self, extension: DataExtensionConfig) -> str:
        return f"{'extract folder' if self.setting else 'embedded sample'} {self._path(extension)}"

    def anchor_date(self) -> dt.date | None:
        """The date the sample's relative dates were generated from (``sample.json``), if known."""
        manifest = self.sample_dir / "sample.json"
        if not manifest.is_file():
            return None
        return dt.date.fromisoformat(json.loads(manifest.read_text(encoding="utf-8"))["anchor_date"])

    def read(self, extension: DataExtensionConfig, since: dt.datetime | None = None) -> RawExtract:
        frame, unmapped, missing = align_columns(self._read_csv(extension), extension)
        if since is not None:  # compared as SFMC compares it: in system time, any date it can store
            start = np.datetime64(to_system_time(since).replace(tzinfo=None), "us")
            frame = frame[sfmc_system_times(frame[extension.incremental_column]) >= start].reset_index(drop=True)
        return RawExtract(frame=frame, source=self._label(extension), unmapped_columns=unmapped,
                          missing_columns=missing)

    def read_pages(self, extension: DataExtensionConfig, since: dt.datetime | None = None) -> PageStream:
        """The rows of ``read`` as pages of ``page_size`` rows, in file order (see ``PageStream``)."""
        stream = PageStream(extension, source=self._label(extension))

        def frames(pages: PageStream) -> Iterator[pd.DataFrame]:
            extract = self.read(extension, since)
            frame = extract.frame
            pages.expected_rows = len(frame)
            pages.set_columns(extract.unmapped_columns, extract.missing_columns)
            for start in range(0, len(frame), self.page_size):
                pages.pages_ahead_peak = max(pages.pages_ahead_peak, 1)
                yield frame.iloc[start:start + self.page_size]

        return stream.attach(frames)

    def probe(self, extension: DataExtensionConfig, *, newest: bool = True, ranges: Sequence = ()) -> SourceProbe:
        """Rows of the sample file, its header's fields (when it has a row, as the REST probe tells
        them), with ``newest`` and an incremental column, that column's newest value (compared
        as dates, returned as written in the file), and with ``ranges`` the rows in each (as SFMC
        counts them: system time, any date it can store)."""
        raw = self._read_csv(extension)
        frame = align_columns(raw, extension)[0]
        value = None
        if newest and extension.incremental_column and len(frame):
            cursor = raw_cursor(frame, extension)
            if cursor.notna().any():
                value = frame.at[cursor.idxmax(), extension.incremental_column]
        range_rows = count_times(sfmc_system_times(frame[extension.incremental_column]), list(ranges)) if ranges else ()
        return SourceProbe(rows=len(frame), newest=value, served=tuple(raw.columns) if len(raw) else None,
                           range_rows=range_rows)


    def _path(self, extension: DataExtensionConfig) -> Path:
        return self.sample_dir / f"{extension.key}.csv"

    def _read_csv(self, extension: DataExtensionConfig) -> pd.DataFrame:
        path = self._path(extension)
        if self.setting is not None and not path.is_file():
            raise ConfigurationError(
                f"{self.setting} names {self.sample_dir}, which has no extract of the Data Extension "
                f"{extension.key!r}: expected {path.name} there. Put its extract there as {path.name} (a header row "
                "of its fields, then one line per row), or remove the extension from the pipeline config, or unset "
                f"{self.setting} to read the shipped sample data."
            )
        return _read_csv(path, extension.key)


_REGENERATE = "regenerate the sample data with `python scripts/generate_sample_data.py`"
_TOO_MANY_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def _read_text(path: Path, key: str) -> str:
    """The file's text, decoded as UTF-8 (a byte-order mark is allowed)."""
    if not path.is_file():
        raise ExtractError(
            f"No sample extract for Data Extension {key!r}: expected {path}. Run `python "
            "scripts/generate_sample_data.py`, or set the SFMC_* credentials to read from your SFMC tenant."
        )
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ExtractError(
            f"Sample extract {path} is not UTF-8: line {line} has the byte 0x{data[exc.start]:02x}. "
            f"Save it as UTF-8, or {_REGENERATE}."
        ) from None


def _read_csv(path: Path, key: str) -> pd.DataFrame:
    """Every value as a string (``""`` for empty), columns as in the header row."""
    text = _read_text(path, key)
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise ExtractError(
            f"Sample extract {path} is empty, but an extract has at least a header row. "
            f"Restore the file, or {_REGENERATE}."
        ) from None
    except pd.errors.ParserError as exc:
        raise ExtractError(_parse_problem(path, exc)) from None


def _parse_problem(path: Path, exc: pd.errors.ParserError) -> str:
    found = _TOO_MANY_FIELDS.search(str(exc))
    if found:
        expected, line, saw = found.groups()
        what = f"line {line} has {saw} fields but the header row has {expected}"
        hint = "quote values that contain a comma"
    else:
        what = f"it is not valid CSV ({str(exc).split('C error: ')[-1].strip()})"
        hint = "check its quoting"
    return f"Sample extract {path} cannot be read: {what}. Fix the file ({hint}), or {_REGENERATE}."
