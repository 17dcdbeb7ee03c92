"""Shared fixtures: the fake SFMC and Salesforce servers (real HTTP on 127.0.0.1), a fake clock,
a recording sleep, an isolated storage directory, and the sample days read from a fresh copy."""

import pytest

pytest_plugins = ["sfmc_pipeline_testing.fixtures", "sfmc_pipeline_testing.salesforce_fixtures"]


class FakeClock:
    """A monotonic clock the test moves by hand (clients take ``clock=``)."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingSleep:
    """Stands in for ``time.sleep``: records each wait instead of waiting."""

    def __init__(self):
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def sleeps() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture(autouse=True)
def project_env_file(monkeypatch, tmp_path_factory):
    """Every test reads and writes its own project ``.env`` (the sample day's one place), never the
    working tree's, and starts without SFMC_PIPELINE_SAMPLE in its environment."""
    from sfmc_pipeline import settings

    path = tmp_path_factory.mktemp("project") / ".env"
    monkeypatch.setattr(settings, "project_env_file", lambda: path)
    monkeypatch.delenv(settings.SAMPLE_ENV, raising=False)
    return path


@pytest.fixture(autouse=True)
def shipped_sample_days(monkeypatch):
    """The embedded default's sample days are the shipped sample as generated (``shipped_sample.py``), not
    the working tree's ``data/sample``, and no user extract folder (SFMC_PIPELINE_EXTRACT_DIR) is set."""
    from sfmc_pipeline import settings
    from sfmc_pipeline_tests.shipped_sample import SHIPPED_SAMPLE_DAYS

    for day, folder in SHIPPED_SAMPLE_DAYS.items():
        monkeypatch.setitem(settings.SAMPLE_DAYS, day, folder)
    monkeypatch.delenv(settings.EXTRACT_DIR_ENV, raising=False)
    return SHIPPED_SAMPLE_DAYS
