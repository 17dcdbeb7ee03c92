"""The CRM target resource: the Salesforce org, or the embedded local SQLite target.

The rule, shown in the sync metadata as ``mode``: with ``client_id``, ``client_secret`` and a
base URL (``domain`` or ``login_url``) all set, the sink writes to Salesforce; with none of them
set, to the local SQLite target under the storage directory. Setting only some is an error
naming the missing ones. With ``username``/``password`` the username-password flow is used,
otherwise client credentials (Salesforce is retiring the password flow).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from sfmc_pipeline.crm.local_target import LocalCrmTarget
from sfmc_pipeline.crm.records import CrmTarget
from sfmc_pipeline.crm.salesforce_client import SalesforceClient, salesforce_base_url
from sfmc_pipeline.transport import ConfigurationError, RetrySettings


class SalesforceResource(dg.ConfigurableResource):
    """Salesforce CRM: a connected app (or External Client App) with the api OAuth scope."""

    domain: Optional[str] = Field(default=None, description="My Domain prefix (SALESFORCE_DOMAIN).")
    login_url: Optional[str] = Field(
        default=None, description="Full login base URL, e.g. a sandbox (SALESFORCE_LOGIN_URL)."
    )
    client_id: Optional[str] = Field(default=None, description="Consumer key (SALESFORCE_CLIENT_ID).")
    client_secret: Optional[str] = Field(default=None, description="Consumer secret (SALESFORCE_CLIENT_SECRET).")
    username: Optional[str] = Field(default=None, description="Username-password flow only (SALESFORCE_USERNAME).")
    password: Optional[str] = Field(default=None, description="Username-password flow only (SALESFORCE_PASSWORD).")
    security_token: Optional[str] = Field(
        default=None, description="Appended to the password (SALESFORCE_SECURITY_TOKEN)."
    )
    timeout_seconds: float = Field(default=60.0, description="Timeout of each HTTP request.")
    max_retries: int = Field(default=5, description="Retries of a request on 429, 5xx or connection errors.")
    backoff_seconds: float = Field(default=1.0, description="First retry wait; doubles on each retry.")

    @property
    def mode(self) -> str:
        given = {
            "SALESFORCE_DOMAIN or SALESFORCE_LOGIN_URL": bool(self.domain or self.login_url),
            "SALESFORCE_CLIENT_ID": bool(self.client_id),
            "SALESFORCE_CLIENT_SECRET": bool(self.client_secret),
        }
        if not any(given.values()) and not (self.username or self.password):
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
            api_version=api_version,
            timeout_seconds=self.timeout_seconds,
            retry=RetrySettings(max_retries=self.max_retries, backoff_seconds=self.backoff_seconds),
        )
