"""The segment rule language: a small, safe, declarative tree (no Python or SQL strings).

A rule is a comparison ``{column, op, value}`` (``eq`` ... ``in``, ``is_null``, ``within_last_days``,
``older_than_days``), ``{all: [...]}``, ``{any: [...]}``, ``{not: rule}``, or
``{has_related: {dataset, where, latest_is_after}}`` (at least one related row, joined on the
profile key). ``parse_rule`` checks the shape; ``check_rule`` checks columns, operators and values
against the dataset schemas. Both raise ``RuleError`` with the path inside the rule and the fix.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Union

from sfmc_pipeline.config.data_extensions import (
    ColumnConfig,
    DataExtensionConfig,
    SfmcType,
)

VALUE_OPS = ("eq", "ne", "gt", "gte", "lt", "lte")
ORDER_OPS = ("gt", "gte", "lt", "lte")
NULL_OPS = ("is_null", "not_null")
LIST_OPS = ("in", "not_in")
DAY_OPS = ("within_last_days", "older_than_days")
ALL_OPS = VALUE_OPS + NULL_OPS + LIST_OPS + DAY_OPS


class RuleError(ValueError):
    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True)
class Compare:
    column: str
    op: str
    value: Any = None


@dataclass(frozen=True)
class AllOf:
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class AnyOf:
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Not:
    rule: Rule


@dataclass(frozen=True)
class LatestIsAfter:
    """The latest matching related date falls on a later calendar day than the profile's date (a null
    profile date counts as earlier; matching related rows with a null date are ignored for it)."""

    column: str  # date column of the related dataset
    profile_column: str  # date column of the profile dataset


@dataclass(frozen=True)
class HasRelated:
    dataset: str
    where: Rule | None = None
    latest_is_after: LatestIsAfter | None = None


Rule = Union[Compare, AllOf, AnyOf, Not, HasRelated]

_SHAPES = (
    "{column, op, value}, {all: [...]}, {any: [...]}, {not: rule} or "
    "{has_related: {dataset, where, latest_is_after}}"
)


def parse_rule(raw: Any, path: str = "rule", *, allow_related: bool = True) -> Rule:
    if not isinstance(raw, Mapping):
        raise RuleError(path, f"expected a mapping, one of {_SHAPES}; got {raw!r}")
    keys = set(raw)
    if keys & {"all", "any", "not", "has_related"}:
        if len(keys) != 1:
            raise RuleError(path, f"'{sorted(keys & {'all', 'any', 'not', 'has_related'})[0]}' must be the only key, found {sorted(keys)}")
        (key,) = keys
        if key in ("all", "any"):
            items = raw[key]
            if not isinstance(items, list) or not items:
                raise RuleError(f"{path} > {key}", "expected a non-empty list of rules")
            rules = tuple(
                parse_rule(item, f"{path} > {key}[{i}]", allow_related=allow_related) for i, item in enumerate(items)
            )
            return AllOf(rules) if key == "all" else AnyOf(rules)
        if key == "not":
            return Not(parse_rule(raw["not"], f"{path} > not", allow_related=allow_related))
        if not allow_related:
            raise RuleError(f"{path} > has_related", "has_related cannot be nested inside another has_related")
        return _parse_related(raw["has_related"], f"{path} > has_related")
    if "column" not in keys or "op" not in keys:
        raise RuleError(path, f"unknown rule shape with keys {sorted(keys)}; expected {_SHAPES}")
    extra = keys - {"column", "op", "value"}
    if extra:
        raise RuleError(path, f"unknown key(s) {sorted(extra)} in a comparison; use column, op, value")
    op = raw["op"]
    if op not in ALL_OPS:
        raise RuleError(f"{path} > op", f"unknown operator {op!r}; use one of {', '.join(ALL_OPS)}")
    if op in NULL_OPS:
        if "value" in keys:
            raise RuleError(path, f"'{op}' takes no value; remove 'value'")
    elif "value" not in keys:
        raise RuleError(path, f"'{op}' needs a 'value'")
    return Compare(column=str(raw["column"]), op=op, value=raw.get("value"))


def _parse_related(raw: Any, path: str) -> HasRelated:
    if not isinstance(raw, Mapping) or "dataset" not in raw:
        raise RuleError(path, "expected {dataset: <asset name>, where: <rule>, latest_is_after: {...}}")
    extra = set(raw) - {"dataset", "where", "latest_is_after"}
    if extra:
        raise RuleError(path, f"unknown key(s) {sorted(extra)}; use dataset, where, latest_is_after")
    where = parse_rule(raw["where"], f"{path} > where", allow_related=False) if raw.get("where") is not None else None
    latest = None
    if raw.get("latest_is_after") is not None:
        spec = raw["latest_is_after"]
        if not isinstance(spec, Mapping) or set(spec) != {"column", "profile_column"}:
            raise RuleError(f"{path} > latest_is_after", "expected {column: <related date column>, profile_column: <profile date column>}")
        latest = LatestIsAfter(column=str(spec["column"]), profile_column=str(spec["profile_column"]))
    return HasRelated(dataset=str(raw["dataset"]), where=where, latest_is_after=latest)


def datasets_read(rules: Iterable[Rule]) -> list[str]:
    """Asset names of the related datasets any of ``rules`` reads, sorted."""
    return sorted(set().union(*(related_datasets(rule) for rule in rules)))


def related_datasets(rule: Rule) -> set[str]:
    """Asset names of the datasets a rule reads through ``has_related``."""
    if isinstance(rule, (AllOf, AnyOf)):
        return set().union(*(related_datasets(r) for r in rule.rules))
    if isinstance(rule, Not):
        return related_datasets(rule.rule)
    if isinstance(rule, HasRelated):
        return {rule.dataset}
    return set()


def columns_read(rule: Rule, profile: str) -> set[tuple[str, str]]:
    """``(dataset, column)`` of every column whose values decide the rule: the profile dataset's
    compared columns, and through ``has_related`` the related dataset's ``where`` and
    ``latest_is_after`` columns plus the profile's ``profile_column``. The join key only matches rows
    to profiles; it is not read for its value."""
    if isinstance(rule, (AllOf, AnyOf)):
        return set().union(*(columns_read(r, profile) for r in rule.rules))
    if isinstance(rule, Not):
        return columns_read(rule.rule, profile)
    if isinstance(rule, HasRelated):
        read = columns_read(rule.where, rule.dataset) if rule.where is not None else set()
        if rule.latest_is_after is not None:
            read |= {(rule.dataset, rule.latest_is_after.column), (profile, rule.latest_is_after.profile_column)}
        return read
    return {(profile, rule.column)}


def check_rule(
    rule: Rule,
    profile: DataExtensionConfig,
    datasets: Mapping[str, DataExtensionConfig],
    join_key: str,
    path: str = "rule",
    scope: DataExtensionConfig | None = None,
) -> None:
    """Check columns, operators and values against the schemas (``scope`` = dataset in use)."""
    scope = scope or profile
    if isinstance(rule, (AllOf, AnyOf)):
        key = "all" if isinstance(rule, AllOf) else "any"
        for i, sub in enumerate(rule.rules):
            check_rule(sub, profile, datasets, join_key, f"{path} > {key}[{i}]", scope)
    elif isinstance(rule, Not):
        check_rule(rule.rule, profile, datasets, join_key, f"{path} > not", scope)
    elif isinstance(rule, HasRelated):
        rpath = f"{path} > has_related"
        related = datasets.get(rule.dataset)
        if related is None:
            raise RuleError(f"{rpath} > dataset", f"unknown dataset {rule.dataset!r}; use one of {', '.join(datasets)}")
        if related.asset == profile.asset:
            raise RuleError(f"{rpath} > dataset", "has_related needs another dataset than the profiles")
        if join_key not in {c.name for c in related.columns}:
            raise RuleError(f"{rpath} > dataset", f"dataset {related.asset!r} has no join column {join_key!r}")
        if rule.where is not None:
            check_rule(rule.where, profile, datasets, join_key, f"{rpath} > where", related)
        if rule.latest_is_after is not None:
            lpath = f"{rpath} > latest_is_after"
            _date_column(related, rule.latest_is_after.column, f"{lpath} > column")
            _date_column(profile, rule.latest_is_after.profile_column, f"{lpath} > profile_column")
    else:
        _check_compare(rule, scope, path)


def _column(dataset: DataExtensionConfig, name: str, path: str) -> ColumnConfig:
    for col in dataset.columns:
        if col.name == name:
            return col
    names = ", ".join(c.name for c in dataset.columns)
    raise RuleError(path, f"dataset {dataset.asset!r} has no column {name!r} (columns: {names})")


def _date_column(dataset: DataExtensionConfig, name: str, path: str) -> None:
    if _column(dataset, name, path).type is not SfmcType.DATE:
        raise RuleError(path, f"{name!r} in {dataset.asset!r} is not a Date column")


def _check_compare(rule: Compare, dataset: DataExtensionConfig, path: str) -> None:
    col = _column(dataset, rule.column, f"{path} > column")
    t, op, value = col.type, rule.op, rule.value
    where = f"{path} > value"
    if op in NULL_OPS:
        return
    if op in DAY_OPS:
        if t is not SfmcType.DATE:
            raise RuleError(f"{path} > op", f"'{op}' applies to Date columns; {col.name!r} is {t.value}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RuleError(where, f"'{op}' needs a whole number of days >= 0, got {value!r}")
        return
    if op in ORDER_OPS and not (t.is_numeric or t is SfmcType.DATE):
        raise RuleError(f"{path} > op", f"'{op}' compares numbers or dates; {col.name!r} is {t.value} (use eq, ne or in)")
    values = value if op in LIST_OPS else [value]
    if op in LIST_OPS and (not isinstance(value, list) or not value):
        raise RuleError(where, f"'{op}' needs a non-empty list, e.g. [a, b]")
    for v in values:
        _check_value(col, v, where)


def _check_value(col: ColumnConfig, value: Any, path: str) -> None:
    t = col.type
    if t.is_text:
        if not isinstance(value, str):
            raise RuleError(path, f"{col.name!r} is {t.value}: compare with text, got {value!r} (quote it)")
        if col.allowed_values is not None and value not in col.allowed_values:
            raise RuleError(path, f"{value!r} can never match: {col.name!r} only holds {', '.join(col.allowed_values)}")
    elif t.is_numeric:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RuleError(path, f"{col.name!r} is {t.value}: compare with a number, got {value!r}")
    elif t is SfmcType.BOOLEAN:
        if not isinstance(value, bool):
            raise RuleError(path, f"{col.name!r} is Boolean: compare with true or false, got {value!r}")
    elif t is SfmcType.DATE:
        if isinstance(value, dt.date):
            return
        try:
            dt.date.fromisoformat(str(value))
        except ValueError:
            raise RuleError(path, f"{col.name!r} is Date: compare with a YYYY-MM-DD date, got {value!r}") from None
