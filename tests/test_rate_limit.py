"""Per-key rate limits: exact counting, headers, defaults, in memory and in Redis."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from foreman_api.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from foreman_api.settings import RateLimit, parse_rate_limit
from tests.conftest import Api

RUNS = "/api/v1/runs"


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[tuple[str, str]]:
    """(an empty Redis database of this test's own, a namespace); after the test, every key
    in the database must be in the namespace."""
    namespace = f"foreman-test:{uuid.uuid4().hex}"
    yield redis_url, namespace
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert [k for k in client.scan_iter() if not k.startswith(f"{namespace}:")] == []


@pytest.fixture(params=["memory", "redis"])
def limiter(request: pytest.FixtureRequest) -> Iterator[RateLimiter]:
    if request.param == "memory":
        yield MemoryRateLimiter()
        return
    url, namespace = request.getfixturevalue("redis_namespace")
    client = redis.Redis.from_url(url)
    yield RedisRateLimiter(client, namespace=namespace)
    client.close()


@pytest.fixture(params=["memory", "redis"])
def limited_api(request: pytest.FixtureRequest, make_api: Callable[..., Api]) -> Callable[..., Api]:
    """``make_api`` with the in-memory limiter, or with Redis in a namespace of its own."""
    if request.param == "memory":
        return make_api
    url, namespace = request.getfixturevalue("redis_namespace")

    def build(**overrides: object) -> Api:
        return make_api(redis_url=url, rate_limit_namespace=namespace, **overrides)

    return build


# ---- the limiters ------------------------------------------------------------------------


def test_parse_rate_limit() -> None:
    assert parse_rate_limit("100/15m") == RateLimit(requests=100, window_seconds=900)
    assert parse_rate_limit("10/s") == RateLimit(requests=10, window_seconds=1)
    assert parse_rate_limit("5000/1h") == RateLimit(requests=5000, window_seconds=3600)
    assert parse_rate_limit("unlimited").unlimited
    for bad in ("", "100", "0/1m", "10/0m", "-1/1m", "ten/1m", "10/1y"):
        with pytest.raises(ValueError, match="invalid rate limit"):
            parse_rate_limit(bad)


def test_limiter_is_exact(limiter: RateLimiter) -> None:
    limit = RateLimit(requests=5, window_seconds=60)
    decisions = [limiter.hit("a", limit) for _ in range(7)]
    assert all(d is not None for d in decisions)
    allowed = [d.allowed for d in decisions if d]
    assert allowed == [True] * 5 + [False] * 2
    remaining = [d.remaining for d in decisions if d]
    assert remaining == [4, 3, 2, 1, 0, 0, 0]
    assert all(d and 1 <= d.reset_seconds <= 60 for d in decisions)
    # Another bucket, and the same bucket with another window, count separately.
    other = limiter.hit("b", limit)
    assert other is not None and other.allowed and other.remaining == 4


def test_limiter_unlimited_counts_nothing(limiter: RateLimiter) -> None:
    assert limiter.hit("a", parse_rate_limit("unlimited")) is None


def test_limiter_window_reopens(limiter: RateLimiter) -> None:
    limit = RateLimit(requests=2, window_seconds=1)
    assert [d and d.allowed for d in (limiter.hit("w", limit) for _ in range(3))] == [
        True,
        True,
        False,
    ]
    time.sleep(1.1)
    decision = limiter.hit("w", limit)
    assert decision is not None and decision.allowed and decision.remaining == 1


def test_limiter_is_exact_under_concurrency(limiter: RateLimiter) -> None:
    limit = RateLimit(requests=50, window_seconds=60)
    allowed: list[bool] = []
    lock = threading.Lock()

    def hammer() -> None:
        for _ in range(20):
            decision = limiter.hit("busy", limit)
            assert decision is not None
            with lock:
                allowed.append(decision.allowed)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == 160
    assert allowed.count(True) == 50


# ---- over HTTP ---------------------------------------------------------------------------


def _assert_headers(response: object, *, limit: int, remaining: int) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["RateLimit-Limit"] == str(limit)
    assert headers["RateLimit-Remaining"] == str(remaining)
    assert 1 <= int(headers["RateLimit-Reset"]) <= 60


def test_key_limit_is_exact_with_headers(limited_api: Callable[..., Api]) -> None:
    api = limited_api()
    limited = api.headers("*", rate_limit="5/1m")
    bystander = api.headers("*", rate_limit="5/1m")
    for n in range(1, 6):
        response = api.client.get(RUNS, headers=limited)
        assert response.status_code == 200, response.text
        _assert_headers(response, limit=5, remaining=5 - n)
        assert "Retry-After" not in response.headers

    refused = api.client.get(RUNS, headers=limited)
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert "--rate-limit" in refused.json()["error"]  # says how to get a higher limit
    _assert_headers(refused, limit=5, remaining=0)
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Writes are refused too, and change nothing.
    assert api.client.post(RUNS, headers=limited, json={"inputData": 1}).status_code == 429

    other = api.client.get(RUNS, headers=bystander)
    assert other.status_code == 200
    _assert_headers(other, limit=5, remaining=4)
    assert other.json()["pagination"]["total"] == 0


def test_unlimited_key_is_never_limited(limited_api: Callable[..., Api]) -> None:
    api = limited_api(rate_limit="3/1m")
    headers = api.headers("*", rate_limit="unlimited")
    for _ in range(10):
        response = api.client.get(RUNS, headers=headers)
        assert response.status_code == 200
        assert "RateLimit-Limit" not in response.headers


def test_server_default_applies_to_keys_without_their_own(
    limited_api: Callable[..., Api],
) -> None:
    api = limited_api(rate_limit="3/1m")
    headers = api.headers("*", rate_limit=None)
    own = api.headers("*", rate_limit="10/1m")
    codes = [api.client.get(RUNS, headers=headers).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    response = api.client.get(RUNS, headers=own)
    assert response.status_code == 200
    _assert_headers(response, limit=10, remaining=9)


def test_error_responses_carry_the_headers(limited_api: Callable[..., Api]) -> None:
    api = limited_api()
    headers = api.headers("runs:read", rate_limit="10/1m")
    missing = api.client.get(f"{RUNS}/{uuid.uuid4()}", headers=headers)
    assert missing.status_code == 404
    _assert_headers(missing, limit=10, remaining=9)
    forbidden = api.client.post(RUNS, headers=headers, json={"inputData": {}})
    assert forbidden.status_code == 403
    _assert_headers(forbidden, limit=10, remaining=8)
    invalid = api.client.get(RUNS, headers=headers, params={"limit": 0})
    assert invalid.status_code == 400
    _assert_headers(invalid, limit=10, remaining=7)


def test_limits_are_per_key_not_per_organisation(limited_api: Callable[..., Api]) -> None:
    api = limited_api()
    first = api.headers("*", rate_limit="2/1m", org="org-a")
    second = api.headers("*", rate_limit="2/1m", org="org-a")
    assert [api.client.get(RUNS, headers=first).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]
    assert api.client.get(RUNS, headers=second).status_code == 200


def test_redis_outage_fails_open(make_api: Callable[..., Api]) -> None:
    """An unreachable Redis must not take the API down: requests pass, health degrades."""
    api = make_api(redis_url="redis://127.0.0.1:1/0", rate_limit_namespace="unused")
    headers = api.headers("*", rate_limit="1/1m")
    for _ in range(3):
        assert api.client.get(RUNS, headers=headers).status_code == 200
    health = api.client.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "degraded"
