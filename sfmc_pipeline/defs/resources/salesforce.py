"""The CRM target resource: the Salesforce org, or the embedded local SQLite target.

Which one is the ``mode`` (shown in the sync metadata); the login settings choose the OAuth flow
(``LoginFlow.choose`` in ``salesforce/auth.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from sfmc_pipeline.crm.local.target import LocalCrmTarget
from sfmc_pipeline.errors import ConfigurationError
from sfmc_pipeline.http import RetrySettings
from sfmc_pipeline.salesforce.login_url import salesforce_base_url
from sfmc_pipeline.salesforce.records import CrmTarget
from sfmc_pipeline.salesforce.rest import SalesforceClient


class SalesforceResource(dg.ConfigurableResource):
    """Salesforce CRM: a connected app (or External Client App) with the api OAuth scope."""

    domain: Optional[str] = Field(default=None, description="My Domain prefix (SALESFORCE_DOMAIN).")
    login_url: Optional[str] = Field(
        default=None, description="Full login base URL, e.g. a sandbox (SALESFORCE_LOGIN_URL)."
    )
    client_id: Optional[str] = Field(default=None, description="Consumer key (SALESFORCE_CLIENT_ID).")
    client_secret: Optional[str] = Field(default=None, description="Consumer secret (SALESFORCE_CLIENT_SECRET).")
    username: Optional[str] = Field(
        default=None,
        description="The user of the JWT bearer flow, or of the username-password flow (SALESFORCE_USERNAME).",
    )
    private_key_file: Optional[str] = Field(
        default=None, description="JWT bearer flow: PEM private key file of the app's certificate "
        "(SALESFORCE_PRIVATE_KEY_FILE)."
    )
    private_key: Optional[str] = Field(
        default=None, description="JWT bearer flow: the PEM private key itself, e.g. from a secret store "
        "(SALESFORCE_PRIVATE_KEY)."
    )
    jwt_audience: Optional[str] = Field(
        default=None, description="JWT bearer flow: the assertion's audience when not the login or test server, e.g. "
        "an Experience Cloud site (SALESFORCE_JWT_AUDIENCE)."
    )
    password: Optional[str] = Field(default=None, description="Username-password flow only (SALESFORCE_PASSWORD).")
    security_token: Optional[str] = Field(
        default=None, description="Appended to the password (SALESFORCE_SECURITY_TOKEN)."
    )
    timeout_seconds: float = Field(default=60.0, description="Timeout of each HTTP request.")
    max_retries: int = Field(default=5, description="Retries of a request on 429, 5xx or connection errors.")
    backoff_seconds: float = Field(default=1.0, description="First retry wait; doubles on each retry.")

    @property
    def mode(self) -> str:
        """``salesforce`` with ``client_id``, a base URL (``domain`` or ``login_url``) and a credential
        (``client_secret``, or a private key for the JWT bearer flow) all set; ``local`` (the local SQLite
        target under the storage directory) with none of the settings set. Setting only some is an error
        naming the missing ones."""
        jwt = bool(self.private_key_file or self.private_key)
        given = {
            "SALESFORCE_DOMAIN or SALESFORCE_LOGIN_URL": bool(self.domain or self.login_url),
            "SALESFORCE_CLIENT_ID": bool(self.client_id),
            "SALESFORCE_CLIENT_SECRET (or SALESFORCE_PRIVATE_KEY_FILE for the JWT bearer flow)":
                bool(self.client_secret) or jwt,
        }
        others = (self.username, self.password, self.security_token, self.jwt_audience)
        if not any(given.values()) and not any(others):
            return "local"
        missing = [name for name, ok in given.items() if not ok]
        if missing:
            raise ConfigurationError(
                f"Salesforce credentials are incomplete: {', '.join(missing)} not set. Set them all to write to "
                "Salesforce, or none to write to the local target."
            )
        return "salesforce"

    def get_target(self, *, api_version: str, local_db: Path) -> CrmTarget:
        if self.mode == "local":
            return LocalCrmTarget(local_db)
        return SalesforceClient(
            base_url=salesforce_base_url(domain=self.domain, login_url=self.login_url),
            client_id=self.client_id,
            client_secret=self.client_secret,
            username=self.username,
            password=self.password,
            security_token=self.security_token,
            private_key_file=self.private_key_file,
            private_key=self.private_key,
            jwt_audience=self.jwt_audience,
            api_version=api_version,
            timeout_seconds=self.timeout_seconds,
            retry=RetrySettings(max_retries=self.max_retries, backoff_seconds=self.backoff_seconds),
        )
