"""The SFMC lines of ``sfmc-pipeline check``: the mode; in sfmc mode a token is requested. Then each
configured Data Extension is probed (``source.probe``: one row read, its row count, its fields against
the configured columns: a configured column it does not serve fails the line, fields not in the config
are listed), or in embedded mode the sample file it would read is named with its rows and checked the
same way.
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
)
from sfmc_pipeline.config.data_extensions import PipelineSettings
from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.errors import ConfigurationError

SFMC_REQUIRED_ENV = tuple(settings.SFMC_CREDENTIAL_ENV.values())


def sfmc_resource() -> SfmcResource:
    """The resource as a run builds it: the embedded default reads the folder a run would read."""
    return SfmcResource(
        **settings.env_settings(settings.SFMC_ENV, as_env_var=False),
        timeout_seconds=TIMEOUT_SECONDS,
        max_retries=MAX_RETRIES,
        backoff_seconds=BACKOFF_SECONDS,
    )


def check_sfmc(report: Report, pipeline: PipelineConfig | None) -> None:
    extensions = pipeline.data_extensions if pipeline is not None else None
    skip_fix = f"fix the SFMC line above; {AGAIN}"
    try:
        resource = sfmc_resource()
        mode = resource.mode
        folder = resource.sample_folder() if mode == "embedded" else None
    except ConfigurationError as exc:
        report.error("SFMC", exc,
                     f"set all of {', '.join(SFMC_REQUIRED_ENV)} to read from SFMC, or none for the sample data")
        _skip_extensions(report, extensions, "the SFMC settings are not usable", skip_fix)
        return
    page_size = (pipeline.settings if pipeline is not None else PipelineSettings()).page_size
    source = None
    try:
        if mode == "embedded":
            source = resource.get_source(page_size=page_size)
            chosen = f" ({settings.EXTRACT_DIR_ENV})" if settings.extract_dir() else ""
            report.ok("SFMC", f"embedded mode (none of {', '.join(SFMC_REQUIRED_ENV)} set): extracts in "
                      f"{folder}{chosen}")
        else:
            try:
                source = resource.get_source(page_size=page_size)
                report.add_redactor(getattr(getattr(source, "transport", None), "redact", None))
                token = source.auth.token()
            except Exception as exc:  # noqa: BLE001
                report.error("SFMC", exc, f"check {', '.join(SFMC_REQUIRED_ENV)}; {AGAIN}",
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
            _probe(report, source, ext, mode, folder)
    finally:
        transport = getattr(source, "transport", None)
        if transport is not None:
            transport.close()


def _probe(report: Report, source, ext, mode: str, sample_dir: Path | None) -> None:
    """One row of the extension: its row count, and its fields against the configured columns (a configured
    column it does not serve fails the line; fields it serves that are not configured are listed)."""
    what = f"SFMC Data Extension {ext.key}"
    try:
        probe = source.probe(ext, newest=False)
    except Exception as exc:  # noqa: BLE001
        fix = (f"put {ext.key}.csv back in {sample_dir} (the shipped sample: python scripts/generate_sample_data.py); "
               f"{AGAIN}"
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
