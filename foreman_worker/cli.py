"""``foreman-worker``: run RQ workers for the task handlers of the given modules.

    foreman-worker --app myapp.tasks [--app …] [--queue Q …] [--concurrency N] [--burst]
                   [--log-level INFO]

Reads ``FOREMAN_API_URL``, ``FOREMAN_API_KEY`` and ``FOREMAN_REDIS_URL``. Start-up problems
(bad module, no handlers, Redis or API unreachable, key rejected) are one line on stderr and
exit status 2. ``--concurrency N`` runs N worker processes under a small supervisor that
restarts a worker process that dies and passes SIGTERM/SIGINT on; SIGTERM lets each
process finish its current task, then exit.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from types import FrameType

import redis

from foreman_worker.client import ForemanClient
from foreman_worker.errors import ForemanError
from foreman_worker.registry import QUEUE_NAME, registry
from foreman_worker.settings import WorkerSettings, load_settings

log = logging.getLogger("foreman_worker.cli")

EXIT_STARTUP = 2


class StartupError(Exception):
    """A start-up problem, reported as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="foreman-worker", description="Run Foreman task handlers on RQ queues."
    )
    parser.add_argument(
        "--app", action="append", required=True, metavar="MODULE",
        help="module to import to register @task handlers (repeatable)",
    )
    parser.add_argument(
        "--queue", action="append", metavar="QUEUE",
        help="queue to consume (repeatable; default: the queues of the registered handlers)",
    )
    parser.add_argument("--concurrency", type=int, default=1, metavar="N",
                        help="worker processes to run (default 1)")
    parser.add_argument("--burst", action="store_true",
                        help="exit once the queues are empty")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                        type=str.upper)
    return parser


def import_apps(modules: Sequence[str]) -> None:
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ForemanError as exc:
            raise StartupError(f"cannot import {module}: {exc}") from exc
        except Exception as exc:
            raise StartupError(
                f"cannot import {module}: {type(exc).__name__}: {exc}"
            ) from exc
    if not len(registry):
        raise StartupError(
            f"no task handlers registered by {', '.join(modules)} (use @task in those modules)"
        )


def check_redis(settings: WorkerSettings) -> redis.Redis:
    connection = redis.Redis.from_url(settings.redis_url)
    probe = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        probe.ping()
    except redis.RedisError as exc:
        raise StartupError(f"cannot reach Redis at {settings.redis_url}: {exc}") from exc
    finally:
        probe.close()
    return connection


def check_api(settings: WorkerSettings) -> None:
    from foreman_worker.client import RetryPolicy

    if settings.api_key is None or not settings.api_key.get_secret_value().strip():
        raise StartupError("FOREMAN_API_KEY is not set (create one with `foreman-api keys create`)")
    # Patient for a few seconds (an API starting alongside the worker), quietly.
    client_log = logging.getLogger("foreman_worker.client")
    level = client_log.level
    client_log.setLevel(logging.ERROR)
    try:
        _probe_api(settings, ForemanClient(
            settings.api_url,
            settings.api_key.get_secret_value(),
            timeout=5.0,
            retry=RetryPolicy(attempts=None, deadline=5.0, initial_wait=0.2, max_wait=1.0),
        ))
    finally:
        client_log.setLevel(level)


def _probe_api(settings: WorkerSettings, api: ForemanClient) -> None:
    with api as client:
        health = client.health()
        if not health.success and health.error is not None and health.error.status is None:
            raise StartupError(f"cannot reach the Foreman API at {settings.api_url}: "
                               f"{health.error.message}")
        probe = client.get_task(uuid.uuid4())
        error = probe.error
        if error is None or error.status == 404:
            return
        if error.status == 401:
            raise StartupError(f"the Foreman API at {settings.api_url} rejected FOREMAN_API_KEY "
                               f"(401: {error.message})")
        if error.status == 403:
            raise StartupError(f"FOREMAN_API_KEY may not read tasks (403: {error.message})")
        raise StartupError(f"the Foreman API at {settings.api_url} answered {error}")


def resolve_queues(requested: Sequence[str] | None) -> list[str]:
    queues = list(dict.fromkeys(requested)) if requested else registry.queues()
    bad = [q for q in queues if not QUEUE_NAME.fullmatch(q)]
    if bad:
        raise StartupError(f"bad queue name(s): {', '.join(map(repr, bad))}")
    return queues


def run_worker(settings: WorkerSettings, connection: redis.Redis, queues: list[str],
               *, burst: bool, log_level: str) -> int:
    from foreman_worker.runner import Runtime, configure, runner_client
    from foreman_worker.worker import ForemanWorker

    configure(Runtime(client=runner_client(), connection=connection, registry=registry))
    worker = ForemanWorker(queues, connection=connection, settings=settings)
    log.info("worker %s on queues %s, handlers: %s", worker.name, ", ".join(queues),
             ", ".join(registry.types()))
    worker.work(burst=burst, logging_level=log_level)
    return 0


def supervise(argv: Sequence[str], concurrency: int, *, burst: bool) -> int:
    """Run ``concurrency`` single-process workers; restart crashed ones; forward signals."""
    child_argv = [sys.executable, "-m", "foreman_worker.cli", *argv, "--concurrency", "1"]
    children: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def spawn() -> None:
        child = subprocess.Popen(child_argv)  # noqa: S603 - our own interpreter and module
        children[child.pid] = child

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for _ in range(concurrency):
        spawn()
    status = 0
    while children:
        for pid, child in list(children.items()):
            code = child.poll()
            if code is None:
                continue
            del children[pid]
            if code != 0 and not stopping and not burst:
                log.warning("worker process %d exited with %d; starting another", pid, code)
                spawn()
            elif code != 0:
                status = code
        time.sleep(0.2)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(args_list)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.log_level != "DEBUG":  # one INFO line per HTTP request is noise, and costs time
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.concurrency < 1:
            raise StartupError("--concurrency must be at least 1")
        settings = load_settings()
        import_apps(args.app)
        queues = resolve_queues(args.queue)
        connection = check_redis(settings)
        check_api(settings)
    except (StartupError, ForemanError) as exc:
        print(f"foreman-worker: error: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    if args.concurrency > 1:
        passthrough = _without_concurrency(args_list)
        return supervise(passthrough, args.concurrency, burst=args.burst)
    return run_worker(settings, connection, queues, burst=args.burst, log_level=args.log_level)


def _without_concurrency(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--concurrency":
            skip = True
            continue
        if item.startswith("--concurrency="):
            continue
        out.append(item)
    return out


if __name__ == "__main__":
    sys.exit(main())
