"""Database outages: the API answers 503 (never internals) and recovers; the SDK retries them.

The PostgreSQL outage is real: the API reaches its (throwaway) database through a TCP relay
in this test that can be cut and restored, so the machine's PostgreSQL and its other users
are never disturbed. SQLite's outage is a write lock held by another connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg.transaction
import httpx
import psycopg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from foreman_api.app import create_app
from foreman_api.auth import issue_key
from foreman_api.errors import DatabaseOutcomeUnknown, DatabaseUnavailable
from foreman_api.outages import database_outage
from foreman_api.settings import Settings
from foreman_api.storage import tables
from foreman_api.storage.engine import create_engine
from foreman_api.storage.migrate import upgrade
from foreman_worker import shutdown
from foreman_worker.client import AsyncForemanClient, ForemanClient, RetryPolicy
from tests.services import throwaway_postgres_database
from tests.test_client import (
    CASES,
    KEY,
    RUN_ID,
    TASK_ID,
    Case,
    FakeApi,
    data_json,
    error,
    run_json,
    task_json,
)

INTERNALS = ("psycopg", "sqlite", "select", "insert", "traceback", "127.0.0.1", "5432")

# ---- a TCP relay that can be cut ---------------------------------------------------------


class TcpRelay:
    """Relays 127.0.0.1:<port> to ``target``. ``cut()`` drops every relayed connection and
    closes new ones at once (the database is "gone"); ``restore()`` relays again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._cut:
                    _close(client, upstream)
                    continue
                self._open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with self._lock:
            self._open -= {source, sink}
        _close(source, sink)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            dropped, self._open = self._open, set()
        _close(*dropped)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self.cut()
        self._listener.close()


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


# ---- the API on PostgreSQL, through the relay ---------------------------------------------


@dataclass
class RelayedApi:
    client: TestClient
    engine: sa.Engine  # the app's: through the relay
    direct: sa.Engine  # the test's own: straight to PostgreSQL
    relay: TcpRelay
    headers: dict[str, str]

    def runs(self) -> int:
        with self.direct.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(tables.runs)).scalar_one()
            )


@pytest.fixture(scope="module")
def relayed_database() -> Iterator[tuple[str, sa.Engine, TcpRelay, str]]:
    with throwaway_postgres_database() as url:
        direct = create_engine(url, pool_size=2)
        upgrade(direct)
        key, _ = issue_key(
            direct, env="dev", org_id="outage", name="t", permissions=["*"], rate_limit="unlimited"
        )
        target = direct.url
        relay = TcpRelay((target.host or "127.0.0.1", target.port or 5432))
        relayed = target.set(host="127.0.0.1", port=relay.port).render_as_string(
            hide_password=False
        )
        try:
            yield relayed, direct, relay, key
        finally:
            relay.close()
            direct.dispose()


@pytest.fixture(params=[0, 60], ids=["key-lookup-fails", "key-cached"])
def relayed_api(
    relayed_database: tuple[str, sa.Engine, TcpRelay, str], request: pytest.FixtureRequest
) -> Iterator[RelayedApi]:
    url, direct, relay, key = relayed_database
    relay.restore()
    engine = create_engine(url, pool_size=4)
    settings = Settings(database_url=url, key_cache_seconds=request.param)
    client = TestClient(create_app(settings, engine=engine), raise_server_exceptions=False)
    try:
        yield RelayedApi(client, engine, direct, relay, {"Authorization": f"Bearer {key}"})
    finally:
        relay.restore()
        client.close()
        engine.dispose()


def assert_unavailable(response: httpx.Response, code: str = "database_unavailable") -> None:
    assert response.status_code == (504 if code == "database_outcome_unknown" else 503), (
        response.text
    )
    body = response.json()
    assert set(body) == {"error", "code", "details"}
    assert (body["code"], body["details"]) == (code, [])
    assert response.headers["Retry-After"] == "1"
    assert not any(word in response.text.lower() for word in INTERNALS), response.text


def test_postgres_outage_is_503_and_the_api_recovers(relayed_api: RelayedApi) -> None:
    api = relayed_api
    run = api.client.post("/api/v1/runs", json={"inputData": {}}, headers=api.headers)
    assert run.status_code == 201
    run_id = run.json()["id"]
    before = api.runs()

    api.relay.cut()
    requests: list[tuple[str, str, Any]] = [
        ("POST", "/api/v1/runs", {"inputData": {"during": "outage"}}),
        ("GET", f"/api/v1/runs/{run_id}", None),
        ("PATCH", f"/api/v1/runs/{run_id}", {"metadata": {"x": 1}}),
        ("POST", "/api/v1/tasks", {"runId": run_id, "type": "t"}),
        ("GET", f"/api/v1/tasks?runId={run_id}", None),
        ("POST", f"/api/v1/runs/{run_id}/data", {"key": "k", "value": 1}),
    ]
    for method, path, body in requests * 2:  # pooled connections die first, then new ones
        assert_unavailable(api.client.request(method, path, json=body, headers=api.headers))
    health = api.client.get("/health")
    assert (health.status_code, health.json()["database"]) == (503, "unavailable")
    assert api.runs() == before  # nothing was written

    api.relay.restore()  # the very next request works: no restart, no warm-up
    again = api.client.post("/api/v1/runs", json={"inputData": {}}, headers=api.headers)
    assert again.status_code == 201, again.text
    assert api.client.get(f"/api/v1/runs/{run_id}", headers=api.headers).status_code == 200
    assert api.client.get("/health").status_code == 200
    assert api.runs() == before + 1


def test_connection_lost_during_commit_is_504_outcome_unknown(
    relayed_api: RelayedApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = relayed_api
    assert api.client.get("/api/v1/runs", headers=api.headers).status_code == 200  # warm up

    # /runs is served on the request path's asyncpg pool: drop the connection of a write
    # transaction as it commits (that connection alone, as when the pool had only it).
    commit = asyncpg.transaction.Transaction.commit

    async def cut_before_commit(transaction: asyncpg.transaction.Transaction) -> None:
        if not transaction._readonly:
            transaction._connection.terminate()
        await commit(transaction)

    with monkeypatch.context() as patched:
        patched.setattr(asyncpg.transaction.Transaction, "commit", cut_before_commit)
        lost = api.client.post("/api/v1/runs", json={"inputData": {}}, headers=api.headers)
    assert_unavailable(lost, "database_outcome_unknown")
    api.relay.restore()
    assert api.client.post("/api/v1/runs", json={"inputData": {}}, headers=api.headers).is_success


# ---- SQLite ------------------------------------------------------------------------------


@pytest.fixture
def sqlite_api(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Path]]:
    path = tmp_path / "foreman.db"
    url = f"sqlite:///{path}"
    engine = create_engine(url, pool_size=2)
    upgrade(engine)
    key, _ = issue_key(
        engine, env="dev", org_id="org", name="t", permissions=["*"], rate_limit="unlimited"
    )

    def short_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=100")  # not 30 s: keep the test short

    sa.event.listen(engine, "connect", short_busy_timeout)
    engine.dispose()
    # Not 30 s: keep the test short (the request path's own wait for the write lock).
    settings = Settings(database_url=url, key_cache_seconds=60, sqlite_lock_timeout=0.2)
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as client:
        yield client, {"Authorization": f"Bearer {key}"}, path
    engine.dispose()


def test_sqlite_locked_past_its_busy_timeout_is_503(
    sqlite_api: tuple[TestClient, dict[str, str], Path],
) -> None:
    client, headers, path = sqlite_api
    run = client.post("/api/v1/runs", json={"inputData": {}}, headers=headers)
    assert run.status_code == 201
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        assert_unavailable(client.post("/api/v1/runs", json={"inputData": {}}, headers=headers))
        # readers are not blocked by a writer (WAL)
        assert client.get(f"/api/v1/runs/{run.json()['id']}", headers=headers).status_code == 200
    finally:
        locker.rollback()
        locker.close()
    assert client.post("/api/v1/runs", json={"inputData": {}}, headers=headers).status_code == 201


def test_other_database_errors_stay_500_without_internals(
    sqlite_api: tuple[TestClient, dict[str, str], Path],
) -> None:
    client, headers, path = sqlite_api
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE run_data RENAME TO run_data_gone")  # a bug, not an outage
    response = client.get(f"/api/v1/runs/{RUN_ID}/data", headers=headers)
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal server error",
        "code": "internal_error",
        "details": [],
    }


def _wrapped(
    orig: Exception, kind: type[sa.exc.DBAPIError] = sa.exc.OperationalError, **options: Any
) -> sa.exc.DBAPIError:
    """``orig`` as SQLAlchemy raises it."""
    return kind("SELECT 1", {}, orig, **options)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_wrapped(sqlite3.OperationalError("database is locked")), DatabaseUnavailable),
        (_wrapped(sqlite3.OperationalError("unable to open database file")), DatabaseUnavailable),
        (_wrapped(sqlite3.OperationalError("no such table: runs")), None),
        (_wrapped(psycopg.OperationalError("connection refused")), DatabaseUnavailable),
        (_wrapped(psycopg.errors.AdminShutdown()), DatabaseUnavailable),
        (_wrapped(psycopg.errors.SerializationFailure()), DatabaseUnavailable),
        (_wrapped(psycopg.errors.DeadlockDetected()), DatabaseUnavailable),
        (_wrapped(psycopg.errors.TooManyConnections()), DatabaseUnavailable),
        (_wrapped(psycopg.errors.ProgramLimitExceeded()), None),  # a request too big
        (_wrapped(psycopg.errors.SyntaxError(), sa.exc.ProgrammingError), None),
        (_wrapped(psycopg.errors.UniqueViolation(), sa.exc.IntegrityError), None),
        (
            _wrapped(
                psycopg.InterfaceError("the connection is closed"),
                sa.exc.InterfaceError,
                connection_invalidated=True,
            ),
            DatabaseUnavailable,
        ),
        (
            sa.exc.TimeoutError("QueuePool limit of size 20 overflow 20 reached"),
            DatabaseUnavailable,
        ),
        (sa.exc.NoResultFound("no row"), None),
        (ValueError("not a database error"), None),
    ],
)
def test_which_errors_are_outages(exc: BaseException, expected: type | None) -> None:
    outage = database_outage(exc)
    if expected is None:
        assert outage is None
    else:
        assert type(outage) is expected
        assert outage is not None and outage.headers == {"Retry-After": "1"}


def test_a_failed_commit_is_tagged_only_when_it_may_have_landed() -> None:
    failed = _wrapped(psycopg.OperationalError("server closed the connection"))
    failed.foreman_commit_outcome_unknown = True  # type: ignore[attr-defined]
    assert isinstance(database_outage(failed), DatabaseOutcomeUnknown)


# ---- the SDK retries outages on every call ----------------------------------------------

OUTAGES: list[tuple[str, Callable[[], httpx.Response | Exception]]] = [
    ("503", lambda: error(503, "database_unavailable", "down", headers={"Retry-After": "0"})),
    ("connect-error", lambda: httpx.ConnectError("refused")),
    ("429", lambda: error(429, "rate_limited", "slow down", headers={"Retry-After": "0.05"})),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
@pytest.mark.parametrize(("outage", "reply"), OUTAGES, ids=[name for name, _ in OUTAGES])
def test_every_call_is_retried_through_an_outage(
    case: Case, outage: str, reply: Callable[[], httpx.Response | Exception]
) -> None:
    api = FakeApi([reply(), reply(), case.reply])
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=4, initial_wait=0.01, max_wait=1.0)
    with ForemanClient(
        "http://api.test", KEY, retry=policy, transport=httpx.MockTransport(api)
    ) as client:
        client._sleep = sleeps.append
        result = case.invoke(client)
    assert result.success, result.error
    assert len(api.requests) == 3 and len(sleeps) == 2
    assert len({(r.method, str(r.url), r.content) for r in api.requests}) == 1  # the same call
    if outage == "429":
        assert all(s >= 0.05 for s in sleeps)  # Retry-After honoured


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_errors_are_retried_except_for_creates(status: int) -> None:
    for case in CASES:
        api = FakeApi([httpx.Response(status, text="gateway"), case.reply])
        policy = RetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.01)
        with ForemanClient(
            "http://api.test", KEY, retry=policy, transport=httpx.MockTransport(api)
        ) as client:
            client._sleep = lambda _seconds: None
            result = case.invoke(client)
        # every POST of the client creates something, but a retry (a repeat moves nothing)
        creates = case.method == "POST" and not case.path.endswith("/retry")
        assert result.success is not creates, case.name
        assert len(api.requests) == (1 if creates else 2), case.name


def test_async_client_retries_an_outage_on_every_kind_of_call() -> None:
    async def scenario() -> None:
        outage = error(503, "database_unavailable", "down", headers={"Retry-After": "0"})
        calls: list[tuple[Callable[[AsyncForemanClient], Any], httpx.Response]] = [
            (lambda c: c.create_run({}), httpx.Response(201, json=run_json())),
            (lambda c: c.get_task(TASK_ID), httpx.Response(200, json=task_json())),
            (
                lambda c: c.update_task(TASK_ID, status="running", queue_job_id="j"),
                httpx.Response(200, json=task_json(status="running", queueJobId="j")),
            ),
            (lambda c: c.create_run_data(RUN_ID, "k", 1), httpx.Response(201, json=data_json())),
            (
                lambda c: c.delete_run_data(RUN_ID, key="k"),
                httpx.Response(200, json={"deleted": 1}),
            ),
        ]
        for invoke, reply in calls:
            api = FakeApi([outage, reply])
            client = AsyncForemanClient(
                "http://api.test",
                KEY,
                retry=RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.01),
                transport=httpx.MockTransport(api.handle_async),
            )
            async with client:
                result = await invoke(client)
            assert result.success, result.error
            assert len(api.requests) == 2

    asyncio.run(scenario())


# ---- ...but not past a worker's shutdown grace -----------------------------------------


@pytest.fixture
def stopping() -> Iterator[Callable[[float], bool]]:
    """``shutdown.request``, with the process's shutdown state emptied before and after."""
    shutdown.reset()
    yield shutdown.request
    shutdown.reset()


def test_retries_give_up_when_the_shutdown_grace_runs_out(
    stopping: Callable[[float], bool],
) -> None:
    api = FakeApi([error(429, "rate_limited", "slow", headers={"Retry-After": "60"})])
    patient = RetryPolicy.patient(120.0, initial_wait=0.2, max_wait=30.0)
    with ForemanClient(
        "http://api.test", KEY, retry=patient, transport=httpx.MockTransport(api)
    ) as client:
        stopping(0.4)
        started = time.monotonic()
        result = client.update_task(TASK_ID, status="completed")
        elapsed = time.monotonic() - started
    assert result.error is not None and result.error.status == 429
    assert 0.3 <= elapsed < 1.5  # waited out the grace, not Retry-After or the deadline
    assert shutdown.expired()
    # once the grace is over, a call is tried once and returned
    api.requests.clear()
    with ForemanClient(
        "http://api.test", KEY, retry=patient, transport=httpx.MockTransport(api)
    ) as client:
        assert not client.get_task(TASK_ID).success
    assert len(api.requests) == 1


def test_async_retries_give_up_when_the_shutdown_grace_runs_out(
    stopping: Callable[[float], bool],
) -> None:
    async def scenario() -> float:
        api = FakeApi([httpx.ConnectError("refused")])
        client = AsyncForemanClient(
            "http://api.test",
            KEY,
            retry=RetryPolicy.patient(120.0, initial_wait=0.05, max_wait=5.0),
            transport=httpx.MockTransport(api.handle_async),
        )
        async with client:
            stopping(0.3)
            started = time.monotonic()
            assert not (await client.get_task(TASK_ID)).success
            return time.monotonic() - started

    assert 0.2 <= asyncio.run(scenario()) < 1.5
