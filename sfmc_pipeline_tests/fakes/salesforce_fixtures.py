"""Pytest fixtures for the fake Salesforce org.

Use from a test module (or a ``conftest.py``) with::

    from sfmc_pipeline_tests.fakes.salesforce_fixtures import fake_salesforce  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sfmc_pipeline_tests.fakes.salesforce_server import FakeSalesforceServer


@pytest.fixture
def fake_salesforce() -> Iterator[FakeSalesforceServer]:
    """A started :class:`FakeSalesforceServer` (default credentials, API v66.0, 15,000 daily calls) whose Contact and
    Lead describes hold only the standard fields (no custom fields, no records). Stopped after the test."""
    with FakeSalesforceServer() as server:
        yield server
