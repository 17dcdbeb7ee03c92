"""The SFMC source resource: chooses the REST client or the embedded sample data.

The rule, shown in every materialization's metadata as ``source_mode``: when
``client_id``, ``client_secret`` and ``auth_base_uri`` are all set, rows come from the SFMC REST
API; when none is set, from the extract CSVs in ``sample_folder()`` (``SFMC_PIPELINE_EXTRACT_DIR``, else the
sample day). Setting only some of them is an error naming the missing ones (a half-configured tenant must
not silently read sample data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from sfmc_pipeline.errors import ConfigurationError
from sfmc_pipeline.http import RetrySettings
from sfmc_pipeline.settings import (
    EXTRACT_DIR_ENV,
    SFMC_CREDENTIAL_ENV,
    extract_dir,
    sample_data_dir,
)
from sfmc_pipeline.sfmc.embedded_source import EmbeddedSampleSource
from sfmc_pipeline.sfmc.rest_source import SfmcRestSource
from sfmc_pipeline.sfmc.source import DataExtensionSource

_CREDENTIALS = SFMC_CREDENTIAL_ENV


class SfmcResource(dg.ConfigurableResource):
    """Salesforce Marketing Cloud: an installed package's Server-to-Server API integration."""

    client_id: Optional[str] = Field(default=None, description="Installed package client id (SFMC_CLIENT_ID).")
    client_secret: Optional[str] = Field(
        default=None, description="Installed package client secret (SFMC_CLIENT_SECRET)."
    )
    auth_base_uri: Optional[str] = Field(
        default=None,
        description="Tenant auth base URI, e.g. https://mcXXXX.auth.marketingcloudapis.com/ (SFMC_AUTH_BASE_URI).",
    )
    account_id: Optional[str] = Field(default=None, description="Optional business unit MID (SFMC_ACCOUNT_ID).")
    timeout_seconds: float = Field(default=30.0, description="Timeout of each HTTP request.")
    max_retries: int = Field(default=5, description="Retries of a request on 429, 5xx or connection errors.")
    backoff_seconds: float = Field(default=1.0, description="First retry wait; doubles on each retry.")
    sample_dir: Optional[str] = Field(
        default=None,
        description="Embedded default: folder with <external key>.csv extracts. Unset: SFMC_PIPELINE_EXTRACT_DIR, "
        "else the sample day chosen in the project's .env (SFMC_PIPELINE_SAMPLE), read when a run starts.",
    )

    def sample_folder(self) -> Path:
        """The embedded default's folder (see ``_embedded_folder``)."""
        return self._embedded_folder()[0]

    def _embedded_folder(self) -> tuple[Path, str | None]:
        """``sample_dir``, else the user's extract folder (``settings.extract_dir``), else the sample day's
        (``settings.sample_data_dir``); with the environment variable that chose a user's folder."""
        if self.sample_dir:
            return Path(self.sample_dir), None
        chosen = extract_dir()
        if chosen is not None:
            return chosen, EXTRACT_DIR_ENV
        return sample_data_dir(), None

    @property
    def mode(self) -> str:
        """``"sfmc"`` or ``"embedded"``, by the rule in the module docstring."""
        given = {name for name in _CREDENTIALS if getattr(self, name)}
        if not given:
            return "embedded"
        if len(given) < len(_CREDENTIALS):
            missing = ", ".join(env for name, env in _CREDENTIALS.items() if name not in given)
            raise ConfigurationError(
                f"SFMC credentials are incomplete: {missing} not set. Set all of SFMC_CLIENT_ID, "
                "SFMC_CLIENT_SECRET and SFMC_AUTH_BASE_URI to read from SFMC, or none to use the sample data."
            )
        return "sfmc"

    def get_source(self, page_size: int = 2500, *, max_retries: int | None = None,
                   concurrency: int = 4) -> DataExtensionSource:
        """The source for this configuration; ``page_size`` and ``concurrency`` (rowset pages fetched
        at once, ``settings.concurrent_page_reads``) come from the pipeline config, ``max_retries``
        overrides the retries per request (the change sensor keeps its ticks short)."""
        if self.mode == "embedded":
            folder, setting = self._embedded_folder()
            return EmbeddedSampleSource(folder, page_size=page_size, setting=setting)
        return SfmcRestSource(
            client_id=self.client_id,
            client_secret=self.client_secret,
            auth_base_uri=self.auth_base_uri,
            account_id=self.account_id,
            page_size=page_size,
            concurrency=concurrency,
            timeout_seconds=self.timeout_seconds,
            retry=RetrySettings(
                max_retries=self.max_retries if max_retries is None else max_retries,
                backoff_seconds=self.backoff_seconds,
            ),
        )
