"""A throwaway PostgreSQL server for the tests of the production instance: Debian's ``postgresql``
package (``.ci/run`` installs it), a cluster made with ``initdb`` in a temporary directory and
started with ``pg_ctl`` on a free port of 127.0.0.1, with password authentication over TCP as in
production. Run as root, the server runs as the ``postgres`` user (PostgreSQL refuses root). The
tests skip, saying why, only when the binaries are not installed."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    username: str
    password: str
    db_name: str

    def env(self) -> dict[str, str]:
        """The ``DAGSTER_PG_*`` variables the production instance reads."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USERNAME": self.username,
                "DAGSTER_PG_PASSWORD": self.password, "DAGSTER_PG_DB": self.db_name}


def postgres_bin() -> Path | None:
    """The newest installed server's binaries (``/usr/lib/postgresql/<version>/bin``), else ``initdb`` on PATH."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]), reverse=True)
    if versions:
        return versions[0].parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres():
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip("PostgreSQL server binaries not installed (Debian: apt-get install -y postgresql; .ci/run does it)")
    server = Postgres("127.0.0.1", _free_port(), "dagster", "pg-test-secret-7f3a", "sfmc_dagster")
    folder = Path(tempfile.mkdtemp(prefix="sfmc-pipeline-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: hand the folder to the postgres user
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    password_file = folder / "password"
    password_file.write_text(server.password, encoding="ascii")
    if as_user:
        os.chown(password_file, pwd.getpwnam("postgres").pw_uid, -1)

    def run(*command: str) -> None:
        result = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        if result.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")

    run(str(binaries / "initdb"), "-D", str(data), "-U", server.username, f"--pwfile={password_file}",
        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
    run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60", "-o",
        f"-p {server.port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", "start")
    try:
        run(str(binaries / "createdb"), "-h", str(folder), "-p", str(server.port), "-U", server.username,
            server.db_name)
        yield server
    finally:
        subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)
