"""One run at a time writes to one storage directory, from its first writing step to its end.

A run takes a lease (``state/locks/run-<run_id>.lock``) with its first writing step and holds it
until it ends, between steps too; steps of the same run share it, a step of another run fails at
once naming the holder. Each live step holds a shared ``flock`` on the file (released if its process
dies); between steps the Dagster instance says whether the holder run is still in progress, so the
lease holds whatever executor runs the steps. ``state/locks/gate`` serialises entering and leaving.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator, Optional

from sfmc_pipeline.errors import ConfigurationError

ASSET_JOB = "__ASSET_JOB"  # the job Dagster runs a hand-picked set of assets in (the UI's Materialize)

RunInProgress = Callable[[str], Optional[bool]]
"""Whether a run has not finished yet: True / False, or None when the run is unknown."""


class StorageBusy(ConfigurationError):
    """Another run is writing to this storage directory, or holds it between its steps."""


@contextmanager
def run_lease(base_dir: Path, run_id: str, step: str, *, job: str | None = None,
              run_in_progress: RunInProgress | None = None) -> Iterator[None]:
    """Hold the storage lease for ``run_id`` while the block runs, and for the rest of the run as far as
    ``run_in_progress`` tells; ``StorageBusy`` if another run holds it."""
    locks = base_dir / "state" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    mine = locks / f"run-{_safe(run_id)}.lock"
    with open(locks / "gate", "a+") as gate:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            for other in sorted(locks.glob("run-*.lock")):
                if other != mine:
                    _claim_or_refuse(other, base_dir, run_id, run_in_progress)
            handle = open(mine, "a+")
            fcntl.flock(handle, fcntl.LOCK_SH)
            token = uuid.uuid4().hex
            try:
                _describe(handle, run_id, job, add={"token": token, "step": step, "since": _now(), "pid": os.getpid()})
            except BaseException:
                handle.close()
                raise
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
    try:
        yield
    finally:
        try:
            with open(locks / "gate", "a+") as gate:
                fcntl.flock(gate, fcntl.LOCK_EX)  # released when the file closes
                _describe(handle, run_id, job, remove=token)
        except OSError:
            pass  # the file only informs a refusal; this step's share of the lease is released below
        finally:
            handle.close()  # releases this step's share of the lease


def _claim_or_refuse(path: Path, base_dir: Path, run_id: str, run_in_progress: RunInProgress | None) -> None:
    """Delete ``path`` if its run neither has a live step nor is in progress; raise ``StorageBusy`` if it has."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(handle)
            steps = "; ".join(f"step {s.get('step', '?')}, since {s.get('since', '?')}" for s in _steps(holder))
            raise StorageBusy(
                f"Storage {base_dir} is being written by {_holder(holder, path)} ({steps or 'step ?'}); "
                + _refusal(run_id)
            ) from None
        holder = _read(handle)
        holder_id = holder.get("run_id") or path.stem[4:]
        if run_in_progress is not None and run_in_progress(holder_id):
            last = holder.get("last_step") if isinstance(holder.get("last_step"), dict) else {}
            wrote = f"its last writing step, {last['step']}, ended {last.get('until', '?')}" if last.get("step") else \
                "no step of it is writing right now"
            raise StorageBusy(
                f"Storage {base_dir} is held by {_holder(holder, path)}, which has not finished ({wrote}; a run holds "
                "the storage from its first writing step to its end); " + _refusal(run_id)
                + " If that run is not running any more (its process died), run monitoring marks it failed, or "
                "terminate it in the UI (Runs, the run, Terminate); either frees the storage."
            )
        path.unlink()


def _holder(holder: dict, path: Path) -> str:
    run = f"run {holder.get('run_id', path.stem[4:])}"
    job = holder.get("job")
    if job == ASSET_JOB:
        return f"{run} (assets materialized from the UI, {ASSET_JOB})"
    return f"{run} (job {job})" if job else run


def _refusal(run_id: str) -> str:
    return (
        f"run {run_id} did not start writing, so nothing was interleaved. Only one run writes to a storage "
        "directory at a time: wait for that run to finish (or cancel it), then run again. Runs launched through "
        "the daemon's run queue wait for each other instead (docs/operations.md: One run at a time)."
    )


def _describe(handle: IO[str], run_id: str, job: str | None, *, add: dict | None = None,
              remove: str | None = None) -> None:
    """Rewrite the run's file (under the gate): its live steps, plus ``add``, minus the entry ``remove`` (which
    becomes the run's last step)."""
    holder = _read(handle)
    steps = []
    last = holder.get("last_step")
    for entry in _steps(holder):
        if entry.get("token") == remove:
            last = {"step": entry.get("step"), "since": entry.get("since"), "until": _now()}
        elif _alive(entry.get("pid")):
            steps.append(entry)
    if add is not None:
        steps.append(add)
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"run_id": run_id, "job": job or holder.get("job"), "steps": steps, "last_step": last}))
    handle.flush()


def _read(handle: IO[str]) -> dict:
    handle.seek(0)
    try:
        data = json.loads(handle.read() or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _steps(holder: dict) -> list[dict]:
    """The steps listed in a run's file (one ``step`` entry in files written before steps were listed)."""
    steps = holder.get("steps", [holder] if "step" in holder else [])
    return [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []


def _alive(pid) -> bool:
    """False only for a process id that is known not to run any more (a killed step's leftover entry)."""
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, but not ours to signal
    return True


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _safe(run_id: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in run_id)
