"""A throwaway PostgreSQL server for the tests: initdb in a temp dir, one server per run, one database per test.

PostgreSQL will not run as root, so when the tests are root the server runs as the `postgres` system user on a
directory handed over to it. Durability is switched off (fsync, synchronous commit, full-page writes): the data
is thrown away at the end and the tests only need the server's SQL and locking behaviour.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

START_TIMEOUT_S = 30.0


def find_bin_dir() -> Path | None:
    """Where initdb and postgres live: $JIAOYING_PG_BIN, then the PATH, then Debian's versioned directories."""
    candidates = [os.environ.get("JIAOYING_PG_BIN", "")]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))  # past /usr/local/bin symlinks
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "postgres").is_file():
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user() -> dict[str, Any]:
    """Popen arguments that drop root to the `postgres` user; nothing when the tests already run unprivileged."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("postgres")
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


@dataclass
class PostgresServer:
    """A running server on 127.0.0.1:<port>; `create_database()` gives each test its own empty database."""

    bin_dir: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="jy-pg-")))
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    migrated: str | None = None  # a database the migrations ran on, which each test's database copies

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        become = _as_server_user()
        self.root.chmod(0o755)  # mkdtemp makes it 0700; the server user must reach its data inside
        for d in (self.data_dir, self.root / "socket"):
            d.mkdir(mode=0o700)
        self.log_file.touch()
        if become:
            for p in (self.data_dir, self.root / "socket", self.log_file):
                os.chown(p, become["user"], become["group"])
        subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **become,
        )
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.bin_dir / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root / "socket"),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the test run must not reach the server before we stop it
                **become,
            )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}:\n{self.log_file.read_text()}")
            if self._postmaster_status() == "ready":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres not accepting connections after {START_TIMEOUT_S} s")
            time.sleep(0.05)

    def _postmaster_status(self) -> str:
        """The server writes "ready" on line 8 of postmaster.pid once it accepts connections (pg_ctl waits on it)."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return ""
        return lines[7].strip() if len(lines) > 7 else ""

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user="postgres", database="postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create_database(self, template: str = "template1") -> str:
        """A new database, a copy of `template` (by default an empty one); returns its URL."""
        name = f"jy_{next(self._names)}"
        # copying the files beats writing them through the WAL for a database this small
        await self._admin(f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY = FILE_COPY")
        return self.url(name)

    async def drop_database(self, url: str) -> None:
        """Drop a test's database, even if a process it started still holds a connection."""
        name = url.rsplit("/", 1)[1]
        await self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        """Stop at once (the data is thrown away, so no checkpoint) and remove the directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # PostgreSQL's immediate shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)
