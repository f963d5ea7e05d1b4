"""The sync client's lean transport (``foreman_worker._wire``) over real sockets.

A small socket server on loopback answers, closes, drops or stalls as each test asks; the
client must send what httpx would send and read every failure as httpx's transport would,
because whether a create is retried depends on it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from foreman_worker import _calls
from foreman_worker.client import ForemanClient, RetryPolicy
from tests.test_client import KEY, RUN_ID, TASK_ID, FakeApi, run_json, task_json

Behaviour = Callable[["Exchange"], bytes | None]
"""Given a request, the raw answer to write (None: drop the connection without one)."""


@dataclass
class Exchange:
    """One request as the server read it."""

    request_line: str
    headers: dict[str, str]
    body: bytes
    connection: int


@dataclass
class RawServer:
    """A loopback HTTP/1.1 server that answers each request with ``behaviour``."""

    behaviour: Behaviour
    close_after_answer: bool = False
    exchanges: list[Exchange] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            number = self.connections
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        # A client may close a connection with an answer unread (a call sent ahead and
        # then dropped): the reset that follows ends this connection, nothing else.
        with contextlib.suppress(ConnectionError):
            self._exchange(conn, number)

    def _exchange(self, conn: socket.socket, number: int) -> None:
        reader = conn.makefile("rb")
        with conn:
            while True:
                line = reader.readline()
                if not line:
                    return
                headers: dict[str, str] = {}
                while (header := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = reader.read(int(headers.get("content-length", "0")))
                exchange = Exchange(line.decode().strip(), headers, body, number)
                self.exchanges.append(exchange)
                answer = self.behaviour(exchange)
                if answer is None:
                    return
                conn.sendall(answer)
                if self.close_after_answer:
                    return


def answer(status: int, body: Any, *, close: bool = False) -> bytes:
    content = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
        f"content-length: {len(content)}\r\n"
    )
    if close:
        head += "connection: close\r\n"
    return (head + "\r\n").encode() + content


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(behaviour: Behaviour, **options: Any) -> RawServer:
        server = RawServer(behaviour, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def client_for(url: str, sleeps: list[float] | None = None, **options: Any) -> ForemanClient:
    options.setdefault("retry", RetryPolicy(attempts=4, initial_wait=0.01, max_wait=1.0))
    client = ForemanClient(url, KEY, **options)
    assert client._wire is not None, "a plain http:// URL takes the lean transport"
    if sleeps is not None:
        client._sleep = sleeps.append
    return client


CALLS: list[tuple[str, Callable[[ForemanClient], Any], dict[str, Any]]] = [
    ("get task", lambda c: c.get_task(TASK_ID), task_json()),
    ("claim", lambda c: c.update_task(TASK_ID, status="running", queue_job_id="j1"), task_json()),
    ("create run", lambda c: c.create_run({"ü": [1, 2.5, None]}, metadata={"a": "b"}), run_json()),
    (
        "list runs",
        lambda c: c.list_runs(status="running", limit=5, sort_order="asc"),
        {"data": [], "pagination": {"total": 0, "limit": 5, "offset": 0}},
    ),
]


@pytest.mark.parametrize(("name", "invoke", "reply"), CALLS, ids=[c[0] for c in CALLS])
def test_sends_what_httpx_sends(
    serve: Callable[..., RawServer],
    name: str,
    invoke: Callable[[ForemanClient], Any],
    reply: dict[str, Any],
) -> None:
    server = serve(lambda _: answer(200, reply))
    with client_for(server.url + "/prefix/") as client:
        assert invoke(client).success
    mock = FakeApi([httpx.Response(200, json=reply)])
    with ForemanClient(
        "http://x.test/prefix", KEY, transport=httpx.MockTransport(mock)
    ) as reference:
        assert invoke(reference).success
    sent, expected = server.exchanges[0], mock.last
    method, target, _ = sent.request_line.split(" ")
    assert (method, target) == (expected.method, expected.url.raw_path.decode())
    assert json.loads(sent.body or b"null") == json.loads(expected.content or b"null")
    for header in ("authorization", "accept", "user-agent", "content-type"):
        assert sent.headers.get(header) == expected.headers.get(header), header


def test_connections_are_kept_alive_and_reused(serve: Callable[..., RawServer]) -> None:
    server = serve(lambda _: answer(200, task_json()))
    with client_for(server.url) as client:
        for _ in range(5):
            assert client.get_task(TASK_ID).success
    assert len(server.exchanges) == 5
    assert server.connections == 1


def test_a_connection_the_server_closed_while_idle_is_replaced_not_failed(
    serve: Callable[..., RawServer],
) -> None:
    server = serve(lambda _: answer(200, run_json()), close_after_answer=True)
    sleeps: list[float] = []
    with client_for(server.url, sleeps) as client:
        assert client.create_run({"n": 1}).success
        time.sleep(0.05)  # the server's FIN arrives while the connection is idle
        second = client.create_run({"n": 2})
    assert second.success, second.error
    # Each create was sent exactly once, each on a fresh connection, without a retry.
    assert [json.loads(e.body)["inputData"] for e in server.exchanges] == [{"n": 1}, {"n": 2}]
    assert server.connections == 2
    assert sleeps == []


def test_connection_close_header_is_honoured(serve: Callable[..., RawServer]) -> None:
    server = serve(lambda _: answer(200, task_json(), close=True))
    with client_for(server.url) as client:
        assert client.get_task(TASK_ID).success
        assert client.get_task(TASK_ID).success
    assert server.connections == 2


def test_a_create_dropped_after_sending_is_not_sent_again(
    serve: Callable[..., RawServer],
) -> None:
    server = serve(lambda _: None)
    sleeps: list[float] = []
    with client_for(server.url, sleeps) as client:
        result = client.create_run({"n": 1})
    assert result.error is not None
    assert (result.error.status, result.error.code) == (None, "network_error")
    assert "RemoteProtocolError" in result.error.message
    assert len(server.exchanges) == 1 and sleeps == []


def test_a_read_dropped_after_sending_is_retried(serve: Callable[..., RawServer]) -> None:
    replies = iter([None, None, answer(200, task_json())])
    server = serve(lambda _: next(replies))
    sleeps: list[float] = []
    with client_for(server.url, sleeps) as client:
        assert client.get_task(TASK_ID).success
    assert len(server.exchanges) == 3 and len(sleeps) == 2


def test_a_refused_connection_is_retried_even_for_a_create() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]  # closed below: nothing listens there
    sleeps: list[float] = []
    with client_for(f"http://127.0.0.1:{port}", sleeps) as client:
        result = client.create_run({"n": 1})
    assert result.error is not None
    assert (result.error.status, result.error.code) == (None, "network_error")
    assert "ConnectError" in result.error.message
    assert len(sleeps) == 3  # every attempt used: the request never left


def test_a_stalled_answer_is_a_timeout_and_a_create_is_not_retried(
    serve: Callable[..., RawServer],
) -> None:
    release = threading.Event()

    def stall(_: Exchange) -> bytes | None:
        release.wait(5)
        return None

    server = serve(stall)
    sleeps: list[float] = []
    try:
        with client_for(server.url, sleeps, timeout=0.2) as client:
            result = client.create_run({"n": 1})
    finally:
        release.set()
    assert result.error is not None
    assert (result.error.status, result.error.code) == (None, "timeout")
    assert len(server.exchanges) == 1 and sleeps == []


def test_errors_and_warnings_are_read_as_over_httpx(serve: Callable[..., RawServer]) -> None:
    body = {"error": "Task not found", "code": "not_found", "details": []}
    server = serve(lambda _: answer(404, body))
    with client_for(server.url) as client:
        result = client.get_task(TASK_ID)
    assert result.error is not None
    assert (result.error.status, result.error.code, result.error.message) == (
        404,
        "not_found",
        "Task not found",
    )


@pytest.mark.parametrize(
    ("url", "env"),
    [
        ("https://api.test", {}),
        ("http://api.test", {"HTTP_PROXY": "http://proxy.test:3128"}),
    ],
)
def test_https_and_proxies_stay_on_httpx(
    monkeypatch: pytest.MonkeyPatch, url: str, env: dict[str, str]
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with ForemanClient(url, KEY) as client:
        assert client._wire is None and client._http is not None


# ---- a call sent ahead ------------------------------------------------------------------


def claim(client: ForemanClient) -> Any:
    return client.update_task(TASK_ID, status="running", queue_job_id="job-1", lease_seconds=30)


def send_claim_ahead(client: ForemanClient) -> None:
    client._send_ahead(
        _calls.update_task, TASK_ID, status="running", queue_job_id="job-1", lease_seconds=30
    )


def test_a_call_sent_ahead_is_answered_once(serve: Callable[..., RawServer]) -> None:
    arrived = threading.Event()

    def reply(_: Exchange) -> bytes:
        arrived.set()
        return answer(200, task_json(status="running"))

    server = serve(reply)
    with client_for(server.url) as client:
        send_claim_ahead(client)
        assert arrived.wait(5), "sent before the call is made"
        result = claim(client)
    assert result.success and result.unwrap().status == "running"
    assert len(server.exchanges) == 1


def test_another_call_drops_the_answer_sent_ahead(serve: Callable[..., RawServer]) -> None:
    claimed = threading.Event()

    def reply(exchange: Exchange) -> bytes:
        if "PATCH" in exchange.request_line:
            claimed.set()
            return answer(200, task_json())
        return answer(200, run_json())

    server = serve(reply)
    with client_for(server.url) as client:
        send_claim_ahead(client)
        assert claimed.wait(5)  # each connection has its own server thread: keep the order
        assert client.get_run(RUN_ID).success  # not the call sent ahead
        assert claim(client).success  # sent again: the early answer was dropped
    assert [e.request_line.split(" ")[0] for e in server.exchanges] == ["PATCH", "GET", "PATCH"]


def test_a_call_sent_ahead_is_retried_like_any_other(serve: Callable[..., RawServer]) -> None:
    replies = iter([None, answer(200, task_json(status="running"))])
    server = serve(lambda _: next(replies))
    sleeps: list[float] = []
    with client_for(server.url, sleeps) as client:
        send_claim_ahead(client)
        assert claim(client).success
    assert len(server.exchanges) == 2 and len(sleeps) == 1


def test_sending_ahead_over_httpx_does_nothing() -> None:
    mock = FakeApi([httpx.Response(200, json=task_json())])
    with ForemanClient("http://x.test", KEY, transport=httpx.MockTransport(mock)) as client:
        send_claim_ahead(client)
        assert mock.requests == []
        assert claim(client).success
    assert len(mock.requests) == 1
