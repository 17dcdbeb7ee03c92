"""Pytest fixtures for the fake Salesforce org.

Use from a test module (or a ``conftest.py``) with::

    from sfmc_pipeline_testing.salesforce_fixtures import fake_salesforce  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sfmc_pipeline_testing.salesforce_server import FakeSalesforceServer


@pytest.fixture
def fake_salesforce() -> Iterator[FakeSalesforceServer]:
    """A started :class:`FakeSalesforceServer` (default credentials, API v66.0, 15,000 daily calls) whose Contact and
    Lead describes hold only the standard fields (no custom fields, no records). Stopped after the test."""
    with FakeSalesforceServer() as server:
        yield server


class JwtKey:
    """A test RSA key pair for the JWT bearer flow: ``private_pem`` (PKCS#8 PEM text) signs, ``public_key`` is what the
    fake org verifies with (the certificate uploaded to the connected app)."""

    def __init__(self):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode("ascii")
        self.public_key = key.public_key()

    def write(self, path) -> str:
        """The private key written to ``path`` (a PEM file); returns the path as a string."""
        path.write_text(self.private_pem, encoding="ascii")
        return str(path)


@pytest.fixture(scope="session")
def jwt_key() -> JwtKey:
    """One RSA key pair for the whole session (generating one takes a moment)."""
    return JwtKey()
