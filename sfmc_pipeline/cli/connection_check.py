"""``sfmc-pipeline check``: every connection the pipeline needs, checked the way the pipeline uses it,
with the current environment (the variables of docs/configuration.md, "Modes") and the pipeline config: ``config``
loads, ``storage`` is writable (or can be created by the first run), the policies per destination, then
SFMC (``check_sfmc.py``) and Salesforce (``check_salesforce.py``). A failed check does not stop the
others; a check that needs a failed one is reported FAILED as skipped, with the reason. Exit status 0
only when no line is FAILED (``check_report.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from sfmc_pipeline import settings
from sfmc_pipeline.cli.check_report import AGAIN, Report, flatten, split_advice
from sfmc_pipeline.cli.check_salesforce import check_salesforce
from sfmc_pipeline.cli.check_sfmc import check_sfmc
from sfmc_pipeline.cli.config_file import chosen_config
from sfmc_pipeline.config.loader import PipelineConfigError, load_pipeline_config
from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.governance.lineage import destination_flows
from sfmc_pipeline.governance.policies import split

EXIT_OK = 0
EXIT_FAILED = 1


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
