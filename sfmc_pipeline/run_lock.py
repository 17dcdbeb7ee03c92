"""One run at a time writes to one storage directory.

Every step that writes (datasets, segment state, the ledger, CRM sends) holds a *lease* on the
storage directory for as long as it runs. Steps of the same run share the lease (a run's dataset
steps may run in parallel); a step of another run that starts while any step of the holder is
running fails at once, naming the run that holds it. Nothing waits forever and nothing
interleaves: two concurrent syncs can never send the same change twice.

How: ``state/locks/run-<run_id>.lock`` is held with a *shared* ``flock`` by each running step of
that run; ``state/locks/gate`` serialises entering. To enter, a step takes the gate, tries an
*exclusive* non-blocking lock on every other run's file (failing means that run has a live step)
and deletes the files of runs with no live step. The operating system releases a killed
process's locks, so a crash never leaves the storage locked. This works between processes on one
machine (and on file systems with working ``flock``); across machines rely on Dagster's run queue
(see the README), which keeps runs of one deployment from overlapping in the first place.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from sfmc_pipeline.transport import ConfigurationError


class StorageBusy(ConfigurationError):
    """Another run is writing to this storage directory right now."""


@contextmanager
def run_lease(base_dir: Path, run_id: str, step: str) -> Iterator[None]:
    """Hold the storage lease for ``run_id`` while the block runs; ``StorageBusy`` if another run holds it."""
    locks = base_dir / "state" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    mine = locks / f"run-{_safe(run_id)}.lock"
    with open(locks / "gate", "a+") as gate:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            for other in sorted(locks.glob("run-*.lock")):
                if other != mine:
                    _claim_or_refuse(other, base_dir, run_id)
            handle = open(mine, "a+")
            fcntl.flock(handle, fcntl.LOCK_SH)
            _describe(handle, run_id, step)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
    try:
        yield
    finally:
        handle.close()  # releases this step's share of the lease


def _claim_or_refuse(path: Path, base_dir: Path, run_id: str) -> None:
    """Delete ``path`` if no step of its run is alive; raise ``StorageBusy`` if one is."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _read(handle)
            raise StorageBusy(
                f"Storage {base_dir} is being written by run {holder.get('run_id', path.stem[4:])} "
                f"(step {holder.get('step', '?')}, since {holder.get('since', '?')}); run {run_id} did not start "
                "writing, so nothing was interleaved. Only one run writes to a storage directory at a time: wait for "
                "that run to finish (or cancel it), then run again. Under `dagster dev` the run queue makes runs wait "
                "for each other (README: one run at a time)."
            ) from None
        path.unlink()


def _describe(handle: IO[str], run_id: str, step: str) -> None:
    handle.seek(0)
    handle.truncate()
    since = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    handle.write(json.dumps({"run_id": run_id, "step": step, "since": since, "pid": os.getpid()}))
    handle.flush()


def _read(handle: IO[str]) -> dict:
    try:
        data = json.loads(handle.read() or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _safe(run_id: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in run_id)
