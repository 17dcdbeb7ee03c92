"""The status field format, in one place: ``segment:status`` entries sorted by segment name and
joined with ``;``, e.g. ``new_customer:realized;offer_clickers:existing``."""

from __future__ import annotations

import pandas as pd

IN_SEGMENT = ("realized", "existing")
EXITED = "exited"


def format_entries(entries: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """One value per ``by`` group from rows with ``segment`` and ``status`` columns."""
    if entries.empty:
        return pd.DataFrame(columns=[*by, "value"])
    ordered = entries.assign(entry=entries["segment"] + ":" + entries["status"]).sort_values([*by, "segment"])
    return ordered.groupby(by, sort=True)["entry"].agg(";".join).rename("value").reset_index()


def parse_entries(values: pd.Series) -> pd.DataFrame:
    """``index_of_value, segment, status`` for every entry of every non-empty value in ``values``
    (the index says which value an entry came from)."""
    text = values.dropna().astype(str)
    text = text[text != ""]
    entries = text.str.split(";").explode()
    parts = entries.str.split(":", n=1, expand=True).reindex(columns=[0, 1])
    return pd.DataFrame({"segment": parts[0], "status": parts[1]}, index=entries.index).astype(object)
