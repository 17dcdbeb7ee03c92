"""Real Dagster processes for the tests that need them (a daemon, a webserver, the ``dagster`` CLI):
an instance home made from one of the project's instance configs, processes started from the
project's virtualenv with their output in a log file, and polling for state with a bound, whose
failure message quotes the logs. Every process tree a test started is killed when it ends."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

import dagster as dg
import yaml

from sfmc_pipeline.settings import REPO_ROOT

BIN = Path(sys.executable).parent
T = TypeVar("T")


def instance_home(folder: Path, source: Path, overrides: dict | None = None) -> Path:
    """``folder`` holding ``source`` as its ``dagster.yaml``, with ``overrides`` merged into it (nested keys)."""
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    _merge(config, overrides or {})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return folder


def _merge(into: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


class DagsterProcesses:
    """Starts ``dagster*`` commands with ``env`` (each in a session of its own, so killing one kills its code
    servers and run workers too), keeps their logs under ``logs``, and kills whatever is left at ``close``."""

    def __init__(self, logs: Path, env: dict[str, str]):
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = env
        self.started: list[subprocess.Popen] = []

    def start(self, name: str, command: str, *args: str) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "ab") as log:
            process = subprocess.Popen([str(BIN / command), *args], cwd=REPO_ROOT, env=self.env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append(process)
        return process

    def run(self, name: str, command: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run([str(BIN / command), *args], cwd=REPO_ROOT, env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        (self.logs / f"{name}.log").write_text(result.stdout + result.stderr, encoding="utf-8")
        return result

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL the process and everything it started (its session): what a machine's death does to them."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    def output(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-6000:]}"
                         for path in sorted(self.logs.glob("*.log")))

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for process in self.started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            try:  # code servers and run workers left in the session
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()


def wait_for(check: Callable[[], T], what: str, *, timeout: float, logs: Callable[[], str] = lambda: "") -> T:
    """Polls ``check`` until it returns something true, and returns it; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}\n{logs()}")
        time.sleep(0.25)


def run_status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status
