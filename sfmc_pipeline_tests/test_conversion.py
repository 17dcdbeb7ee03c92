"""Contract: SFMC's string values become correctly typed columns (strings, nullable integers,
decimals, UTC timestamps, booleans); SFMC dates are US Central Standard Time (UTC-6, no DST);
a value that does not parse is reported with the row and the reason, never silently nulled."""

from decimal import Decimal

import pandas as pd
import pytest

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
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


def test_the_last_day_salesforce_accepts_converts():
    result = _convert({"type": "Date"}, ["12/31/4000 5:59:59 PM", "4000-12-31"])
    assert result.issues.empty
    assert result.frame["V"].tolist() == [pd.Timestamp("4000-12-31 23:59:59", tz="UTC"),
                                          pd.Timestamp("4000-12-31 06:00:00", tz="UTC")]


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
        ({"type": "Number"}, "n/a", "V: 'n/a' is not a number"),
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


INT64_RANGE = "outside the range of a whole-number column (-9223372036854775808 to 9223372036854775807)"
NOT_A_NUMBER = "not a number"
DEC_5_2 = {"type": "Decimal", "precision": 5, "scale": 2}


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("9223372036854775807", 9223372036854775807),  # the largest int64, exactly
        ("-9223372036854775808", -9223372036854775808),  # the smallest int64, exactly
        ("0009223372036854775807", 9223372036854775807),  # leading zeros do not count as digits
        ("-0009223372036854775808", -9223372036854775808),  # ... on either side
        ("9007199254740993", 9007199254740993),  # above 2**53: no detour through float
        ("+5", 5),  # explicit plus sign
        ("-0", 0),  # negative zero is zero
        ("12.000", 12),  # SFMC's decimal rendering of a whole number
        (".0", 0),  # a zero fraction without integer digits
    ],
)
def test_whole_numbers_convert_exactly_up_to_the_int64_bounds(raw, expected):
    result = _convert({"type": "Number"}, [raw, ""])  # a null alongside: the column stays exact
    assert result.issues.empty
    assert result.frame["V"].iloc[0] == expected
    assert str(result.frame["V"].dtype) == "Int64"


LATER_THAN_SALESFORCE = "after 4000-12-31 (UTC), the latest date Salesforce accepts"


@pytest.mark.parametrize(
    "column, raw, detail",
    [
        # Number (int64): beyond the range is quarantined, never wrapped
        ({"type": "Number"}, "18446744073709551615", INT64_RANGE),  # 2**64 - 1 (was read as -1)
        ({"type": "Number"}, "9223372036854775808", INT64_RANGE),  # int64 max + 1 (was read as int64 min)
        ({"type": "Number"}, "-9223372036854775809", INT64_RANGE),  # int64 min - 1
        ({"type": "Number"}, "99999999999999999999999999", INT64_RANGE),  # 26 digits
        ({"type": "Number"}, "-99999999999999999999999999.0", INT64_RANGE),  # 26 digits, negative, ".0"
        # Number: text that is not a number, one row, never a silent null
        ({"type": "Number"}, "１２３", NOT_A_NUMBER),  # fullwidth digits
        ({"type": "Number"}, "١٢٣", NOT_A_NUMBER),  # Arabic-Indic digits
        ({"type": "Number"}, "१२३", NOT_A_NUMBER),  # Devanagari digits
        ({"type": "Number"}, "1２3", NOT_A_NUMBER),  # one fullwidth digit among ASCII ones
        ({"type": "Number"}, "1,234", NOT_A_NUMBER),  # thousands separator
        ({"type": "Number"}, "1e5", NOT_A_NUMBER),  # scientific notation
        ({"type": "Number"}, "12abc", NOT_A_NUMBER),  # trailing letters
        ({"type": "Number"}, "½", NOT_A_NUMBER),  # vulgar fraction
        ({"type": "Number"}, "²", NOT_A_NUMBER),  # superscript digit
        ({"type": "Number"}, "0x10", NOT_A_NUMBER),  # hexadecimal
        ({"type": "Number"}, "-", NOT_A_NUMBER),  # a sign alone
        ({"type": "Number"}, "1.5", "not a whole number"),  # a number, but not a whole one
        # Decimal(5,2): more digits than the column holds is quarantined, never rounded
        (DEC_5_2, "1000", "outside the range of a Decimal(5,2) column"),  # 4 integer digits
        (DEC_5_2, "-1000.00", "outside the range of a Decimal(5,2) column"),  # ... negative
        (DEC_5_2, "1.005", "more precise than a Decimal(5,2) column holds"),  # 3 fraction digits
        (DEC_5_2, "0.001", "more precise than a Decimal(5,2) column holds"),  # would round to 0.00
        ({"type": "Decimal", "precision": 2, "scale": 2}, "1.0", "outside the range of a Decimal(2,2)"),  # no integer digit allowed
        ({"type": "Decimal", "precision": 29, "scale": 0}, "1" + "0" * 29, "outside the range of a Decimal(29,0)"),  # 30 digits
        # Decimal: text that is not a number (these made the pyarrow cast raise for the whole column)
        (DEC_5_2, "１２３", NOT_A_NUMBER),  # fullwidth digits
        (DEC_5_2, "١٢٣.٤", NOT_A_NUMBER),  # Arabic-Indic digits
        (DEC_5_2, "1.２", NOT_A_NUMBER),  # a fullwidth fraction digit
        (DEC_5_2, "1,234.5", NOT_A_NUMBER),  # thousands separator
        (DEC_5_2, "1e2", NOT_A_NUMBER),  # scientific notation
        (DEC_5_2, "½", NOT_A_NUMBER),  # vulgar fraction
        (DEC_5_2, "²", NOT_A_NUMBER),  # superscript digit
        (DEC_5_2, ".", NOT_A_NUMBER),  # a point alone
        # Date and Boolean are ASCII-only too
        ({"type": "Date"}, "1/15/２０２４", "not a date"),  # fullwidth year (was read as 2024-01-15)
        ({"type": "Date"}, "２０２４-01-15", "not a date"),  # fullwidth ISO year
        ({"type": "Date"}, "1/1٥/2024", "not a date"),  # an Arabic-Indic day digit
        # Date: later than Salesforce accepts (4000-12-31), never landed as year 10000
        ({"type": "Date"}, "12/31/9999 11:00:00 PM", LATER_THAN_SALESFORCE),  # 10000-01-01 05:00 UTC
        ({"type": "Date"}, "12/31/4000 6:00:00 PM", LATER_THAN_SALESFORCE),  # 4001-01-01 00:00 UTC
        ({"type": "Date"}, "4001-01-01", LATER_THAN_SALESFORCE),  # ISO, the exact path
        ({"type": "Boolean"}, "ＴＲＵＥ", "not a boolean"),  # fullwidth letters
        ({"type": "Boolean"}, "１", "not a boolean"),  # fullwidth one
    ],
)
def test_values_the_column_cannot_hold_are_reported_one_row_at_a_time(column, raw, detail):
    good = {"Number": "7", "Decimal": "-0", "Date": "2024-01-15", "Boolean": "True"}[column["type"]]
    result = _convert(column, [good, raw, "", good])
    assert result.issues["row"].tolist() == [1]  # only the bad row; the others convert
    issue = result.issues.iloc[0]
    assert issue["check"] == f"type:{column['type']}"
    assert issue["reason"].startswith(f"V: {raw!r} is {detail}")  # the value as served
    assert issue["summary"] == "V: " + issue["reason"][len(f"V: {raw!r} is ") :]  # same words, no value
    assert repr(raw) not in issue["summary"]
    typed = result.frame["V"]
    assert pd.isna(typed.iloc[1])  # nulled in the typed frame (the row is quarantined), not wrapped
    assert typed.notna().tolist() == [True, False, False, True]


@pytest.mark.parametrize(
    "column, raw, expected",
    [
        (DEC_5_2, "12.500", Decimal("12.50")),  # trailing zeros beyond the scale are allowed
        (DEC_5_2, "1.2300000", Decimal("1.23")),  # ... however many
        (DEC_5_2, "999.99", Decimal("999.99")),  # the largest value of Decimal(5,2)
        (DEC_5_2, "-999.99", Decimal("-999.99")),  # the smallest
        (DEC_5_2, "0001.5", Decimal("1.50")),  # leading zeros do not count as digits
        (DEC_5_2, ".5", Decimal("0.50")),  # no integer digits
        (DEC_5_2, "+.5", Decimal("0.50")),  # plus sign, no integer digits
        (DEC_5_2, "5.", Decimal("5.00")),  # a trailing point
        ({"type": "Decimal", "precision": 2, "scale": 2}, "00.99", Decimal("0.99")),  # only fraction digits
        ({"type": "Decimal", "precision": 29, "scale": 0}, "9" * 29, Decimal("9" * 29)),  # 29 digits, exact
    ],
)
def test_decimals_that_fit_convert_exactly(column, raw, expected):
    result = _convert(column, [raw])
    assert result.issues.empty
    assert result.frame["V"].iloc[0] == expected


def test_many_bad_values_in_one_column_do_not_fail_the_conversion():
    raw = ["1", "１２３", "18446744073709551615", "", "1.5", "x", "-9223372036854775808"]
    result = _convert({"type": "Number"}, raw)
    assert result.issues["row"].tolist() == [1, 2, 4, 5]
    assert [None if pd.isna(v) else v for v in result.frame["V"]] == [1, None, None, None, None, None, -(2**63)]
    assert result.issues["summary"].tolist() == [
        "V: not a number (expected a whole number)",
        "V: " + INT64_RANGE,
        "V: not a whole number",
        "V: not a number (expected a whole number)",
    ]
