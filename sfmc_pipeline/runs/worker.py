"""Which process runs a run, and whether it still does.

A run records its worker on itself (tag ``sfmc_pipeline/run_worker``: host, pid and, on Linux, the
boot id and the process's start time) when its steps start executing, whoever launched it (the
daemon's queue, the UI, ``dg launch``). The run launcher's health check (``runs/launcher.py``) reads
it back: on the same host, the run is alive exactly while that process exists. The boot id and
start time make the identity exact: a pid reused after a restart is not the worker.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

RUN_WORKER_TAG = "sfmc_pipeline/run_worker"


@dataclass(frozen=True)
class RunWorker:
    host: str
    pid: int
    boot_id: str | None = None  # Linux: /proc/sys/kernel/random/boot_id
    start_ticks: int | None = None  # Linux: the process's start time, in clock ticks since boot

    @classmethod
    def current(cls) -> "RunWorker":
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _boot_id(), _start_ticks(pid))

    def to_tag(self) -> dict[str, str]:
        return {RUN_WORKER_TAG: json.dumps(asdict(self), sort_keys=True)}

    @classmethod
    def from_tags(cls, tags) -> "RunWorker | None":
        """The worker a run recorded, or None when it recorded none (or something unreadable)."""
        try:
            value = json.loads(tags.get(RUN_WORKER_TAG) or "null")
            return cls(**value) if isinstance(value, dict) else None
        except (TypeError, ValueError):
            return None

    def is_on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def is_alive(self) -> bool:
        """Whether this process still exists; only meaningful on its own host (``is_on_this_host``)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, under another user
        if self.boot_id is not None and self.boot_id != _boot_id():
            return False  # the machine restarted since: every process of that boot is gone
        if self.start_ticks is not None:
            stat = _stat_fields(self.pid)
            if stat is None or stat[0] == "Z" or int(stat[19]) != self.start_ticks:
                return False  # gone meanwhile, a zombie, or another process that got the same pid
        return True


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name: [state, ppid, ..., starttime at index 19]."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def _start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None
