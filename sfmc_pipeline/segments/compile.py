"""The segment rule tree compiled to one relational plan (an Ibis expression) that any Ibis backend runs.

Each comparison is a filter (two-valued: a comparison on a null is false, so ``not`` of it is true, as in
the evaluator it replaced, kept as the tests' reference); ``has_related`` is a semi-join on the profile
key; ``latest_is_after`` a group-by and a join. Calendar-day windows are computed once, in Python, as UTC instants of local
midnights in the evaluation timezone, so date rules filter the raw timestamps; only ``latest_is_after``
needs a per-row calendar day, through the backend's own time-zone function (``LOCAL_TIME``).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo

import ibis
import ibis.expr.datatypes as idt
import ibis.expr.types as ir

from sfmc_pipeline.segments.columns import PROFILE_KEY, SEGMENT
from sfmc_pipeline.segments.rules import AllOf, AnyOf, Compare, HasRelated, Not, Rule

_UTC = dt.timezone.utc


@ibis.udf.scalar.builtin(name="timezone")
def _duckdb_local_time(zone: str, instant: idt.Timestamp(timezone="UTC")) -> idt.Timestamp():
    """DuckDB: the wall-clock time in ``zone`` of an instant."""


@ibis.udf.scalar.builtin(name="from_utc_timestamp")
def _spark_local_time(instant: idt.Timestamp(timezone="UTC"), zone: str) -> idt.Timestamp():
    """Spark: the wall-clock time in ``zone`` of an instant (the session runs in UTC)."""


@ibis.udf.scalar.builtin(name="convert_timezone")
def _snowflake_local_time(zone: str, instant: idt.Timestamp(timezone="UTC")) -> idt.Timestamp(timezone="UTC"):
    """Snowflake: the instant as a TIMESTAMP_TZ in ``zone`` (its date is the local day), whatever the
    session's TIMEZONE, for a TIMESTAMP_TZ or TIMESTAMP_LTZ column."""


# backend name -> the wall-clock time in a zone of a UTC instant column (the one dialect-specific piece)
LOCAL_TIME = {
    "duckdb": lambda instant, zone: _duckdb_local_time(zone, instant),
    "pyspark": lambda instant, zone: _spark_local_time(instant, zone),
    "snowflake": lambda instant, zone: _snowflake_local_time(zone, instant),
}


def local_midnight(day: dt.date, timezone: str) -> dt.datetime:
    """The UTC instant at which ``day`` begins in ``timezone`` (a skipped midnight: the first instant of the day)."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=ZoneInfo(timezone)).astimezone(_UTC)


class RuleCompiler:
    """Compile rules over ``profiles`` (and ``related`` tables joined on ``key``) as of ``as_of``."""

    def __init__(self, profiles: ir.Table, related: Mapping[str, ir.Table], *, key: str, as_of: dt.date,
                 timezone: str = "UTC", backend: str = "duckdb"):
        self.profiles = profiles
        self.related = dict(related)
        self.key = key
        self.as_of = as_of
        self.timezone = timezone
        self.backend = backend

    def members(self, segments: Iterable[tuple[str, Rule]]) -> ir.Table:
        """``profile_key, segment`` for every profile in every segment, in no particular order (sorting
        tens of millions of rows would cost more than the rules)."""
        parts = []
        for name, rule in segments:
            selected = self.profiles.filter(self.predicate(rule, self.profiles))
            parts.append(selected.select(
                **{PROFILE_KEY: selected[self.key].cast("string"), SEGMENT: ibis.literal(name, "string")}
            ))
        if not parts:
            return ibis.memtable({PROFILE_KEY: [], SEGMENT: []}, schema={PROFILE_KEY: "string", SEGMENT: "string"})
        return parts[0] if len(parts) == 1 else ibis.union(*parts, distinct=False)

    def predicate(self, rule: Rule, table: ir.Table, *, negated: bool = False) -> ir.BooleanValue:
        """A boolean over ``table``'s rows for a filter. Outside ``not`` a null acts as false in a filter,
        so only under ``not`` are comparisons made two-valued (keeping the others plain lets the engine
        push them into the scan)."""
        if isinstance(rule, AllOf):
            return ibis.and_(*(self.predicate(r, table, negated=negated) for r in rule.rules))
        if isinstance(rule, AnyOf):
            return ibis.or_(*(self.predicate(r, table, negated=negated) for r in rule.rules))
        if isinstance(rule, Not):
            return ~self.predicate(rule.rule, table, negated=True)
        if isinstance(rule, HasRelated):
            hit = self._has_related(rule, table)
        else:
            hit = self._compare(rule, table[rule.column])
        return hit.fill_null(False) if negated else hit

    # --- comparisons -----------------------------------------------------------------------------------

    def _compare(self, rule: Compare, column: ir.Column) -> ir.BooleanValue:
        op, value = rule.op, rule.value
        if op == "is_null":
            return column.isnull()
        if op == "not_null":
            return column.notnull()
        if column.type().is_timestamp():
            return self._compare_days(op, value, column)
        if op in ("in", "not_in"):
            values = [self._literal(v, column) for v in value]
            hit = column.isin(values)
            return hit if op == "in" else column.notnull() & ~hit
        literal = self._literal(value, column)
        return {
            "eq": lambda: column == literal, "ne": lambda: column != literal,
            "gt": lambda: column > literal, "gte": lambda: column >= literal,
            "lt": lambda: column < literal, "lte": lambda: column <= literal,
        }[op]()

    @staticmethod
    def _literal(value: Any, column: ir.Column) -> Any:
        if column.type().is_decimal() and not isinstance(value, bool):
            return ibis.literal(Decimal(str(value)))  # exact decimals: 15 -> Decimal("15")
        return value

    def _starts(self, day: dt.date) -> tuple[ir.Value, ir.Value]:
        """The UTC instants at which ``day`` and the day after begin in the evaluation timezone."""
        return (ibis.literal(local_midnight(day, self.timezone), "timestamp('UTC')"),
                ibis.literal(local_midnight(day + dt.timedelta(days=1), self.timezone), "timestamp('UTC')"))

    def _compare_days(self, op: str, value: Any, column: ir.Column) -> ir.BooleanValue:
        if op in ("within_last_days", "older_than_days"):
            start, _ = self._starts(self.as_of - dt.timedelta(days=int(value)))
            if op == "older_than_days":
                return column < start
            return (column >= start) & (column < self._starts(self.as_of)[1])
        days = [dt.date.fromisoformat(str(v)) for v in (value if isinstance(value, list) else [value])]
        if op in ("in", "not_in"):
            hit = ibis.or_(*(self._on_day(column, d) for d in days))
            return hit if op == "in" else column.notnull() & ~hit
        begin, end = self._starts(days[0])
        return {
            "eq": lambda: self._on_day(column, days[0]), "ne": lambda: ~self._on_day(column, days[0]),
            "gt": lambda: column >= end, "gte": lambda: column >= begin,
            "lt": lambda: column < begin, "lte": lambda: column < end,
        }[op]()

    def _on_day(self, column: ir.Column, day: dt.date) -> ir.BooleanValue:
        begin, end = self._starts(day)
        return (column >= begin) & (column < end)

    def local_day(self, instant: ir.Value) -> ir.Value:
        return LOCAL_TIME[self.backend](instant, self.timezone).date()

    # --- related datasets ------------------------------------------------------------------------------

    def _has_related(self, rule: HasRelated, table: ir.Table) -> ir.BooleanValue:
        related = self.related[rule.dataset]
        matching = related[self.key].notnull()
        if rule.where is not None:
            matching = matching & self.predicate(rule.where, related)
        rows = related.filter(matching)
        if rule.latest_is_after is None:
            return table[self.key].isin(rows[self.key])
        spec = rule.latest_is_after
        latest = (rows.filter(rows[spec.column].notnull())
                  .group_by(self.key).aggregate(_latest=rows[spec.column].max()))
        profiles = self.profiles.select(self.key, spec.profile_column)
        joined = latest.join(profiles, self.key)
        profile_day = joined[spec.profile_column]
        after = joined.filter(profile_day.isnull() | (self.local_day(profile_day) < self.local_day(joined["_latest"])))
        return table[self.key].isin(after[self.key])
