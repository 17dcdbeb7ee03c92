"""Contract: ``SFMC_PIPELINE_EXTRACT_DIR`` (in the project's ``.env`` or the environment) points the embedded
default at a folder of the user's extract CSVs instead of the shipped sample day, so nobody edits
``data/sample`` to try their own extract. Unset, the sample days work as before. A folder that does not
exist, a configured extension without its CSV there, or two different folders in ``.env`` and the
environment fail with a ``ConfigurationError`` naming the setting, the folder and the fix."""

import dagster as dg
import pytest

from sfmc_pipeline import settings
from sfmc_pipeline.config.loader import load_pipeline_config
from sfmc_pipeline.defs.assets.datasets import build_dataset_asset
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.errors import ConfigurationError
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH, EXTRACT_DIR_ENV
from sfmc_pipeline_tests.flow_fixtures import step_failures

CONFIG = load_pipeline_config(DEFAULT_CONFIG_PATH)
ACTIVITIES = CONFIG.extension("activities")
CSV = ("ActivityId,SubscriberKey,ActivityType,OccurredAt,Detail\r\n"
       "mine-1,0035e00000ABCdeAAH,web_visit,11/1/2026 9:30:00 AM,https://www.example.com/\r\n"
       "mine-2,0035e00000ABCdeAAH,email_click,11/2/2026 9:30:00 AM,\r\n")


def _materialize(storage):
    return dg.materialize([build_dataset_asset(ACTIVITIES, CONFIG)], raise_on_error=False,
                          resources={"sfmc": SfmcResource(), "storage": StorageResource(base_dir=str(storage))})


@pytest.fixture()
def extracts(tmp_path):
    folder = tmp_path / "my extracts"
    folder.mkdir()
    (folder / "Activities.csv").write_text(CSV, encoding="utf-8")
    return folder


def test_the_setting_in_the_project_env_file_reads_the_users_extracts(project_env_file, extracts, tmp_path):
    project_env_file.write_text(f"{EXTRACT_DIR_ENV}={extracts}\n", encoding="utf-8")
    assert SfmcResource().sample_folder() == extracts
    result = _materialize(tmp_path / "storage")
    assert result.success
    metadata = result.asset_materializations_for_node("activities")[0].metadata
    assert metadata["rows_read"].value == 2 and str(extracts / "Activities.csv") in metadata["source"].value


def test_the_setting_in_the_environment_reads_them_too_and_unset_is_the_sample_day(monkeypatch, extracts,
                                                                                      shipped_sample_days):
    assert settings.extract_dir() is None and SfmcResource().sample_folder() == shipped_sample_days["first_day"]
    monkeypatch.setenv(EXTRACT_DIR_ENV, str(extracts))
    assert settings.extract_dir() == extracts and SfmcResource().sample_folder() == extracts


def test_a_missing_folder_names_the_setting_the_folder_and_the_fix(project_env_file, tmp_path):
    missing = tmp_path / "nowhere"
    project_env_file.write_text(f"{EXTRACT_DIR_ENV}={missing}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as raised:
        settings.extract_dir()
    message = str(raised.value)
    assert f"{EXTRACT_DIR_ENV}='{missing}'" in message and "is not a folder" in message
    assert "unset it to read the shipped sample data" in message
    assert message in step_failures(_materialize(tmp_path / "storage"))["activities"]


def test_a_configured_extension_without_its_csv_names_the_file(project_env_file, tmp_path):
    folder = tmp_path / "partial"
    folder.mkdir()
    project_env_file.write_text(f"{EXTRACT_DIR_ENV}={folder}\n", encoding="utf-8")
    result = _materialize(tmp_path / "storage")
    message = step_failures(result)["activities"]
    assert f"{EXTRACT_DIR_ENV} names {folder}" in message and "expected Activities.csv there" in message
    assert f"unset {EXTRACT_DIR_ENV} to read the shipped sample data" in message
    events = [e.event_type_value for e in result.all_events]
    assert "STEP_UP_FOR_RETRY" not in events  # a setting to fix, not a transient failure


def test_two_different_folders_in_env_file_and_environment_are_refused(project_env_file, monkeypatch, extracts,
                                                                      tmp_path):
    project_env_file.write_text(f"{EXTRACT_DIR_ENV}={extracts}\n", encoding="utf-8")
    monkeypatch.setenv(EXTRACT_DIR_ENV, str(tmp_path))
    with pytest.raises(ConfigurationError, match=f"{EXTRACT_DIR_ENV}=.* in this process's environment, but"):
        settings.extract_dir()
    monkeypatch.setenv(EXTRACT_DIR_ENV, str(extracts))  # the same folder in both: fine
    assert settings.extract_dir() == extracts


def test_a_relative_folder_is_read_from_the_project_root(project_env_file):
    project_env_file.write_text(f"{EXTRACT_DIR_ENV}=data/sample/next_day\n", encoding="utf-8")
    assert settings.extract_dir() == settings.REPO_ROOT / "data" / "sample" / "next_day"
