"""A real PostgreSQL server for tests, in a temporary directory, on a free loopback port.

The server refuses to run as root, so as root it runs as the ``postgres`` user
(Debian's ``postgresql`` package makes it) through ``runuser``; otherwise as the
current user. Durability is switched off (``fsync=off``): a test database is
thrown away with its directory. ``durable=True`` keeps the server's defaults (fsync,
synchronous_commit, full_page_writes on) for benchmarks that measure acked = on disk.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_ROOT = Path("/usr/lib/postgresql")
INSTALL_HINT = "PostgreSQL is not installed: run `make test`, which installs Debian's postgresql"


def find_pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` (15 on Debian bookworm), or initdb on PATH."""
    versions = sorted(
        (p for p in PG_ROOT.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    bin_dir: Path
    durable: bool = False
    root: Path = field(init=False)
    port: int = field(init=False, default=0)
    startup_seconds: float = field(init=False, default=0.0)
    _databases: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fleetcast-pg-"))
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, user="postgres", group="postgres")

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root)
        if proc.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}\n{tail}")

    def start(self) -> PostgresServer:
        began = time.perf_counter()
        data = self.root / "data"
        self._run(
            "initdb",
            "-D",
            str(data),
            "-U",
            "fleetcast",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        self.port = _free_port()
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        options += " -c max_connections=200"
        self._run(
            "pg_ctl",
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "30",
            "start",
        )
        self.startup_seconds = time.perf_counter() - began
        return self

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the server's processes so far (Linux ``/proc``): the
        postmaster and its children, exited ones included."""
        postmaster = int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        ticks = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # the process ended meanwhile
                continue
            if int(entry.name) == postmaster or int(fields[1]) == postmaster:
                ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        return ticks / os.sysconf("SC_CLK_TCK")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://fleetcast@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        self._databases += 1
        name = f"test_{os.getpid()}_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            if (self.root / "data" / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
