"""The services the tests use: a private Redis server, throwaway PostgreSQL databases.

Each test session starts a ``redis-server`` of its own on a free port and kills it at the
end, so two test runs on one machine never share (or flush) each other's Redis; the
machine's Redis on port 6379 is never touched. PostgreSQL is the machine's, but every
session works in a database of its own that it drops afterwards.

With ``CI=true`` a missing or unreachable service is a test failure; elsewhere the test is
skipped and says why.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest
import redis
import sqlalchemy as sa

from foreman_api.storage.engine import create_engine

POSTGRES_ADMIN_URL = os.environ.get(
    "FOREMAN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(message: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(
    process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait: float = 10
) -> None:
    """Send ``sig`` (SIGKILL after ``wait`` seconds) and wait for the process to exit."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, have the child get SIGTERM when the test process dies, even by SIGKILL.

    Linux sends it when the *thread* that started the child ends, so start servers from a
    thread that outlives them (the main thread, as fixtures do)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    return lambda: libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class RedisServer:
    """A ``redis-server`` on 127.0.0.1 that belongs to this test session alone.

    It keeps nothing on disk (``--save "" --appendonly no``), so ``restart()`` and
    ``stop()`` + ``start()`` bring it back empty on the same port: for tests that inject
    faults. ``fresh_url()`` hands each caller an empty database number of its own.
    """

    DATABASES = 1024

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.log = directory / "redis.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._claimed = 0

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def fresh_url(self) -> str:
        """The URL of a database nobody else in this session has been handed; it is empty."""
        self.ensure_running()
        self._claimed += 1
        if self._claimed >= self.DATABASES:
            raise RuntimeError(f"all {self.DATABASES} databases of the test Redis are handed out")
        url = self.url(self._claimed)
        with redis.Redis.from_url(url) as client:
            client.flushdb()  # our own server: empty after a restart, but make sure
        return url

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start on the port of the last run, or on a free port the first time.

        On Linux the server gets SIGTERM when the calling thread ends: call this from a
        thread that outlives the server, not from a short-lived helper thread."""
        if self.running:
            raise RuntimeError(f"the test Redis on port {self.port} is already running")
        attempts = 1 if self.port else 5  # a free port can be taken before we bind it
        for _ in range(attempts):
            port = self.port or free_port()
            if self._launch(port):
                self.port = port
                return
        raise RuntimeError(f"redis-server did not start:\n{self.output()}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and wait for it to exit."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process)

    def restart(self) -> None:
        """Stop and start again on the same port; the server comes back empty."""
        self.stop()
        self.start()

    def ensure_running(self) -> None:
        """Start the server again if a test stopped it and did not bring it back."""
        if not self.running:
            self.start()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def _launch(self, port: int) -> bool:
        """Start ``redis-server`` on ``port``; True once it answers (and it is this one)."""
        options = {
            "bind": "127.0.0.1",
            "port": str(port),
            "save": "",  # no snapshots and no append-only file: a restart comes back empty
            "appendonly": "no",
            "dir": str(self.directory),
            "logfile": str(self.log),  # appended to, so it keeps every start's lines
            "databases": str(self.DATABASES),
            "daemonize": "no",
        }
        self.process = subprocess.Popen(
            [
                self.binary,
                *(arg for name, value in options.items() for arg in (f"--{name}", value)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent(),
        )
        probe = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    self.process = None
                    return False
                try:
                    # The pid tells our server from one that took the port before it could.
                    if probe.info("server")["process_id"] == self.process.pid:
                        return True
                    break
                except redis.RedisError:
                    time.sleep(0.05)
        finally:
            probe.close()
        self.stop()
        return False


@contextmanager
def private_redis_server(directory: Path) -> Iterator[RedisServer]:
    """A running ``redis-server`` of our own, killed (and waited for) afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed (the tests start a Redis of their own)")
    server = RedisServer(binary, directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextmanager
def throwaway_postgres_database() -> Iterator[str]:
    """Create a PostgreSQL database for this test session and drop it afterwards."""
    admin = create_engine(POSTGRES_ADMIN_URL, pool_size=1)
    name = f"foreman_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        unavailable(
            f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable ({exc.__class__.__name__}: {exc})"
        )
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
