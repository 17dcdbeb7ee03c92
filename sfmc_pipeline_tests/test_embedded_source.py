"""Contract: a sample extract that cannot be read (missing, empty, not UTF-8, a row with too many
fields) fails with a non-retryable ``ExtractError`` whose message names the file, what is wrong
(the line, where there is one) and the fix, never a pandas traceback; a header-only file is an
extract of 0 rows."""

import dagster as dg
import pytest

from sfmc_pipeline.config.loader import load_pipeline_config
from sfmc_pipeline.defs.assets.datasets import build_dataset_asset
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH
from sfmc_pipeline.sfmc.embedded_source import EmbeddedSampleSource
from sfmc_pipeline.sfmc.source import ExtractError

CONFIG = load_pipeline_config(DEFAULT_CONFIG_PATH)
ACTIVITIES = CONFIG.extension("activities")
HEADER = b"ActivityId,SubscriberKey,ActivityType,OccurredAt,Detail\n"
ROW = b"a1,0035e00000ABCdeAAH,web_visit,11/1/2026 9:30:00 AM,https://www.example.com/\n"
REGENERATE = "python scripts/generate_sample_data.py"


def _read_failure(sample_dir, content: bytes | None) -> str:
    """Write Activities.csv (unless ``content`` is None), read it, return the error message."""
    if content is not None:
        (sample_dir / "Activities.csv").write_bytes(content)
    with pytest.raises(ExtractError) as info:
        EmbeddedSampleSource(sample_dir).read(ACTIVITIES)
    error = info.value
    assert not error.retryable
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)  # no pandas traceback
    message = str(error)
    assert str(sample_dir / "Activities.csv") in message and "C error" not in message
    return message


def test_non_utf8_bytes_name_the_line_and_say_save_as_utf8(tmp_path):
    message = _read_failure(tmp_path, HEADER + ROW + "a2,0035e00000ABCdeAAH,web_visit,,Caf\xe9\n".encode("latin-1"))
    assert "is not UTF-8: line 3 has the byte 0xe9" in message
    assert "Save it as UTF-8" in message and REGENERATE in message


def test_a_row_with_too_many_fields_names_the_line(tmp_path):
    message = _read_failure(tmp_path, HEADER + ROW + b"a2,0035e00000ABCdeAAH,web_visit,,see /p,q\n")
    assert "line 3 has 6 fields but the header row has 5" in message
    assert "quote values that contain a comma" in message and REGENERATE in message


def test_an_empty_file_fails_but_a_header_only_file_is_zero_rows(tmp_path):
    message = _read_failure(tmp_path, b"")
    assert "is empty, but an extract has at least a header row" in message and REGENERATE in message

    (tmp_path / "Activities.csv").write_bytes(HEADER)
    extract = EmbeddedSampleSource(tmp_path).read(ACTIVITIES)
    assert len(extract.frame) == 0 and list(extract.frame.columns) == [c.name for c in ACTIVITIES.columns]


def test_a_missing_file_says_how_to_regenerate_it(tmp_path):
    message = _read_failure(tmp_path, None)
    assert "No sample extract for Data Extension 'Activities'" in message and REGENERATE in message


def test_the_asset_fails_at_once_with_the_message(tmp_path):
    sample = tmp_path / "sample"
    sample.mkdir()
    (sample / "Activities.csv").write_bytes(HEADER + b"a1,\xff\xfe\n")
    result = dg.materialize(
        [build_dataset_asset(ACTIVITIES, CONFIG)],
        resources={"sfmc": SfmcResource(sample_dir=str(sample)), "storage": StorageResource(base_dir=str(tmp_path))},
        raise_on_error=False,
    )
    assert not result.success
    events = [e.event_type_value for e in result.all_events]
    assert "STEP_UP_FOR_RETRY" not in events and "STEP_RESTARTED" not in events
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.message
    assert f"Sample extract {sample / 'Activities.csv'} is not UTF-8: line 2" in message
    assert "Save it as UTF-8" in message
