"""Contract: SFMC's string values become correctly typed columns (strings, nullable integers,
decimals, UTC timestamps, booleans); SFMC dates are US Central Standard Time (UTC-6, no DST);
a value that does not parse is reported with the row and the reason, never silently nulled."""

from decimal import Decimal

import pandas as pd
import pytest

from sfmc_pipeline.config.models import DataExtensionConfig
from sfmc_pipeline.datasets.conversion import convert_frame


def _extension(*columns: dict) -> DataExtensionConfig:
    return DataExtensionConfig(key="T", asset="t", columns=list(columns))


def _convert(column: dict, values: list[str]):
    ext = _extension({"name": "V", "nullable": True, **column})
    return convert_frame(pd.DataFrame({"V": values}, dtype="string"), ext)


@pytest.mark.parametrize(
    "column, raw, expected, dtype",
    [
        # text keeps its value, empty string is null, surrounding spaces are stripped
        ({"type": "Text"}, ["abc", "", "  x  "], ["abc", None, "x"], "string"),
        ({"type": "EmailAddress"}, ["a@b.co"], ["a@b.co"], "string"),
        ({"type": "Phone"}, ["5515996919166"], ["5515996919166"], "string"),
        ({"type": "Locale"}, ["en-US"], ["en-US"], "string"),
        # whole numbers, including SFMC's "12.0" rendering
        ({"type": "Number"}, ["1", "-3", "", "12.0"], [1, -3, None, 12], "Int64"),
        # booleans as SFMC writes them, with the observed leading space
        ({"type": "Boolean"}, ["True", "False", " True", "", "1", "0"], [True, False, True, None, True, False], "boolean"),
    ],
)
def test_values_convert_to_typed_columns(column, raw, expected, dtype):
    result = _convert(column, raw)
    assert result.issues.empty
    series = result.frame["V"]
    assert str(series.dtype) == dtype
    assert [None if pd.isna(v) else v for v in series.tolist()] == expected


def test_decimal_keeps_exact_value_and_scale():
    result = _convert({"type": "Decimal", "precision": 18, "scale": 2}, ["1234.5", "0.10", "", "12.500", "-3"])
    assert result.issues.empty
    assert str(result.frame["V"].dtype) == "decimal128(18, 2)[pyarrow]"
    assert result.frame["V"].tolist()[:2] == [Decimal("1234.50"), Decimal("0.10")]
    assert pd.isna(result.frame["V"].iloc[2])
    assert result.frame["V"].tolist()[3:] == [Decimal("12.50"), Decimal("-3.00")]


def test_dates_are_sfmc_system_time_converted_to_utc():
    result = _convert(
        {"type": "Date"},
        ["6/23/2024 12:00:00 AM", "11/3/2024 1:05:09 PM", "2024-07-04", "7/4/2024", ""],
    )
    assert result.issues.empty
    assert str(result.frame["V"].dtype) == "datetime64[us, UTC]"
    assert result.frame["V"].tolist()[:4] == [
        pd.Timestamp("2024-06-23 06:00:00", tz="UTC"),  # midnight CST is 06:00 UTC
        pd.Timestamp("2024-11-03 19:05:09", tz="UTC"),  # no daylight-saving shift
        pd.Timestamp("2024-07-04 06:00:00", tz="UTC"),
        pd.Timestamp("2024-07-04 06:00:00", tz="UTC"),
    ]
    assert pd.isna(result.frame["V"].iloc[4])


@pytest.mark.parametrize(
    "column, bad, reason",
    [
        ({"type": "Number"}, "n/a", "V: 'n/a' is not a whole number"),
        ({"type": "Number"}, "1.5", "V: '1.5' is not a whole number"),
        ({"type": "Decimal", "precision": 5, "scale": 2}, "1.234", "at most 3 digits before and 2 after"),
        ({"type": "Decimal", "precision": 5, "scale": 2}, "12345", "at most 3 digits before"),
        ({"type": "Date"}, "31/31/2026 99:00:00 XM", "V: '31/31/2026 99:00:00 XM' is not a date"),
        ({"type": "Boolean"}, "maybe", "V: 'maybe' is not a boolean"),
    ],
)
def test_unparseable_values_are_reported_not_nulled(column, bad, reason):
    result = _convert(column, ["", bad])
    assert result.issues["row"].tolist() == [1]
    assert result.issues["column"].tolist() == ["V"]
    assert reason in result.issues["reason"].iloc[0]
