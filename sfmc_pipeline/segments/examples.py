"""Segment examples: small hand-written datasets with the memberships they must produce, so segment
rules can be tested like code (``sfmc-pipeline test-segments``).

An examples file (``segment_examples.yaml``; its header documents the format) gives each example an
``as_of``, a few rows per dataset as SFMC serves them, and the expected memberships. Examples run the
pipeline's own validation and segment engine. ``load_examples`` checks the file against the
pipeline config and raises ``ExamplesError`` listing every problem; ``run_example`` runs one.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.config.loader import (
    PipelineConfigError,
    control_characters,
    read_yaml,
)
from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.datasets.conversion import convert_frame
from sfmc_pipeline.datasets.validation import validate_extract
from sfmc_pipeline.segments.columns import PROFILE_KEY
from sfmc_pipeline.segments.engine import evaluate_frames
from sfmc_pipeline.segments.memberships import used_datasets

EXAMPLES_FILE = "segment_examples.yaml"
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TOP_KEYS = ("defaults", "examples")
_EXAMPLE_KEYS = ("name", "description", "as_of", "rows", "expect")
_EXPECT_KEYS = ("in", "not_in")


class ExamplesError(ValueError):
    """The examples file is missing, not YAML, or does not fit the pipeline config; ``problems`` lists
    each one with where it is and the fix."""

    def __init__(self, source: str, problems: Sequence[str]):
        self.source = source
        self.problems = list(problems)
        super().__init__(f"Invalid segment examples file {source}:\n" + "\n".join(f"  - {p}" for p in self.problems))


@dataclass(frozen=True)
class Expectation:
    profile: str  # the key as written in the file
    key: str  # the key as the profile dataset holds it (e.g. the 18-character form of a Salesforce Id)
    in_segments: tuple[str, ...]
    not_in: tuple[str, ...]


@dataclass(frozen=True)
class SegmentExample:
    name: str
    as_of: dt.date
    rows: Mapping[str, tuple[Mapping[str, str], ...]]  # dataset -> rows (configured column names, SFMC strings)
    expectations: tuple[Expectation, ...]
    description: str = ""


@dataclass(frozen=True)
class ExampleOutcome:
    example: SegmentExample
    quarantined: tuple[str, ...]  # rows that would be quarantined, with the reasons
    mismatches: tuple[str, ...]  # "profile K: segment expected in, actual out"

    @property
    def passed(self) -> bool:
        return not self.quarantined and not self.mismatches

    def line(self) -> str:
        if self.passed:
            return f"PASS {self.example.name}"
        return f"FAIL {self.example.name}: " + "; ".join([*self.quarantined, *self.mismatches])


def default_examples_path(config_path: str | Path) -> Path:
    """``segment_examples.yaml`` in the folder of the pipeline config."""
    return Path(config_path).parent / EXAMPLES_FILE


def load_examples(path: str | Path, pipeline: PipelineConfig) -> list[SegmentExample]:
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ExamplesError(source, [
            f"no such file; write one (the header comment of {EXAMPLES_FILE}, shipped next to pipeline.yaml, "
            "documents the format) or pass --examples PATH"
        ])
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise ExamplesError(source, [f"not UTF-8 text (byte 0x{byte:02x}); save it as UTF-8"]) from None
    except OSError as exc:
        raise ExamplesError(source, [f"cannot be read ({exc.strerror or exc}); make it readable"]) from None
    control = control_characters(text)
    if control:
        raise ExamplesError(source, [f"{source} {problem}: a control character YAML does not allow; delete it"
                                     for problem in control])
    try:
        raw = read_yaml(text, source=source)  # duplicate keys are errors; dates stay text
    except PipelineConfigError as exc:
        text = str(exc)
        if text.startswith("Invalid pipeline config"):  # keys set twice, one listed per line
            problems = [line.strip().removeprefix("- ").removeprefix(source).strip() for line in text.splitlines()[1:]]
        else:  # not YAML: the parser's message, on one line
            problems = [" ".join(text.replace(f"{source} is ", "", 1).split())]
        raise ExamplesError(source, problems) from None
    return parse_examples(raw, pipeline, source=source)


def parse_examples(raw: Any, pipeline: PipelineConfig, *, source: str = "<examples>") -> list[SegmentExample]:
    return _Parser(pipeline).parse(raw, source)


class _Parser:
    def __init__(self, pipeline: PipelineConfig):
        self.pipeline = pipeline
        self.datasets = {ext.asset: ext for ext in pipeline.data_extensions}
        self.segments = [s.name for s in pipeline.segments]
        self.profile = pipeline.extension(pipeline.profiles.dataset)
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def parse(self, raw: Any, source: str) -> list[SegmentExample]:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("examples"), list) or not raw["examples"]:
            raise ExamplesError(source, [
                "expected a mapping with a non-empty list 'examples' at the top level (and optionally 'defaults')"
            ])
        for key in raw:
            if key not in _TOP_KEYS:
                self.problem(str(key), f"unknown top-level key; use {', '.join(_TOP_KEYS)}")
        defaults = self._defaults(raw.get("defaults"))
        examples, seen = [], set()
        for i, item in enumerate(raw["examples"]):
            name = item.get("name") if isinstance(item, Mapping) else None
            where = f"examples[{i}]" + (f" ({name})" if isinstance(name, str) and name else "")
            example = self._example(item, where, defaults)
            if example is None:
                continue
            if example.name in seen:
                self.problem(f"{where} > name", f"{example.name!r} is used by another example; names must be unique")
            seen.add(example.name)
            examples.append(example)
        if self.problems:
            raise ExamplesError(source, self.problems)
        return examples

    def _defaults(self, raw: Any) -> dict[str, dict[str, str]]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            self.problem("defaults", "expected a mapping of dataset -> column values, e.g. {contacts: {LastName: X}}")
            return {}
        out = {}
        for dataset, row in raw.items():
            ext = self._dataset(str(dataset), f"defaults > {dataset}")
            if ext is not None:
                parsed = self._row(row, ext, f"defaults > {dataset}")
                if parsed is not None:
                    out[ext.asset] = parsed
        return out

    def _dataset(self, name: str, where: str) -> DataExtensionConfig | None:
        if name not in self.datasets:
            self.problem(where, f"unknown dataset {name!r}{did_you_mean(name, self.datasets)}; use one of "
                         f"{', '.join(self.datasets)} (the assets in the pipeline config)")
            return None
        return self.datasets[name]

    def _row(self, raw: Any, ext: DataExtensionConfig, where: str) -> dict[str, str] | None:
        if not isinstance(raw, Mapping):
            self.problem(where, f"expected a row: a mapping of column -> value, e.g. {{{ext.columns[0].name}: ...}}")
            return None
        by_lower = {c.name.lower(): c.name for c in ext.columns}
        row: dict[str, str] = {}  # with a problem, what could be read (the file is rejected anyway)
        for column, value in raw.items():
            name = by_lower.get(str(column).lower())
            if name is None:
                self.problem(f"{where} > {column}", f"{ext.asset!r} has no column {column!r}"
                             f"{did_you_mean(str(column), by_lower.values())} (columns: "
                             f"{', '.join(c.name for c in ext.columns)}); fix the name or remove it")
            elif name in row:
                self.problem(f"{where} > {column}", f"column {name!r} is given twice (names are case-insensitive)")
            else:
                try:
                    row[name] = sfmc_text(value)
                except ValueError as exc:
                    self.problem(f"{where} > {column}", str(exc))
        return row

    def _example(self, raw: Any, where: str, defaults: Mapping[str, Mapping[str, str]]) -> SegmentExample | None:
        if not isinstance(raw, Mapping):
            self.problem(where, f"expected a mapping with {', '.join(_EXAMPLE_KEYS)}")
            return None
        before = len(self.problems)
        for key in raw:
            if key not in _EXAMPLE_KEYS:
                self.problem(f"{where} > {key}", f"unknown key; use {', '.join(_EXAMPLE_KEYS)}")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            self.problem(f"{where} > name", "required: a name for the example, e.g. inactive_customer_boundary")
        description = raw.get("description") or ""
        as_of = self._as_of(raw.get("as_of"), f"{where} > as_of")
        rows = self._rows(raw.get("rows"), f"{where} > rows", defaults)
        expectations = self._expect(raw.get("expect"), f"{where} > expect", rows)
        if len(self.problems) > before or as_of is None or rows is None or expectations is None:
            return None
        return SegmentExample(name=name.strip(), as_of=as_of, rows=rows, expectations=expectations,
                              description=str(description))

    def _as_of(self, value: Any, where: str) -> dt.date | None:
        fix = "use YYYY-MM-DD, e.g. as_of: 2026-11-20"
        if value is None:
            self.problem(where, f"required: the evaluation date; {fix}")
            return None
        text = value.strip() if isinstance(value, str) else ""
        try:
            if not _ISO_DATE.match(text):
                raise ValueError
            return dt.date.fromisoformat(text)
        except ValueError:
            self.problem(where, f"{value!r} is not a date; {fix}")
            return None

    def _rows(self, raw: Any, where: str, defaults) -> dict[str, tuple[dict[str, str], ...]] | None:
        profile = self.profile.asset
        if not isinstance(raw, Mapping):
            self.problem(where, f"required: a mapping of dataset -> list of rows, with at least one {profile!r} row")
            return None
        out: dict[str, tuple[dict[str, str], ...]] = {}
        for dataset, rows in raw.items():
            ext = self._dataset(str(dataset), f"{where} > {dataset}")
            if ext is None:
                continue
            if not isinstance(rows, list):
                self.problem(f"{where} > {dataset}", "expected a list of rows (- {column: value, ...})")
                continue
            parsed = [self._row(row, ext, f"{where} > {dataset}[{j}]") for j, row in enumerate(rows)]
            out[ext.asset] = tuple({**defaults.get(ext.asset, {}), **row} for row in parsed if row is not None)
        if not isinstance(raw.get(profile), list) or not raw[profile]:
            self.problem(where, f"needs at least one row of the profile dataset {profile!r}")
        return out

    def _expect(self, raw: Any, where: str, rows) -> tuple[Expectation, ...] | None:
        if not isinstance(raw, Mapping) or not raw:
            self.problem(where, "required: profile key -> [segments it is in], or {in: [...], not_in: [...]}")
            return None
        key_column = self.pipeline.profile_key
        written = [row.get(key_column) for row in (rows or {}).get(self.profile.asset, ())]
        known = {k for k in typed_keys(written, self.profile, key_column) if k is not None}
        out = []
        for profile, spec in raw.items():
            here = f"{where} > {profile}"
            try:
                text = sfmc_text(profile)
            except ValueError as exc:
                self.problem(here, str(exc))
                continue
            in_segments, not_in = self._segments(spec, here)
            if in_segments is None:
                continue
            if not in_segments and not not_in:
                self.problem(here, "names no segment; list the segments it is in, and/or not_in")
            both = sorted(set(in_segments) & set(not_in))
            if both:
                self.problem(here, f"{', '.join(both)} is both in 'in' and 'not_in'; keep it in one")
            (key,) = typed_keys([text], self.profile, key_column)
            if rows is not None and key not in known:
                self.problem(here, f"no {self.profile.asset!r} row of this example has {key_column} {text!r}; add the "
                             "profile's row or fix the key")
            out.append(Expectation(profile=text, key=key or text, in_segments=in_segments, not_in=not_in))
        return tuple(out)

    def _segments(self, spec: Any, where: str) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
        if isinstance(spec, list):
            spec = {"in": spec}
        if not isinstance(spec, Mapping):
            self.problem(where, "expected a list of segments ([a, b]) or {in: [...], not_in: [...]}")
            return None, ()
        unknown = [k for k in spec if k not in _EXPECT_KEYS]
        if unknown:
            self.problem(where, f"unknown key(s) {', '.join(map(str, unknown))}; use in, not_in")
            return None, ()
        lists = []
        for key in _EXPECT_KEYS:
            names = spec.get(key) or []
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                self.problem(f"{where} > {key}", "expected a list of segment names, e.g. [new_customer]")
                return None, ()
            for name in names:
                if name not in self.segments:
                    self.problem(f"{where} > {key}", f"unknown segment {name!r}{did_you_mean(name, self.segments)}; "
                                 f"defined segments: {', '.join(self.segments)}")
            lists.append(tuple(names))
        return lists[0], lists[1]


def did_you_mean(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def sfmc_text(value: Any) -> str:
    """A YAML scalar as the string SFMC would serve: ``""`` for null, ``True``/``False``, plain numbers."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a value SFMC can serve; write a number or leave it empty")
        return format(Decimal(repr(value)), "f")
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    raise ValueError(f"expected a single value (text, number, true/false or empty), got {value!r}")


def typed_keys(values: Sequence[str | None], profile: DataExtensionConfig, key: str) -> list[str | None]:
    """Profile keys as the dataset holds them (converted like the key column, e.g. a 15-character Id gets
    its suffix); None where a value does not convert."""
    key_only = profile.model_copy(update={"columns": [profile.column(key)]})
    raw = pd.DataFrame({key: pd.Series(["" if v is None else v for v in values], dtype="string")})
    converted = convert_frame(raw, key_only).frame[key]
    return [None if pd.isna(v) else str(v) for v in converted]


def run_example(example: SegmentExample, pipeline: PipelineConfig) -> ExampleOutcome:
    """Convert and validate the example's rows, evaluate every segment as of ``example.as_of`` and compare
    with the expectations."""
    profile = pipeline.profiles.dataset
    key = pipeline.profile_key
    used = used_datasets(pipeline)
    valid: dict[str, pd.DataFrame] = {}
    quarantined: list[str] = []
    held: set[str] = set()
    for asset in dict.fromkeys([profile, *used, *example.rows]):
        ext = pipeline.extension(asset)
        rows = example.rows.get(asset, ())
        names = [c.name for c in ext.columns]
        raw = pd.DataFrame([{name: row.get(name, "") for name in names} for row in rows], columns=names,
                           dtype="string")
        if not rows:  # nothing to validate: the typed, empty dataset
            valid[asset] = convert_frame(raw, ext).frame
            continue
        result = validate_extract(raw, ext)
        valid[asset] = result.valid
        for row in result.quarantine.to_dict("records"):
            number, reasons = int(row["_row_number"]), row["_reasons"]
            label = f"{asset} row {number}"
            if key in names:
                label += f" ({key} {raw.at[number - 1, key]!r})"
                if asset == profile:
                    held.update(k for k in typed_keys([raw.at[number - 1, key]], ext, key) if k is not None)
            quarantined.append(f"{label} would be quarantined: {reasons}")
    members = evaluate_frames(valid[profile], {name: valid[name] for name in used},
                              ((s.name, s.rule) for s in pipeline.segments), key=key, as_of=example.as_of,
                              timezone=pipeline.evaluation.timezone)
    actual: dict[str, set[str]] = {}
    for profile_key, segment in zip(members[PROFILE_KEY], members["segment"]):
        actual.setdefault(str(profile_key), set()).add(str(segment))
    mismatches = []
    for expectation in example.expectations:
        if expectation.key in held:
            continue  # its row is quarantined: reported above
        now = actual.get(expectation.key, set())
        for segment in expectation.in_segments:
            if segment not in now:
                mismatches.append(f"profile {expectation.profile}: {segment} expected in, actual out")
        for segment in expectation.not_in:
            if segment in now:
                mismatches.append(f"profile {expectation.profile}: {segment} expected out, actual in")
    return ExampleOutcome(example=example, quarantined=tuple(quarantined), mismatches=tuple(mismatches))


def coverage(examples: Sequence[SegmentExample], pipeline: PipelineConfig) -> dict[str, tuple[bool, bool]]:
    """Segment -> (an example expects a profile in it, an example expects a profile out of it)."""
    cover = {s.name: [False, False] for s in pipeline.segments}
    for example in examples:
        for expectation in example.expectations:
            for segment in expectation.in_segments:
                cover[segment][0] = True
            for segment in expectation.not_in:
                cover[segment][1] = True
    return {name: (has_in, has_out) for name, (has_in, has_out) in cover.items()}
