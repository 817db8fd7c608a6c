"""A throwaway PostgreSQL cluster on 127.0.0.1 (tests, bench): initdb + postgres.

Debian's server binaries live in /usr/lib/postgresql/<major>/bin (not on PATH).
initdb and the server refuse to run as root, and tests and CI run as root: then
both run as the `postgres` system user the package creates (or `nobody`), in a
folder of their own under the system temp dir (pytest's folders are 0700 root).
The port stays the same across stop()/start(), so clients reconnect to a
restarted server.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.devkit.broker import free_port, wait_for_port

_USER = "terrapin"  # the cluster's superuser (trust auth on 127.0.0.1 only)


def find_bin(name: str) -> str | None:
    """The newest Debian PostgreSQL binary `name` (initdb, postgres), or one on PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_major, reverse=True)
    return found[0] if found else shutil.which(name)


def _major(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def _run_as() -> tuple[list[str], int | None, int | None]:
    """(command prefix, uid, gid) that drops root; nothing when we are not root."""
    if os.geteuid() != 0:
        return [], None, None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return (
                ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"],
                entry.pw_uid,
                entry.pw_gid,
            )
    raise TerrapinError("running as root and there is no `postgres` or `nobody` user for initdb")


class Postgres:
    """One PostgreSQL server with its own data folder; `url(db)` for clients."""

    def __init__(self, *, port: int | None = None, host: str = "127.0.0.1"):
        self.host = host
        self.port = port or free_port(host)
        self.root = Path(tempfile.mkdtemp(prefix="terrapin-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._prefix, uid, gid = _run_as()
        if uid is not None and gid is not None:
            os.chown(self.root, uid, gid)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{_USER}@{self.host}:{self.port}/{dbname}"

    def init(self) -> None:
        initdb = find_bin("initdb")
        if initdb is None:
            raise TerrapinError(
                "PostgreSQL is not installed", hint="apt-get install postgresql (make test does it)"
            )
        result = subprocess.run(
            [
                *self._prefix,
                initdb,
                "-D",
                str(self.data),
                "-U",
                _USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise TerrapinError(f"initdb failed: {(result.stderr or result.stdout).strip()[-400:]}")

    def start(self, timeout: float = 30.0) -> Postgres:
        if not self.data.exists():
            self.init()
        exe = find_bin("postgres")
        if exe is None:
            raise TerrapinError("PostgreSQL is not installed", hint="apt-get install postgresql")
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps writing it
        self.process = subprocess.Popen(
            [
                *self._prefix,
                exe,
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-c",
                f"listen_addresses={self.host}",
                "-c",
                f"unix_socket_directories={self.root}",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=32MB",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            wait_for_port(self.host, self.port, timeout)
            self._wait_ready(timeout)
        except TerrapinError:
            self.stop(kill=True)
            raise TerrapinError(f"postgres did not start: {self.log_tail()}") from None
        return self

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise TerrapinError("postgres accepts no connections") from None
                time.sleep(0.1)

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            # SIGINT is PostgreSQL's "fast shutdown": sessions are cut, data is kept.
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()
