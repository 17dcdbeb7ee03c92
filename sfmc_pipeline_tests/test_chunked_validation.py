"""Contract: validation page by page gives exactly what validating the whole extract at once gave
before it was vectorised and chunked. For a few thousand generated rows full of edge cases (every
value of test_conversion.py, test_validation.py and test_salesforce_ids.py, and more), however the
rows are split into pages and batches, ``validate_pages`` yields the same typed valid rows (values
and dtypes), the same quarantine (raw values as served, row numbers across pages, reasons in the
same order), the same issues in the same order, and the same top reasons as the previous
implementation, kept as the reference in validation_reference.py (a copy of the previous per-column
conversion and of pandera's lazy validation of the whole frame, with the Salesforce Id rules
applied one value at a time). Primary-key duplicates spread over pages are quarantined with their
raw values, and the temporary spill of raw batches is removed, also when the source fails mid-read.
The dataset asset reads its source page by page (``read_pages``) and lands the same dataset."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from sfmc_pipeline.config.data_extensions import DataExtensionConfig, SfmcType
from sfmc_pipeline.config.loader import load_pipeline_config
from sfmc_pipeline.datasets.conversion import convert_frame, pandas_dtype
from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.datasets.validation import validate_extract, validate_pages
from sfmc_pipeline.salesforce.ids import to_18
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH
from sfmc_pipeline_testing.validation_reference import (
    reference_convert_frame,
    reference_validate,
)
from sfmc_pipeline_tests.shipped_sample import SHIPPED_SAMPLE

CONFIG = load_pipeline_config(DEFAULT_CONFIG_PATH)


# ==============================================================================================
# Generated rows full of edge cases
# ==============================================================================================

DOC_15, DOC_18 = "001A0000006Vm9r", "001A0000006Vm9rIAC"
TEXTS = ["abc", "", " ", "  x  ", "Zoë", "O'Brien", "\tTab\n", "x" * 40, "x" * 41, "１２３", None]
IDS = [DOC_15, DOC_18, f" {DOC_15} ", DOC_15 + "AAA", DOC_15.lower() + "IAC", DOC_15[:14], DOC_15 + "I",
       "0035e00000ABC-e", "００1A0000006Vm9r", "0035E00000ABCDE", "0035e00000abcde", DOC_18.lower(), ""]
EMAILS = ["ada@example.com", "no-at-sign.example.com", "a@b", "a@b.co", " a@b.co ", "a@@b.co", "zoë@example.com",
          "first.last+tag@mail.example.org", "x@-bad.com", ""]
STAGES = ["new", "repeat", "loyal", "inactive", "", "vip", "New", " loyal "]
NUMBERS = ["1", "-3", "", "12.0", "9223372036854775807", "-9223372036854775808", "0009223372036854775807",
           "-0009223372036854775808", "9007199254740993", "+5", "-0", ".0", "12.000", "18446744073709551615",
           "9223372036854775808", "-9223372036854775809", "99999999999999999999999999", "-99999999999999999999999999.0",
           "１２３", "١٢٣", "१२३", "1２3", "1,234", "1e5", "12abc", "½", "²", "0x10", "-", "1.5", "x", "n/a", " 7 ",
           "-03", "007", "0", "123456789012345678", "1234567890123456789", "999999999999999999"]
DECIMALS = ["1234.5", "0.10", "", "12.500", "-3", "1.234", "12345", "1000", "-1000.00", "1.005", "0.001", "1.0",
            "00.99", "0.99", ".5", "+.5", "5.", "999.99", "-999.99", "0001.5", "1.2300000", "１２３", "١٢٣.٤", "1.２",
            "1,234.5", "1e2", "½", "²", ".", "-5.5", "-0", "-0.00", "12.345", "12345678901234567", "１２３.４５",
            "9999999999999999.99", "10000000000000000", "7", " 3.14 "]
DATES = ["6/23/2024 12:00:00 AM", "11/3/2024 1:05:09 PM", "2024-07-04", "7/4/2024", "", "31/31/2026 99:00:00 XM",
         "1/15/２０２４", "２０２４-01-15", "1/1٥/2024", "2/30/2023 12:00:00 AM", "2/29/2024 11:59:59 PM", "2/29/2023",
         "2/29/2024", "4/31/2024 1:00:00 AM", "4/30/2024 1:00:00 AM", "12/31/9999 11:59:59 PM", "1/1/0001 12:00:00 AM",
         "1/1/0000 12:00:00 AM", "06/03/2024 01:05:09 pm", "6/3/2024 1:5:9 AM", "6/23/2024  12:00:00 AM",
         "6/ 3/2024 1:00:00 AM", "2024-07-04T10:00:00", "2024-07-04 10:00:00", "2024-7-4", "2024-02-30",
         "2024-02-29", "2023-02-29 10:00:00", "2024-02-30T10:00:00", "2024-07-04T24:00:00", "2024-07-04T10:00:00Z",
         "yesterday", "13/1/2024", "0/1/2024", "1/1/1500 12:00:00 AM", "1/31/2024 12:00:00 PM", "3/31/2024",
         "2024-12-31", "12/31/2024 12:59:59 PM", "1/1/2024 13:00:00 PM", "1/1/2024 0:00:00 AM", " 7/4/2024 ",
         "9/31/2024 12:00:00 AM", "11/31/2024", "1/32/2024", "2024-04-31", "6/1/2026 12:00:00 AM",
         "06/03/2024 01:05:09 PM", "09/09/2024 09:09:09 AM", "12/31/2024 12:00:00 AM", "12/31/2024 12:00:00 PM",
         "1/1/1000 12:00:00 AM", "1/1/0999 12:00:00 AM", "2024-02-29T23:59:59", "2/29/2000", "2/29/1900",
         "2/29/1900 1:00:00 AM", "02/28/2023", "2023-12-31 23:59:59", "2023-12-31 24:00:00", "12/31/2024 00:00:00 AM",
         "7/4/2024 12:00:00 PM ", "7/4/2024\t12:00:00 PM", "7/4/24", "2024/07/04"]
BOOLEANS = ["True", "False", " True", "", "1", "0", "yes", "no", "Y", "n", "maybe", "ＴＲＵＥ", "１", "TRUE", "tRuE"]
SMALL_COUNTS = ["0", "1", "2", "3", "", "x", "-1", "2.0"]

# An extension with every type, a nullable column of each, tight decimals and a composite key of a
# Number and an Id; row checks between numbers and between dates.
EVERYTHING = DataExtensionConfig(
    key="Everything", asset="everything", primary_key=["Num", "Id"],
    columns=[
        {"name": "Id", "type": "Text", "length": 18, "format": "salesforce_id"},
        {"name": "Num", "type": "Number", "min": -5, "max": 1000},
        {"name": "Dec52", "type": "Decimal", "precision": 5, "scale": 2, "nullable": True, "min": -100.5},
        {"name": "Dec22", "type": "Decimal", "precision": 2, "scale": 2, "nullable": True},
        {"name": "Dec290", "type": "Decimal", "precision": 29, "scale": 0, "nullable": True},
        {"name": "When", "type": "Date"},
        {"name": "Later", "type": "Date", "nullable": True},
        {"name": "Flag", "type": "Boolean", "nullable": True},
        {"name": "Mail", "type": "EmailAddress", "nullable": True, "length": 20},
        {"name": "Stage", "type": "Text", "nullable": True, "allowed_values": ["new", "repeat"]},
        {"name": "Note", "type": "Text", "nullable": True, "length": 40},
        {"name": "Phone", "type": "Phone", "nullable": True},
        {"name": "Big", "type": "Number", "nullable": True},
    ],
    row_checks=[{"column": "Num", "op": "lte", "other_column": "Big"},
                {"column": "When", "op": "lt", "other_column": "Later"}],
)

DEC_290 = ["9" * 29, "1" + "0" * 29, "0" * 31 + "1", "-" + "9" * 29, "12", ""]


def _ids(rng, n: int, pool: int) -> list[str]:
    """Keys from a pool small enough to repeat (duplicates, also across pages and across the 15/18
    forms of one Id), with some malformed values mixed in."""
    keys = [to_18(f"003{i:012d}") for i in range(pool)]
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.03:
            out.append(IDS[rng.integers(len(IDS))])
        else:
            k = keys[rng.integers(pool)]
            out.append(k[:15] if r < 0.1 else k)
    return out


def _pick(rng, pool, n, good=None, share_good=0.93):
    """``n`` values: ``good`` ones (a callable of the row) most of the time, else any of ``pool``."""
    return [good(i) if good is not None and rng.random() < share_good else pool[rng.integers(len(pool))]
            for i in range(n)]


def generated_rows(extension: DataExtensionConfig, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = _ids(rng, n, pool=n * 8)
    def day(i):
        return f"{1 + i % 12}/{1 + i % 28}/20{10 + i % 15} {1 + i % 12}:{i % 60:02d}:{(7 * i) % 60:02d} {'AP'[i % 2]}M"

    by_type = {
        SfmcType.NUMBER: lambda: _pick(rng, NUMBERS, n, lambda i: str(i % 700 + (1000 if col.name == "Big" else 0))),
        SfmcType.DECIMAL: lambda: _pick(rng, DECIMALS, n, lambda i: f"{i % 90}.{i % 100:02d}"),
        SfmcType.DATE: lambda: _pick(rng, DATES, n, day),
        SfmcType.BOOLEAN: lambda: _pick(rng, BOOLEANS, n, None),
        SfmcType.EMAIL_ADDRESS: lambda: _pick(rng, EMAILS, n, lambda i: f"p{i}@example.com"),
    }
    columns = {}
    for col in extension.columns:
        if col.format == "salesforce_id":
            columns[col.name] = ids
        elif col.name in ("Opens", "Clicks", "OfferClicks"):
            columns[col.name] = _pick(rng, SMALL_COUNTS, n, lambda i: str(i % 3), 0.8)
        elif col.name == "Dec290":
            columns[col.name] = _pick(rng, DEC_290 + DECIMALS, n, lambda i: str(i * 7919))
        elif col.name == "Later":
            columns[col.name] = _pick(rng, DATES, n, lambda i: f"12/31/2030 {1 + i % 12}:00:00 PM")
        elif col.name == "Dec22":
            columns[col.name] = _pick(rng, DECIMALS, n, lambda i: f"0.{i % 100:02d}")
        elif col.allowed_values is not None:
            allowed = col.allowed_values
            columns[col.name] = _pick(rng, STAGES + allowed, n, lambda i: allowed[i % len(allowed)])
        elif col.type in by_type:
            columns[col.name] = by_type[col.type]()
        elif col.name in ("CampaignId", "ActivityId"):
            columns[col.name] = _pick(rng, TEXTS, n, lambda i: f"K{i % (n - n // 20)}", 0.97)  # some repeat
        else:
            columns[col.name] = _pick(rng, TEXTS, n, lambda i: f"Name{i}")
    for row in rng.choice(np.arange(1, n), size=n // 30, replace=False):  # the key of an earlier row again
        earlier = int(rng.integers(row))
        for name in extension.primary_key:
            value = columns[name][earlier]
            columns[name][row] = f" {value} " if value and rng.random() < 0.3 else value
    return pd.DataFrame(columns, dtype="string")


def _split(frame: pd.DataFrame, rng, largest: int) -> list[pd.DataFrame]:
    """The frame as pages of random sizes (some empty), each with its own index, as a source serves them."""
    pages, start = [], 0
    while start < len(frame):
        size = int(rng.integers(0, largest + 1))
        pages.append(frame.iloc[start : start + size].reset_index(drop=True))
        start += size
    return pages


def assert_same(result, expected) -> None:
    pd.testing.assert_frame_equal(result.valid, expected.valid, check_exact=True)
    pd.testing.assert_frame_equal(result.quarantine, expected.quarantine, check_exact=True)
    pd.testing.assert_frame_equal(result.issues.reset_index(drop=True), expected.issues.reset_index(drop=True),
                                  check_dtype=False, check_exact=True)
    assert result.rows_read == expected.rows_read
    assert result.top_reasons(50) == expected.top_reasons(50)


EXTENSIONS = [CONFIG.extension("contacts"), CONFIG.extension("campaign_engagement"), CONFIG.extension("activities"),
              EVERYTHING]


@pytest.mark.parametrize("extension", EXTENSIONS, ids=lambda e: e.asset)
@pytest.mark.parametrize("few", [0, 10_000], ids=["column-wise", "value-by-value"])
def test_conversion_gives_the_previous_values_and_issues(extension, few, monkeypatch):
    from sfmc_pipeline.datasets import number_conversion

    monkeypatch.setattr(number_conversion, "_FEW", few)  # the exact logic for odd values, either way
    raw = generated_rows(extension, 3000, seed=11)
    raw.index = pd.RangeIndex(3000, 0, -1)  # labels that are not positions
    new, old = convert_frame(raw, extension), reference_convert_frame(raw, extension)
    pd.testing.assert_frame_equal(new.frame, old.frame, check_exact=True)
    pd.testing.assert_frame_equal(new.issues, old.issues, check_dtype=False, check_exact=True)


@pytest.mark.parametrize("extension", EXTENSIONS, ids=lambda e: e.asset)
@pytest.mark.parametrize("batch_rows, largest_page, large", [
    (65_536, 3000, 8192),  # one batch, columns one after the other
    (400, 250, 100),  # batches "large": columns two at a time (threads), memory handed back after each
    (97, 2500, 8192),  # many small batches, pages larger than a batch
])
def test_validate_pages_gives_the_previous_result_however_the_rows_are_paged(extension, batch_rows, largest_page,
                                                                              large, tmp_path, monkeypatch):
    from sfmc_pipeline.datasets import chunked_validation

    monkeypatch.setattr(chunked_validation, "_LARGE", large)
    raw = generated_rows(extension, 3000, seed=batch_rows)
    expected = reference_validate(raw, extension)
    assert 0 < expected.quarantine.shape[0] < len(raw)  # both outcomes are exercised
    pages = _split(raw, np.random.default_rng(batch_rows), largest_page)
    result = validate_pages(iter(pages), extension, batch_rows=batch_rows, spill_dir=tmp_path)
    assert_same(result, expected)
    assert not list(tmp_path.iterdir())  # the spill of raw batches is gone


@pytest.mark.parametrize("asset", ["contacts", "campaign_engagement", "activities"])
def test_the_shipped_sample_validates_as_before(asset):
    from sfmc_pipeline.sfmc.embedded_source import EmbeddedSampleSource

    extension = CONFIG.extension(asset)
    frame = EmbeddedSampleSource(SHIPPED_SAMPLE).read(extension).frame
    expected = reference_validate(frame, extension)
    assert_same(validate_extract(frame, extension), expected)
    assert_same(validate_pages([frame.iloc[i : i + 2500] for i in range(0, len(frame), 2500)], extension,
                               batch_rows=5000), expected)


def test_a_duplicate_key_pages_apart_quarantines_both_rows_with_their_raw_values(tmp_path):
    extension = CONFIG.extension("contacts")
    first = to_18("0035e0000000001")
    rows = [{"SubscriberKey": to_18(f"0035e00000{n:05d}"), "LastName": f"L{n}", "Email": f"p{n}@example.com",
             "OrderCount": "1", "TotalSpend": "1", "CreatedDate": "1/1/2026 12:00:00 AM"} for n in range(10)]
    rows[1]["SubscriberKey"] = first[:15]  # row 2: the 15-character form ...
    rows[8]["SubscriberKey"] = f" {first} "  # ... and row 9 the 18-character one, pages apart
    rows[8]["OrderCount"] = "12.0"
    frame = pd.DataFrame([{c.name: "" for c in extension.columns} | r for r in rows], dtype="string")
    pages = [frame.iloc[i : i + 3] for i in range(0, 10, 3)]
    result = validate_pages(pages, extension, batch_rows=3, spill_dir=tmp_path)
    assert result.quarantine["_row_number"].tolist() == [2, 9]
    assert result.quarantine["SubscriberKey"].tolist() == [first[:15], f" {first} "]  # as served
    assert result.quarantine["OrderCount"].tolist() == ["1", "12.0"]
    assert result.quarantine["_checks"].tolist() == ["primary_key", "primary_key"]
    assert result.rows_valid == 8 and result.valid["SubscriberKey"].is_unique
    assert not list(tmp_path.iterdir())


def test_no_pages_give_an_empty_typed_dataset():
    extension = CONFIG.extension("contacts")
    result = validate_pages(iter([]), extension)
    assert result.rows_read == result.rows_valid == result.rows_quarantined == 0
    dtypes = {c: str(t) for c, t in result.valid.dtypes.items()}
    assert dtypes == {c.name: str(pandas_dtype(c)) for c in extension.columns}
    assert list(result.quarantine.columns) == [c.name for c in extension.columns] + [
        "_row_number", "_reasons", "_checks", "_columns"]


def test_a_source_failing_mid_read_leaves_no_spill(tmp_path):
    extension = CONFIG.extension("contacts")
    raw = generated_rows(extension, 600, seed=3)

    def pages():
        yield raw.iloc[:200]
        yield raw.iloc[200:400]
        raise RuntimeError("the source failed")

    with pytest.raises(RuntimeError, match="the source failed"):
        validate_pages(pages(), extension, batch_rows=100, spill_dir=tmp_path)
    assert not list(tmp_path.iterdir())


class PagedSource:
    """The embedded source serving 700 rows a page; it counts the pages it served."""

    mode = "embedded"

    def __init__(self, inner):
        self.inner, self.streams = inner, []

    @property
    def pages_served(self) -> int:
        return sum(stream.pages for stream in self.streams)

    def read_pages(self, extension, since=None):
        self.streams.append(self.inner.read_pages(extension, since=since))
        return self.streams[-1]

    def probe(self, extension):
        return self.inner.probe(extension)


def test_the_dataset_asset_reads_the_source_page_by_page(tmp_path, monkeypatch):
    from sfmc_pipeline.defs.assets.datasets import build_dataset_assets
    from sfmc_pipeline.defs.resources.sfmc import SfmcResource
    from sfmc_pipeline.defs.resources.storage import StorageResource
    from sfmc_pipeline.sfmc.embedded_source import EmbeddedSampleSource

    sources = []

    def get_source(self, page_size=2500, **kwargs):
        sources.append(PagedSource(EmbeddedSampleSource(SHIPPED_SAMPLE, page_size=700)))
        return sources[-1]

    monkeypatch.setattr(SfmcResource, "get_source", get_source)
    assets = [a for a in build_dataset_assets(CONFIG) if a.key.to_user_string() == "contacts"]
    resources = {"sfmc": SfmcResource(), "storage": StorageResource(base_dir=str(tmp_path))}
    result = dg.materialize(assets, resources=resources)
    assert result.success
    assert sources and sources[0].pages_served >= 2
    extension = CONFIG.extension("contacts")
    expected = reference_validate(EmbeddedSampleSource(SHIPPED_SAMPLE).read(extension).frame, extension)
    landed = DatasetStore(tmp_path).read_dataset("contacts")
    pd.testing.assert_frame_equal(landed, expected.valid, check_exact=True)
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["rows_read"].value == expected.rows_read
    assert metadata["rows_quarantined"].value == len(expected.quarantine)


def test_pages_with_a_missing_an_extra_and_an_object_column_validate_as_one_frame(tmp_path):
    extension = CONFIG.extension("contacts")
    raw = generated_rows(extension, 1200, seed=21).drop(columns=["Company"]).assign(Unmapped="x")
    raw["OrderCount"] = raw["OrderCount"].astype(object)  # as a source might hand it over
    expected = reference_validate(raw, extension)
    pages = [raw.iloc[i : i + 250] for i in range(0, len(raw), 250)]
    assert_same(validate_pages(pages, extension, batch_rows=300, spill_dir=tmp_path), expected)


def _old_count_changed(previous: pd.DataFrame, current: pd.DataFrame) -> int:
    """``count_changed`` as it was (``hash_pandas_object`` of both frames)."""
    seen = pd.Index(pd.util.hash_pandas_object(previous, index=False))
    return int((~pd.util.hash_pandas_object(current, index=False).isin(seen)).sum())


def test_a_full_read_counts_changed_rows_from_the_previous_datasets_row_hashes(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from sfmc_pipeline.datasets import storage
    from sfmc_pipeline.datasets.merge import count_changed, previous_for_full_read

    monkeypatch.setattr(storage, "ROW_GROUP_ROWS", 300)  # several row groups, read one at a time
    extension = CONFIG.extension("contacts")
    before = validate_extract(generated_rows(extension, 2000, seed=5), extension).valid
    store = DatasetStore(tmp_path)
    path = store.write_dataset(extension.asset, before)
    assert pq.ParquetFile(path).metadata.num_row_groups > 1
    pd.testing.assert_frame_equal(store.read_dataset(extension.asset), before)
    assert len(before) > 1000
    after = before.drop(index=[3, 500, 1000]).reset_index(drop=True)
    after.loc[[10, 11, 800], "LastName"] = "Changed"
    after.loc[[20, 900], "OrderCount"] = pd.NA
    after.loc[40, "TotalSpend"] = after.loc[41, "TotalSpend"]
    after = pd.concat([after, before.iloc[[7]].assign(SubscriberKey=to_18("0035e0000XXXXXX"))], ignore_index=True)
    previous = previous_for_full_read(store, extension)
    assert previous.problem is None and previous.quarantine is None and len(previous.valid) == len(before)
    expected = _old_count_changed(before, after)
    assert expected == 7  # 3 names, 2 counts, 1 spend, 1 new row
    assert count_changed(previous.valid, after) == count_changed(before, after) == expected
    assert count_changed(previous.valid, before) == 0


def test_the_previous_dataset_of_a_full_read_is_checked_like_load_previous(tmp_path):
    from sfmc_pipeline.datasets.incremental import load_previous
    from sfmc_pipeline.datasets.merge import previous_for_full_read

    extension = CONFIG.extension("activities")
    store = DatasetStore(tmp_path)
    missing = previous_for_full_read(store, extension)
    assert missing.valid is None and missing.quarantine is None and "does not exist" in missing.problem
    result = validate_extract(generated_rows(extension, 300, seed=8), extension)
    store.write_dataset(extension.asset, result.valid.astype({"Detail": "object"}))  # another type
    store.write_quarantine(extension.asset, result.quarantine.assign(_run_id="r"))
    mismatched = previous_for_full_read(store, extension)
    assert mismatched.valid is None and "configured columns and types" in mismatched.problem
    assert load_previous(store, extension).valid is None  # the same verdict
    store.dataset_path(extension.asset).write_text("not parquet")
    broken = previous_for_full_read(store, extension)
    assert broken.valid is None and "cannot be read as parquet" in broken.problem
