"""One run at a time writes to one storage directory.

Every step that writes (datasets, segment state, the ledger, CRM sends) holds a *lease* on the
storage directory for as long as it runs. Steps of the same run share the lease (a run's dataset
steps may run in parallel); a step of another run that starts while any step of the holder is
running fails at once, naming the run that holds it. Nothing waits forever and nothing
interleaves: two concurrent syncs can never send the same change twice.

How: ``state/locks/run-<run_id>.lock`` is held with a *shared* ``flock`` by each running step of
that run; ``state/locks/gate`` serialises entering and leaving. To enter, a step takes the gate, tries
an *exclusive* non-blocking lock on every other run's file (failing means that run has a live step)
and deletes the files of runs with no live step. The file lists the steps inside the lease (so a
refusal names the holder's live steps); each step adds itself on entering and removes itself on
leaving. The operating system releases a killed process's locks, so a crash never leaves the storage
locked (a killed step's entry is dropped when the next step of its run enters). This works between
processes on one machine (and on file systems with working ``flock``); across machines rely on Dagster's run queue
(see the README), which keeps runs of one deployment from overlapping in the first place.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import uuid
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
            token = uuid.uuid4().hex
            try:
                _describe(handle, run_id, add={"token": token, "step": step, "since": _now(), "pid": os.getpid()})
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
                _describe(handle, run_id, remove=token)
        except OSError:
            pass  # the list of steps only informs a refusal; the lease itself is released below
        finally:
            handle.close()  # releases this step's share of the lease


def _claim_or_refuse(path: Path, base_dir: Path, run_id: str) -> None:
    """Delete ``path`` if no step of its run is alive; raise ``StorageBusy`` if one is."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(handle)
            steps = "; ".join(f"step {s.get('step', '?')}, since {s.get('since', '?')}" for s in _steps(holder))
            raise StorageBusy(
                f"Storage {base_dir} is being written by run {holder.get('run_id', path.stem[4:])} "
                f"({steps or 'step ?'}); run {run_id} did not start "
                "writing, so nothing was interleaved. Only one run writes to a storage directory at a time: wait for "
                "that run to finish (or cancel it), then run again. Under `dagster dev` the run queue makes runs wait "
                "for each other (README: one run at a time)."
            ) from None
        path.unlink()


def _describe(handle: IO[str], run_id: str, *, add: dict | None = None, remove: str | None = None) -> None:
    """Rewrite the run's file (under the gate): its live steps, plus ``add``, minus the entry ``remove``."""
    steps = [s for s in _steps(_read(handle)) if s.get("token") != remove and _alive(s.get("pid"))]
    if add is not None:
        steps.append(add)
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"run_id": run_id, "steps": steps}))
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
