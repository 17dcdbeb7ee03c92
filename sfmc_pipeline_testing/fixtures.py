"""Pytest fixtures for the fake SFMC server (load with ``pytest_plugins = ["sfmc_pipeline_testing.fixtures"]``)."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from sfmc_pipeline_testing.sfmc_server import FakeSfmcServer


def _check_no_internal_errors(server: FakeSfmcServer) -> None:
    if server.errors:
        raise AssertionError(f"the fake SFMC server itself raised: {server.errors!r}")


@pytest.fixture
def fake_sfmc() -> Iterator[FakeSfmcServer]:
    """A started :class:`FakeSfmcServer` with default settings, stopped after the test.

    Teardown fails if the fake itself hit an unexpected exception (a bug in the fake, not the client).
    """
    server = FakeSfmcServer().start()
    try:
        yield server
    finally:
        server.stop()
    _check_no_internal_errors(server)


@pytest.fixture
def fake_sfmc_factory() -> Iterator[Callable[..., FakeSfmcServer]]:
    """A factory ``make(**kwargs) -> started FakeSfmcServer`` for non-default settings
    (e.g. ``account_id``, ``scopes``, ``max_page_size``); every server made is stopped after the test."""
    servers: list[FakeSfmcServer] = []

    def make(**kwargs: Any) -> FakeSfmcServer:
        server = FakeSfmcServer(**kwargs).start()
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()
    for server in servers:
        _check_no_internal_errors(server)
