"""``sfmc-pipeline check``: every connection the pipeline needs, checked the way the pipeline uses it.

With the current environment (the variables of docs/configuration.md, "Modes"; the resources' ``mode`` properties
decide embedded/sfmc and local/salesforce) and the pipeline config:

* ``config``: the pipeline config loads (its error is the loader's message);
* ``storage``: the storage directory is writable (or can be created by the first run);
* ``SFMC``: the mode; in sfmc mode a token is requested. Then each configured Data Extension is
  probed (``source.probe``: one row read, its row count, its fields against the configured columns:
  a configured column it does not serve fails the line, fields not in the config are listed), or in
  embedded mode the sample file it would read is named with its rows and checked the same way;
* ``Salesforce``: the mode; in salesforce mode a login names the org (id and, when readable, name),
  each destination's sink preflight runs against the object's describe, and the daily API usage is
  read (``limits/`` DailyApiRequests, else the ``Sforce-Limit-Info`` header); the username-password
  flow gets a warning (Salesforce ends it on 2027-02-20) with the migration steps. In local mode the
  local SQLite target is named, and the preflight runs on an in-memory copy of it, set up as the sync
  sets it up. Both modes call the sync's own preflight (``preflight_destination``), so a field the run
  would refuse is FAILED here.

One line per check: ``OK     <what>: <detail>``, ``WARN   <what>: <detail> -> <what to do>`` (works
today, needs action) or ``FAILED <what>: <reason> -> <fix>`` (a preflight with several problems gives
one line per problem). A failed check does not stop the others; a check that needs a failed one is
reported FAILED as skipped, with the reason. Every line goes through the redaction of the secret
environment values and of the clients' own tokens. Exit status 0 only when no line is FAILED.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sfmc_pipeline import settings
from sfmc_pipeline.cli.config_file import chosen_config
from sfmc_pipeline.config import (
    PipelineConfig,
    PipelineConfigError,
    load_pipeline_config,
)
from sfmc_pipeline.config.models import (
    DestinationConfig,
    PipelineSettings,
    SyncSettings,
)
from sfmc_pipeline.crm.local_setup import prepare_local_target
from sfmc_pipeline.crm.local_target import LocalCrmTarget
from sfmc_pipeline.crm.preflight import PreflightError, preflight_destination
from sfmc_pipeline.crm.status_format import EXITED, IN_SEGMENT
from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.defs.assets.crm import local_db_path
from sfmc_pipeline.defs.resources.salesforce import SalesforceResource
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.errors import ApiError, ConfigurationError
from sfmc_pipeline.governance.lineage import destination_flows
from sfmc_pipeline.governance.policies import split
from sfmc_pipeline.salesforce.login import (
    MIGRATION_STEPS,
    PASSWORD,
    PASSWORD_FLOW_WARNING,
)
from sfmc_pipeline.salesforce.rest import DEFAULT_API_VERSION

EXIT_OK = 0
EXIT_FAILED = 1

# A check should answer quickly: one retry of a transient failure, not the pipeline's five.
TIMEOUT_SECONDS = 20.0
MAX_RETRIES = 1
BACKOFF_SECONDS = 1.0

SFMC_ENV = ("SFMC_CLIENT_ID", "SFMC_CLIENT_SECRET", "SFMC_AUTH_BASE_URI")

AGAIN = "then run `sfmc-pipeline check` again"


@dataclass(frozen=True)
class CheckLine:
    what: str
    detail: str  # OK: what was found; WARN / FAILED: the reason
    fix: str | None = None  # None for OK
    warning: bool = False  # WARN: works today, but needs action (not a failure)

    @property
    def ok(self) -> bool:
        return self.fix is None or self.warning

    def render(self) -> str:
        if self.fix is None:
            return f"OK     {self.what}: {self.detail}"
        if self.warning:
            return f"WARN   {self.what}: {self.detail} -> {self.fix}"
        return f"FAILED {self.what}: {self.detail} -> {self.fix}"


class Report:
    """Collects the lines and prints each one, redacted, as soon as it is known."""

    def __init__(self, out: Callable[[str], None], redact: Callable[[str], str]):
        self.lines: list[CheckLine] = []
        self._out = out
        self._redactors = [redact]

    def add_redactor(self, redact: Callable[[str], str] | None) -> None:
        if redact is not None:
            self._redactors.append(redact)

    def redact(self, text: str) -> str:
        for redact in self._redactors:
            text = redact(text)
        return text

    def add(self, line: CheckLine) -> None:
        self.lines.append(line)
        self._out(self.redact(line.render()))

    def ok(self, what: str, detail: str) -> None:
        self.add(CheckLine(what, detail))

    def failed(self, what: str, reason: str, fix: str) -> None:
        self.add(CheckLine(what, reason, fix))

    def warn(self, what: str, reason: str, action: str) -> None:
        self.add(CheckLine(what, reason, action, warning=True))

    def error(self, what: str, exc: BaseException, fix: str, *, unreachable: str | None = None) -> None:
        """A FAILED line from an exception: its message up to the first sentence of advice is the reason, the
        advice the fix (``fix`` when it gives none). ``unreachable``: the fix when the service did not answer."""
        message = flatten(str(exc)) if isinstance(exc, (ApiError, ConfigurationError)) else (
            f"{type(exc).__name__}: {flatten(str(exc))}")
        reason, advice = split_advice(message)
        if unreachable and isinstance(exc, ApiError) and exc.retryable and (exc.status is None or exc.status >= 429):
            advice = unreachable
        self.failed(what, reason, advice or fix)

    def skipped(self, what: str, because: str, fix: str) -> None:
        self.failed(what, f"skipped, {because}", fix)

    @property
    def all_ok(self) -> bool:
        return all(line.ok for line in self.lines)


def run(*, config_path: Path | None = None, out: Callable[[str], None] | None = None) -> int:
    """Run every check with the current environment; returns the exit status."""
    out = out or (lambda line: print(line, flush=True))
    report = Report(out, settings.secret_redactor())
    path = chosen_config(config_path)
    pipeline = check_config(report, path)
    if pipeline is not None:
        check_policies(report, pipeline)
    storage_dir = check_storage(report)
    check_sfmc(report, pipeline)
    check_salesforce(report, pipeline, storage_dir)
    return EXIT_OK if report.all_ok else EXIT_FAILED


# ---------------------------------------------------------------------------------------------- config, storage


def check_config(report: Report, path: Path) -> PipelineConfig | None:
    try:
        pipeline = load_pipeline_config(path)
    except PipelineConfigError as exc:
        report.failed("config", flatten(str(exc)), f"fix {path} as listed (each entry names the setting), or point "
                      f"--config or {settings.CONFIG_ENV} at another file; {AGAIN}")
        return None
    except Exception as exc:  # noqa: BLE001 - a check reports, it does not crash
        report.error("config", exc, f"check {path} and {settings.CONFIG_ENV}; {AGAIN}")
        return None
    report.ok("config", f"{path}: {len(pipeline.data_extensions)} Data Extension(s), {len(pipeline.segments)} "
              f"segment(s), {len(pipeline.destinations)} destination(s)")
    return pipeline


def check_policies(report: Report, pipeline: PipelineConfig) -> None:
    """Per destination: what labelled data it writes, for which actions, and the exceptions it uses;
    a violation (also a load error) fails the line with the same message the sync refuses with."""
    for dest in pipeline.destinations:
        what = f"policies {dest.name}"
        blocking, allowed = split(pipeline, dest)
        for violation in blocking:
            reason, advice = split_advice(violation.describe(pipeline))
            report.failed(what, reason, advice or f"fix the mapping or the labels; {AGAIN}")
        if blocking:
            continue
        labelled = [f"{flow.field} ({', '.join(flow.labels)})" for flow in destination_flows(pipeline, dest)
                    if flow.labels]
        detail = (f"actions {', '.join(dest.marketing_actions)}; labelled data written: "
                  f"{', '.join(labelled) or 'none'}; no policy refuses it")
        if allowed:
            detail += "; allowed by exception: " + "; ".join(
                f"{a.violation.flow.describe()} ({a.violation.source.label}, policy {a.violation.policy.name}: "
                f"{a.exception.reason})" for a in allowed)
        report.ok(what, detail)


def check_storage(report: Report) -> Path:
    """The storage directory; it is not created here (the first run does that)."""
    base = Path(os.environ.get(settings.STORAGE_ENV) or settings.DEFAULT_STORAGE_DIR).expanduser()
    if not base.exists() and base.parent.is_dir() and os.access(base.parent, os.W_OK | os.X_OK):
        report.ok("storage", f"{base} (does not exist yet: the first run creates it)")
        return base
    try:
        StorageResource(base_dir=str(base)).get_store()
    except Exception as exc:  # noqa: BLE001
        report.error("storage", exc, f"point {settings.STORAGE_ENV} at a writable directory; {AGAIN}")
    else:
        report.ok("storage", f"{base} (writable)")
    return base


# ---------------------------------------------------------------------------------------------- SFMC


def sfmc_resource(sample_dir: Path) -> SfmcResource:
    return SfmcResource(
        **settings.env_settings(settings.SFMC_ENV, as_env_var=False),
        sample_dir=str(sample_dir),
        timeout_seconds=TIMEOUT_SECONDS,
        max_retries=MAX_RETRIES,
        backoff_seconds=BACKOFF_SECONDS,
    )


def check_sfmc(report: Report, pipeline: PipelineConfig | None) -> None:
    extensions = pipeline.data_extensions if pipeline is not None else None
    skip_fix = f"fix the SFMC line above; {AGAIN}"
    try:
        resource = sfmc_resource(settings.sample_data_dir())
        mode = resource.mode
    except ConfigurationError as exc:
        report.error("SFMC", exc, f"set all of {', '.join(SFMC_ENV)} to read from SFMC, or none for the sample data")
        _skip_extensions(report, extensions, "the SFMC settings are not usable", skip_fix)
        return
    page_size = (pipeline.settings if pipeline is not None else PipelineSettings()).page_size
    source = None
    try:
        if mode == "embedded":
            source = resource.get_source(page_size=page_size)
            report.ok("SFMC", f"embedded mode (none of {', '.join(SFMC_ENV)} set): sample extracts in "
                      f"{resource.sample_dir}")
        else:
            try:
                source = resource.get_source(page_size=page_size)
                report.add_redactor(getattr(getattr(source, "transport", None), "redact", None))
                token = source.auth.token()
            except Exception as exc:  # noqa: BLE001
                report.error("SFMC", exc, f"check {', '.join(SFMC_ENV)}; {AGAIN}",
                             unreachable=f"SFMC did not answer: check SFMC_AUTH_BASE_URI and the network; {AGAIN}")
                _skip_extensions(report, extensions, "SFMC did not authenticate", skip_fix)
                return
            account = f", business unit {resource.account_id}" if resource.account_id else ""
            report.ok("SFMC", f"authenticated (client credentials{account}), REST instance {token.rest_instance_url}")
        if extensions is None:
            report.skipped("SFMC Data Extensions", "the pipeline config did not load",
                           f"fix the config line above; {AGAIN}")
            return
        for ext in extensions:
            _probe(report, source, ext, mode, resource.sample_dir)
    finally:
        transport = getattr(source, "transport", None)
        if transport is not None:
            transport.close()


def _probe(report: Report, source, ext, mode: str, sample_dir: str) -> None:
    """One row of the extension: its row count, and its fields against the configured columns (a configured
    column it does not serve fails the line; fields it serves that are not configured are listed)."""
    what = f"SFMC Data Extension {ext.key}"
    try:
        probe = source.probe(ext, newest=False)
    except Exception as exc:  # noqa: BLE001
        fix = (f"restore the sample file or regenerate the samples (python scripts/generate_sample_data.py); {AGAIN}"
               if mode == "embedded" else
               f"check the Data Extension's External Key in the config and the package's Data Extensions: Read "
               f"scope; {AGAIN}")
        report.error(what, exc, fix, unreachable=f"SFMC did not answer: run the check again later; {AGAIN}")
        return
    found = (f"would read {Path(sample_dir) / f'{ext.key}.csv'}, {probe.rows:,} row(s)" if mode == "embedded"
             else f"readable, {probe.rows:,} row(s)")
    columns = probe.columns(ext)
    if columns is None:
        report.ok(what, f"{found} (asset {ext.asset}); its columns are not checked: it has no row to show them")
        return
    unknown, missing = columns
    unknown_text = f"; fields not in the config (not read): {', '.join(unknown)}" if unknown else ""
    if missing:
        report.failed(what, f"{found} (asset {ext.asset}), but configured column(s) {', '.join(missing)} are not "
                      f"among its fields{unknown_text}",
                      f"fix the column names of {ext.key} in the pipeline config, or add the fields to the Data "
                      f"Extension; {AGAIN}")
        return
    report.ok(what, f"{found} (asset {ext.asset}), every configured column served{unknown_text}")


def _skip_extensions(report: Report, extensions, because: str, fix: str) -> None:
    if extensions is None:
        report.skipped("SFMC Data Extensions", because + " (and the pipeline config did not load)", fix)
        return
    for ext in extensions:
        report.skipped(f"SFMC Data Extension {ext.key}", because, fix)


# ---------------------------------------------------------------------------------------------- Salesforce


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


# ---------------------------------------------------------------------------------------------- message helpers


def flatten(text: str) -> str:
    """A multi-line message (``Title:\\n  - problem\\n  - problem``) on one line: ``Title: problem; problem``."""
    lines = [line.strip().removeprefix("- ").strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    out = lines[0]
    for line in lines[1:]:
        out += (" " if out.endswith(":") else "; ") + line
    return out


def split_advice(message: str) -> tuple[str, str | None]:
    """``(reason, advice)``: the message up to its first sentence boundary outside brackets (``". "`` before a
    capital letter, or ``"; "``), and what follows it; ``(message, None)`` when there is no such boundary."""
    depth = 0
    for i, ch in enumerate(message):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        elif depth == 0 and ch in ".;" and message[i + 1 : i + 2] == " ":
            rest = message[i + 2 :].strip()
            if rest and (ch == ";" or rest[0].isupper()):
                return message[:i].strip(), rest.rstrip(".")
    return message.strip().rstrip("."), None
