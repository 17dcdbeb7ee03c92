"""Masking of personal data in what Dagster shows: previews, sample payloads, failure tables, logs
and alerts. Datasets, the quarantine and the sync-errors dataset keep full values.

``mask_value``: an email keeps its first character and domain (``a***@example.com``), other text
its first character (``J***``). Which columns and fields are masked comes from ``lineage``
(``identifying_columns``, ``identifying_fields``); emails inside free text are masked anywhere
(``mask_emails_in_text``). ``governance > masking > show_personal_data: true`` shows everything.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import pandas as pd

from sfmc_pipeline.config.destinations import DestinationConfig
from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.governance.lineage import identifying_columns, identifying_fields

MASK = "***"
# An email address inside free text: no quotes in the local part, a dotted domain.
EMAIL_IN_TEXT = re.compile(r"(?<![\w.%+-])([\w.%+-]+)@([\w-]+(?:\.[\w-]+)+)")
_QUOTED = r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")"  # a Python str repr, as quarantine reasons quote values


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.api.types.is_scalar(value) and pd.isna(value))
    except (TypeError, ValueError):
        return False


def mask_value(value: Any) -> Any:
    """``alice@example.com`` -> ``a***@example.com``; other text -> its first character + ``***`` (an empty
    string stays empty); None / NaN stay as they are; anything else is masked as ``str(value)``."""
    if _missing(value):
        return value
    text = value if isinstance(value, str) else str(value)
    if not text:
        return text
    email = EMAIL_IN_TEXT.fullmatch(text)
    if email:
        return f"{text[0]}{MASK}@{email.group(2)}"
    return text[0] + MASK


def mask_emails_in_text(text: Any) -> Any:
    """Every email address inside ``text`` masked (``invalid email: b***@x.org``); non-text as it is."""
    if not isinstance(text, str) or "@" not in text:
        return text
    return EMAIL_IN_TEXT.sub(lambda m: f"{m.group(1)[0]}{MASK}@{m.group(2)}", text)


def _mask_quoted(quoted: str) -> str:
    try:
        value = ast.literal_eval(quoted)
    except (ValueError, SyntaxError):
        value = quoted[1:-1]
    return repr(mask_value(value))


@dataclass(frozen=True)
class Masker:
    """Masks the identifying values of a pipeline's datasets and destinations (``for_pipeline``); with
    ``show_full`` every method returns its input unchanged."""

    show_full: bool = False
    columns: Mapping[str, frozenset[str]] = field(default_factory=dict)  # dataset -> identifying columns
    fields: Mapping[str, frozenset[str]] = field(default_factory=dict)  # destination -> lower-cased fields
    identities: frozenset[str] = frozenset()  # destinations whose record id comes from an identifying column

    @classmethod
    def for_pipeline(cls, pipeline: PipelineConfig) -> Masker:
        columns = identifying_columns(pipeline)
        profile = columns.get(pipeline.profiles.dataset, frozenset())
        return cls(
            show_full=pipeline.governance.masking.show_personal_data,
            columns=columns,
            fields={dest.name: identifying_fields(pipeline, dest) for dest in pipeline.destinations},
            identities=frozenset(d.name for d in pipeline.destinations if d.identity_column in profile),
        )

    # ------------------------------------------------------------------ datasets

    def frame(self, df: pd.DataFrame, dataset: str) -> pd.DataFrame:
        """``df`` with the identifying columns of ``dataset`` masked (a copy; ``df`` itself as it is). Mask
        only the rows shown (``markdown_table(..., shown=...)``), not a whole dataset."""
        masked = [c for c in df.columns if c in self.columns.get(dataset, ())]
        if self.show_full or not masked:
            return df
        out = df.copy()
        for column in masked:
            out[column] = pd.Series([mask_value(v) for v in df[column].tolist()], index=df.index, dtype=object)
        return out

    def column_values(self, values: Iterable, dataset: str, column: str) -> list:
        """``values`` of ``dataset.column`` (e.g. a sample of profile keys), masked if the column identifies."""
        values = list(values)
        if self.show_full or column not in self.columns.get(dataset, ()):
            return values
        return [mask_value(v) for v in values]

    def reasons(self, text: Any, dataset: str) -> Any:
        """A quarantine reason (or several joined by ``; ``): the value it quotes for an identifying column
        (``Email: 'no-at-sign.example.com' is ...`` -> ``Email: 'n***' is ...``) and any email masked."""
        if self.show_full or not isinstance(text, str):
            return text
        for column in sorted(self.columns.get(dataset, ()), key=len, reverse=True):
            if column + ": " in text:
                pattern = re.compile(rf"(?<![\w.]){re.escape(column)}: {_QUOTED}(?= is )")
                text = pattern.sub(lambda m: f"{column}: {_mask_quoted(m.group(1))}", text)
        return mask_emails_in_text(text)

    def reason_frame(self, df: pd.DataFrame, dataset: str, column: str = "_reasons") -> pd.DataFrame:
        """``df`` with its reasons column masked (``reasons``)."""
        if self.show_full or column not in df.columns:
            return df
        return df.assign(**{column: [self.reasons(r, dataset) for r in df[column].tolist()]})

    # ------------------------------------------------------------------ destinations

    def _identifying(self, dest: DestinationConfig | str) -> frozenset[str]:
        return self.fields.get(dest if isinstance(dest, str) else dest.name, frozenset())

    def _record_id(self, dest: DestinationConfig | str, value: Any) -> Any:
        name = dest if isinstance(dest, str) else dest.name
        return mask_value(value) if name in self.identities else value

    def payload(self, record: Mapping[str, Any], dest: DestinationConfig | str) -> dict:
        """A record to send (``{"Id": ..., field: value}``) with the values of identifying fields masked
        (field names compared case-insensitively)."""
        if self.show_full:
            return dict(record)
        fields = self._identifying(dest)
        out = {}
        for name, value in record.items():
            if name.lower() in fields:
                out[name] = mask_value(value)
            elif name.lower() == "id":
                out[name] = self._record_id(dest, value)
            else:
                out[name] = value
        return out

    def payloads(self, records: Iterable[Mapping[str, Any]], dest: DestinationConfig | str) -> list[dict]:
        return [self.payload(r, dest) for r in records]

    def failures(self, rows: Iterable[Mapping[str, Any]], dest: DestinationConfig | str) -> list[dict]:
        """Sync error rows (``crm.sync_errors.ERROR_COLUMNS``) for display: the record id (when it comes from an
        identifying column), the values of identifying fields the message quotes, any email in the message
        and the identifying values of the payload masked."""
        rows = [dict(r) for r in rows]
        if self.show_full:
            return rows
        fields, name = self._identifying(dest), dest if isinstance(dest, str) else dest.name
        for row in rows:
            payload = _payload(row.get("payload"))
            values = {str(v) for k, v in payload.items() if k.lower() in fields and not _missing(v)}
            rid = row.get("record_id")
            if name in self.identities and not _missing(rid):
                values.add(str(rid))
                row["record_id"] = mask_value(rid)
            message = row.get("message")
            if isinstance(message, str):
                # longest first; a one-character value shows no more than its mask does
                for value in sorted((v for v in values if len(v) > 1), key=len, reverse=True):
                    for shown in (value, value[:252] + "...") if len(value) > 255 else (value,):
                        message = message.replace(shown, str(mask_value(value)))
                row["message"] = mask_emails_in_text(message)
            if payload and isinstance(row.get("payload"), str):
                row["payload"] = json.dumps(self.payload(payload, dest), sort_keys=True, default=str)
        return rows

    # ------------------------------------------------------------------ free text

    def text(self, text: Any) -> Any:
        """Free text (a log line, an error message) with every email in it masked."""
        return text if self.show_full else mask_emails_in_text(text)

    def log(self, log):
        """A logging callable (``context.log.warning``) that masks what it is given."""
        if self.show_full:
            return log
        return lambda message, *args, **kwargs: log(self.text(message), *args, **kwargs)


def _payload(raw: Any) -> dict:
    if isinstance(raw, Mapping):
        return dict(raw)
    if isinstance(raw, str) and raw:
        try:
            parsed = json.loads(raw)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}
