"""A real PostgreSQL 15 server for tests, from Debian's binaries (initdb/pg_ctl), on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    def __init__(self, base: Path | None = None) -> None:
        if not (BIN / "initdb").exists():
            raise RuntimeError(
                f"PostgreSQL server binaries not found in {BIN}: "
                "apt-get install postgresql-15 (or set PG_BIN to their folder)"
            )
        # Its own folder under /tmp: pytest's tmp folders are private to root, and the
        # server may run as another user.
        self.base = base or Path(tempfile.mkdtemp(prefix="wap-pg-"))
        self.port = free_port()
        self.data = self.base / "pgdata"
        # initdb refuses to run as root: run the server as the `postgres` system user then.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self.as_user, *args], capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> PostgresServer:
        self.base.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            shutil.chown(self.base, "postgres", "postgres")
            self.base.chmod(0o755)
        self._run(str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.base / "log"), "-w", "start")
        return self

    def restart(self) -> None:
        """Stop the server (fast: open sessions are ended) and start it again on the same port."""
        # The same options as at start (pg_ctl keeps them in postmaster.opts); the log file again,
        # or the server would hold this process's pipes open.
        log = str(self.base / "log")
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", log, "-m", "fast", "-w", "restart")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(
                [*self.as_user, str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                capture_output=True,
                check=False,
            )
        shutil.rmtree(self.base, ignore_errors=True)
