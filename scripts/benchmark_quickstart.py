"""The quickstart's main job, end to end, measured three ways in one run (not a test):

1. the README's command, ``dg launch --job sfmc_pipeline_job``, on a fresh Dagster home and storage
   (what a newcomer waits for after the install: code location load, run worker, every step);
2. the same job executed in this process (``execute_in_process``): the steps' own work;
3. the baseline: the same job with Dagster's multiprocess executor (a process per step), the
   executor the code location would use without choosing one.

Then the next day (``sfmc-pipeline sample next_day``, written to the project's ``.env`` for the runs and
restored afterwards) and an unchanged re-run, with the README command.

    python scripts/benchmark_quickstart.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import dagster as dg

REPO = Path(__file__).resolve().parent.parent
JOB = "sfmc_pipeline_job"
MULTIPROCESS_DEFS = '''
import dagster as dg
from sfmc_pipeline import settings
from sfmc_pipeline.config.loader import load_pipeline_config
from sfmc_pipeline.definitions import build_definitions

defs = build_definitions(load_pipeline_config(settings.config_path()), executor=dg.multiprocess_executor)
'''


def fresh_env(root: Path, name: str, **extra: str) -> dict:
    home, storage = root / name / "home", root / name / "storage"
    home.mkdir(parents=True)
    shutil.copy(REPO / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SFMC_", "SALESFORCE_"))}
    return {**env, "DAGSTER_HOME": str(home), "SFMC_PIPELINE_STORAGE": str(storage), **extra}


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0 or not last_run_succeeded(Path(env["DAGSTER_HOME"])):
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return elapsed


def last_run_succeeded(home: Path) -> bool:
    """The newest run in the instance at ``home`` ended in success (the console shows INFO only)."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs(limit=1)
        return bool(runs) and runs[0].status == dg.DagsterRunStatus.SUCCESS


def in_process(root: Path) -> float:
    env = fresh_env(root, "in_process")
    code = (
        "import time, dagster as dg\n"
        "from sfmc_pipeline.definitions import defs\n"
        "start = time.perf_counter()\n"
        f"result = defs.get_job_def('{JOB}').execute_in_process(instance=dg.DagsterInstance.ephemeral())\n"
        "assert result.success\n"
        "print('SECONDS', time.perf_counter() - start)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    return float(next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("SECONDS")))


@contextmanager
def sample_day(day: str) -> Iterator[None]:
    """The project's .env with the sample day ``day`` (as ``sfmc-pipeline sample`` writes it) while the block runs;
    the file is put back as it was afterwards."""
    path = REPO / ".env"
    saved = path.read_bytes() if path.exists() else None
    subprocess.run(["sfmc-pipeline", "sample", day], cwd=REPO, check=True, capture_output=True)
    try:
        yield
    finally:
        if saved is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(saved)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        launch = ["dg", "launch", "--job", JOB]
        env = fresh_env(root, "readme")
        with sample_day("first_day"):
            first = timed(launch, env)
        with sample_day("next_day"):
            next_day = timed(launch, env)
            again = timed(launch, env)
        steps = in_process(root)
        module = root / "multiprocess_defs.py"
        module.write_text(MULTIPROCESS_DEFS, encoding="utf-8")
        baseline = timed(["dagster", "job", "execute", "-f", str(module), "-j", JOB], fresh_env(root, "multiprocess"))
    rows = [
        ("dg launch --job sfmc_pipeline_job (README), first day, fresh home", first),
        ("  the same job's steps in one process (execute_in_process)", steps),
        ("  baseline: multiprocess executor (a process per step)", baseline),
        ("dg launch, next day (existing/exited, only changes sent)", next_day),
        ("dg launch, next day again (nothing to send)", again),
    ]
    print(f"{'run':68} {'seconds':>8}")
    for label, seconds in rows:
        print(f"{label:68} {seconds:8.1f}")
    print(f"\nREADME command vs multiprocess baseline: {baseline / first:.1f}x faster; "
          f"launch overhead over the steps: {first - steps:.1f} s")


if __name__ == "__main__":
    main()
