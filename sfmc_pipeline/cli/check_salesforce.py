"""The Salesforce lines of ``sfmc-pipeline check``: the mode; in salesforce mode a login names the org (id
and, when readable, name), each destination's sink preflight runs against the object's describe, and the
daily API usage is read (``limits/`` DailyApiRequests, else the ``Sforce-Limit-Info`` header); the
username-password flow gets a warning with the migration steps. In local mode the local SQLite target is
named, and the preflight runs on an in-memory copy of it, set up as the sync sets it up. Both modes call
the sync's own preflight (``preflight_destination``), so a field the run would refuse is FAILED here.
"""

from __future__ import annotations

from pathlib import Path

from sfmc_pipeline import settings
from sfmc_pipeline.cli.check_report import (
    AGAIN,
    BACKOFF_SECONDS,
    MAX_RETRIES,
    TIMEOUT_SECONDS,
    Report,
    split_advice,
)
from sfmc_pipeline.config.destinations import DestinationConfig, SyncSettings
from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.crm.local.setup import prepare_local_target
from sfmc_pipeline.crm.local.target import LocalCrmTarget
from sfmc_pipeline.crm.preflight import PreflightError, preflight_destination
from sfmc_pipeline.crm.status_format import EXITED, IN_SEGMENT
from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.defs.assets.crm import local_db_path
from sfmc_pipeline.defs.resources.salesforce import SalesforceResource
from sfmc_pipeline.errors import ApiError, ConfigurationError
from sfmc_pipeline.salesforce.auth import (
    MIGRATION_STEPS,
    PASSWORD,
    PASSWORD_FLOW_WARNING,
)
from sfmc_pipeline.salesforce.rest import DEFAULT_API_VERSION


def salesforce_resource() -> SalesforceResource:
    return SalesforceResource(
        **settings.env_settings(settings.SALESFORCE_ENV, as_env_var=False),
        timeout_seconds=TIMEOUT_SECONDS,
        max_retries=MAX_RETRIES,
        backoff_seconds=BACKOFF_SECONDS,
    )


def check_salesforce(report: Report, pipeline: PipelineConfig | None, storage_dir: Path) -> None:
    destinations = pipeline.destinations if pipeline is not None else None
    skip_fix = f"fix the Salesforce line above; {AGAIN}"
    resource = salesforce_resource()
    local_db = local_db_path(DatasetStore(storage_dir))
    try:
        mode = resource.mode
    except ConfigurationError as exc:
        report.error("Salesforce", exc, "set SALESFORCE_CLIENT_ID, SALESFORCE_CLIENT_SECRET and SALESFORCE_DOMAIN "
                     "(or SALESFORCE_LOGIN_URL) to write to Salesforce, or none for the local target")
        _skip_salesforce(report, destinations, "the Salesforce settings are not usable", skip_fix)
        return
    if mode == "local":
        state = "exists" if local_db.exists() else "the first sync creates it"
        report.ok("Salesforce", f"local mode (no SALESFORCE_* variables set): the sync writes the local target "
                  f"{local_db} ({state})")
        if pipeline is None:
            report.skipped("preflight", "the pipeline config did not load", f"fix the config line above; {AGAIN}")
        else:
            check_local_preflight(report, local_db, pipeline)
        report.ok("Salesforce API usage", "not counted: the local target has no daily API allocation")
        return
    api_version = pipeline.sync.api_version if pipeline is not None else DEFAULT_API_VERSION
    try:
        client = resource.get_target(api_version=api_version, local_db=local_db)
    except Exception as exc:  # noqa: BLE001 - e.g. a SALESFORCE_DOMAIN that is not a My Domain
        report.error("Salesforce", exc, f"check SALESFORCE_DOMAIN / SALESFORCE_LOGIN_URL; {AGAIN}")
        _skip_salesforce(report, destinations, "the Salesforce settings are not usable", skip_fix)
        return
    report.add_redactor(client.transport.redact)
    try:
        try:
            org_id = client.target_id.removeprefix("salesforce:")  # logs in
        except Exception as exc:  # noqa: BLE001
            report.error("Salesforce", exc, f"check the SALESFORCE_* variables and the connected app; {AGAIN}",
                         unreachable=f"Salesforce did not answer: check SALESFORCE_DOMAIN / SALESFORCE_LOGIN_URL and "
                         f"the network; {AGAIN}")
            _warn_login_flow(report, client.flow)
            _skip_salesforce(report, destinations, "the Salesforce login failed", skip_fix)
            return
        report.ok("Salesforce", f"org {org_id}{_org_name(client)} at {client.instance_url} ({client.flow} flow, "
                  f"API v{client.api_version})")
        _warn_login_flow(report, client.flow)
        if pipeline is None:
            report.skipped("preflight", "the pipeline config did not load", f"fix the config line above; {AGAIN}")
        else:
            check_preflight(report, client, pipeline)
        check_usage(report, client, (pipeline.sync if pipeline is not None else SyncSettings()).usage_threshold)
    finally:
        client.close()


def _warn_login_flow(report: Report, flow: str) -> None:
    """The username-password flow works until Salesforce ends it: a warning with the date and the way out."""
    if flow == PASSWORD:
        report.warn("Salesforce login", PASSWORD_FLOW_WARNING, MIGRATION_STEPS)


def _org_name(client) -> str:
    try:
        org = client.organization()
    except ApiError as exc:
        code = " ".join(str(part) for part in (f"HTTP {exc.status}" if exc.status else None, exc.code) if part)
        return f" (its name is not readable: {code or 'no answer'})"
    name = org.get("Name")
    kind = ", ".join(str(part) for part in (org.get("OrganizationType"), "sandbox" if org.get("IsSandbox") else None)
                     if part)
    return (f" {name!r}" if name else "") + (f" ({kind})" if kind else "")


def _skip_salesforce(report: Report, destinations, because: str, fix: str) -> None:
    if destinations is None:
        report.skipped("preflight", because + " (and the pipeline config did not load)", fix)
    for dest in destinations or ():
        report.skipped(f"preflight {dest.name}", because, fix)
    report.skipped("Salesforce API usage", because, fix)


def longest_status_values(dest: DestinationConfig) -> dict[str, int]:
    """Status field -> the longest value it can ever be sent: every segment it holds, with the longest status."""
    status = max(len(s) for s in (*IN_SEGMENT, EXITED))
    return {field: sum(len(s) + 1 + status for s in segments) + len(segments) - 1
            for field, segments in dest.status_fields.items()}


def check_preflight(report: Report, target, pipeline: PipelineConfig, *, local: bool = False) -> None:
    """Each destination through the sync's own preflight (``preflight_destination``) on ``target``; ``local``: the
    local target (a snapshot) is first set up the way the sync sets it up (``prepare_local_target``)."""
    columns = {c.name: c for c in pipeline.extension(pipeline.profiles.dataset).columns}
    for dest in pipeline.destinations:
        what = f"preflight {dest.name}"
        try:
            if local:
                prepare_local_target(target, dest, columns)
            _, resolved = preflight_destination(target, dest, longest_status_values(dest), columns)
        except PreflightError as exc:
            for problem in exc.problems:
                reason, advice = split_advice(problem)
                report.failed(what, reason, advice or f"fix the field in Salesforce Setup or the mapping; {AGAIN}")
        except Exception as exc:  # noqa: BLE001
            report.error(what, exc, f"check that the integration user can read {dest.object}; {AGAIN}")
        else:
            where = " in the local target (the sync creates the custom ones)" if local else ""
            report.ok(what, f"{dest.object}{where}: the {len(resolved.api_names)} mapped fields exist, are updateable "
                      f"and fit ({len(dest.status_fields)} status field(s), {len(dest.attribute_map)} attribute(s))")


def check_local_preflight(report: Report, local_db: Path, pipeline: PipelineConfig) -> None:
    """``check_preflight`` on an in-memory copy of the local target (nothing is created or written)."""
    try:
        target = LocalCrmTarget.snapshot(local_db)
    except Exception as exc:  # noqa: BLE001 - e.g. a file that is not a SQLite database
        for dest in pipeline.destinations:
            report.error(f"preflight {dest.name}", exc, f"move {local_db} aside (the next sync creates a new local "
                         f"target); {AGAIN}")
        return
    try:
        check_preflight(report, target, pipeline, local=True)
    finally:
        target.close()


def check_usage(report: Report, client, threshold: float) -> None:
    what = "Salesforce API usage"
    try:
        daily = client.limits()["DailyApiRequests"]
        limit, used, source = int(daily["Max"]), int(daily["Max"]) - int(daily["Remaining"]), "limits/ DailyApiRequests"
    except Exception as exc:  # noqa: BLE001 - fall back to the header the client records on every call
        usage = client.api_usage
        if usage is None:
            report.error(what, exc, "give the integration user the 'View Setup and Configuration' permission (for "
                         f"limits/); {AGAIN}")
            return
        limit, used, source = usage.limit, usage.used, "Sforce-Limit-Info header; limits/ was not readable"
    share = used / limit if limit else 1.0
    numbers = f"{used:,} of {limit:,} daily API requests used in the last 24 hours ({share:.1%}, from {source})"
    if share >= threshold:
        report.failed(what, f"{numbers}: at or above sync.usage_threshold ({threshold:.0%}), so a sync would stop "
                      "before sending", "wait until the org's rolling 24-hour usage falls, or raise "
                      "sync.usage_threshold in the pipeline config")
    else:
        report.ok(what, f"{numbers}; syncs stop at {threshold:.0%} (sync.usage_threshold)")
