"""A real, throwaway PostgreSQL server (Debian's `postgresql` package) in a temporary folder.

`initdb` and `pg_ctl` refuse to run as root, so as root they run as the unprivileged `postgres` user (made by
the Debian package) through `runuser`; otherwise as the current user. The server listens on 127.0.0.1 on a
free port, keeps its unix socket in its own folder, trusts local connections (user `ocr`), and is stopped
and deleted at the end. `stop()` / `start()` take it down and bring it back on the same port and data.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

from live_server import free_port

USER = "ocr"


def find_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin holding initdb, or None when PostgreSQL is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


class PgServer:
    """One PostgreSQL cluster: `url(db)` for clients, `new_database()` for a fresh database per test."""

    def __init__(self, bin_dir: Path, root: Path, run_as: str | None) -> None:
        self.bin_dir, self.root, self.run_as = bin_dir, root, run_as
        self.data_dir, self.socket_dir, self.log_path = root / "data", root / "socket", root / "server.log"
        self.port = free_port()

    def _run(self, *args: str, timeout: float = 120) -> None:
        prefix = ["runuser", "-u", self.run_as, "--"] if self.run_as else []
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if done.returncode != 0:
            log = self.log_path.read_text() if self.log_path.is_file() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.strip()[-1500:]}\n{log[-1500:]}")

    def init(self) -> None:
        """Create the cluster (trust authentication for user `ocr`, fsync off: test data is disposable)."""
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", USER, "-A", "trust", "-E", "UTF8",
                  "--no-sync")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options,
                  "-w", "-t", "60", "start")

    def stop(self) -> None:
        """Stop the server now (open connections are cut)."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop")

    def running(self) -> bool:
        """Whether the postmaster is up."""
        return (self.data_dir / "postmaster.pid").is_file()

    def url(self, database: str = "postgres") -> str:
        """A `postgresql://` URL for `database` on this server."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "t") -> str:
        """Create an empty database with a unique name; returns its URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _unprivileged_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) exists for PostgreSQL")


@contextmanager
def postgres_server(bin_dir: Path):
    """A started PgServer in a fresh temporary folder; stopped and removed at the end."""
    run_as = _unprivileged_user()
    root = Path(tempfile.mkdtemp(prefix="ocr-pg-"))
    try:
        (root / "socket").mkdir()
        if run_as:
            info = pwd.getpwnam(run_as)
            for path in (root, root / "socket"):
                os.chown(path, info.pw_uid, info.pw_gid)
        server = PgServer(bin_dir, root, run_as)
        server.init()
        server.start()
        try:
            yield server
        finally:
            if server.running():
                server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
