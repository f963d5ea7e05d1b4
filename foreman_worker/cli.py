"""``foreman-worker``: run RQ workers for the task handlers of the given modules.

    foreman-worker --app myapp.tasks [--app …] [--queue Q …] [--concurrency N] [--burst]
                   [--log-level INFO]

Reads ``FOREMAN_API_URL``, ``FOREMAN_API_KEY`` and ``FOREMAN_REDIS_URL``. Start-up problems
(bad module, no handlers, API unreachable, key rejected) are one line on stderr and exit
status 2. A Redis that does not answer yet is waited for (one log line, then quiet retries).

SIGTERM (or SIGINT) lets the running task finish within ``FOREMAN_WORKER_SHUTDOWN_GRACE``,
then the worker exits 0; a second signal, or the end of the grace, makes it exit at once
with status 3 and one log line, leaving the task to be recovered.

``--concurrency N`` runs N worker processes under a small supervisor that passes every
SIGTERM/SIGINT on (a second one too) and restarts a worker process that dies, after a
backoff that doubles from 1 s to 30 s while it keeps dying young (it resets once a process
has lived 60 s).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

import redis

from foreman_api.settings import environment_help
from foreman_worker.client import ForemanClient
from foreman_worker.errors import ForemanError
from foreman_worker.registry import QUEUE_NAME, registry
from foreman_worker.settings import WorkerSettings, load_settings

log = logging.getLogger("foreman_worker.cli")

EXIT_STARTUP = 2
EXIT_INTERRUPTED = 130
STARTUP_REDIS_MAX_WAIT = 2.0
"""Longest pause between two PINGs while a starting worker waits for Redis."""
RESTART_BACKOFF = 1.0
"""Wait before restarting a worker process that died young; doubles each time it does."""
RESTART_BACKOFF_MAX = 30.0
HEALTHY_LIFETIME = 60.0
"""A worker process that lived this long before dying is restarted after RESTART_BACKOFF."""
SUPERVISOR_POLL = 0.2


class StartupError(Exception):
    """A start-up problem, reported as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="foreman-worker",
        description="Run Foreman task handlers on RQ queues.",
        epilog=environment_help(WorkerSettings),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--app",
        action="append",
        required=True,
        metavar="MODULE",
        help="module to import to register @task handlers (repeatable)",
    )
    parser.add_argument(
        "--queue",
        action="append",
        metavar="QUEUE",
        help="queue to consume (repeatable; default: the queues of the registered handlers)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        metavar="N",
        help="worker processes to run (default 1)",
    )
    parser.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        type=str.upper,
    )
    return parser


def import_apps(modules: Sequence[str]) -> None:
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ForemanError as exc:
            raise StartupError(f"cannot import {module}: {exc}") from exc
        except ModuleNotFoundError as exc:
            if exc.name is None or module.split(".")[0] != exc.name.split(".")[0]:
                raise StartupError(f"cannot import {module}: {exc}") from exc
            raise StartupError(
                f"cannot import {module}: no module {exc.name!r} in {os.getcwd()} or on "
                "sys.path; run foreman-worker from the directory that holds it (or a "
                "package installed in this environment), or add its directory to PYTHONPATH"
            ) from exc
        except Exception as exc:
            raise StartupError(f"cannot import {module}: {type(exc).__name__}: {exc}") from exc
    if not len(registry):
        raise StartupError(
            f"no task handlers registered by {', '.join(modules)} (use @task in those modules)"
        )


def check_redis(settings: WorkerSettings) -> redis.Redis:
    """A connection to Redis, once it answers: a Redis that is down is waited for."""
    from foreman_worker.worker import REDIS_ERRORS, REDIS_REFUSALS, wait_for_redis

    try:
        connection = redis.Redis.from_url(settings.redis_url)
        probe = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
    except ValueError as exc:
        raise StartupError(f"bad FOREMAN_REDIS_URL {settings.redis_url!r}: {exc}") from exc
    try:
        try:
            probe.ping()
        except REDIS_REFUSALS:
            raise
        except REDIS_ERRORS as exc:
            message = f"cannot reach Redis at {settings.redis_url} ({exc})"
            wait_for_redis(probe, message, max_wait=STARTUP_REDIS_MAX_WAIT)
    except redis.RedisError as exc:
        raise StartupError(f"Redis at {settings.redis_url} refused us: {exc}") from exc
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
        _probe_api(
            settings,
            ForemanClient(
                settings.api_url,
                settings.api_key.get_secret_value(),
                timeout=5.0,
                retry=RetryPolicy(attempts=None, deadline=5.0, initial_wait=0.2, max_wait=1.0),
            ),
        )
    finally:
        client_log.setLevel(level)


def _probe_api(settings: WorkerSettings, api: ForemanClient) -> None:
    with api as client:
        health = client.health()
        if not health.success and health.error is not None and health.error.status is None:
            raise StartupError(
                f"cannot reach the Foreman API at {settings.api_url}: {health.error.message}"
            )
        probe = client.get_task(uuid.uuid4())
        error = probe.error
        if error is None or error.status == 404:
            return
        if error.status == 401:
            raise StartupError(
                f"the Foreman API at {settings.api_url} rejected FOREMAN_API_KEY "
                f"(401: {error.message})"
            )
        if error.status == 403:
            raise StartupError(f"FOREMAN_API_KEY may not read tasks (403: {error.message})")
        raise StartupError(f"the Foreman API at {settings.api_url} answered {error}")


def resolve_queues(requested: Sequence[str] | None) -> list[str]:
    queues = list(dict.fromkeys(requested)) if requested else registry.queues()
    bad = [q for q in queues if not QUEUE_NAME.fullmatch(q)]
    if bad:
        raise StartupError(f"bad queue name(s): {', '.join(map(repr, bad))}")
    return queues


def run_worker(
    settings: WorkerSettings,
    connection: redis.Redis,
    queues: list[str],
    *,
    burst: bool,
    log_level: str,
) -> int:
    """One worker process: register with the API, then consume the organisation's queues."""
    from foreman_worker.client import RetryPolicy
    from foreman_worker.presence import Presence
    from foreman_worker.reconciler import Reconciler
    from foreman_worker.runner import claim_popped_job, send_claim_ahead, settle
    from foreman_worker.runtime import configure, runner_client, runtime_from_settings
    from foreman_worker.worker import ForemanWorker

    runtime = runtime_from_settings(connection, registry)
    runtime.settle_after_job = True  # the worker below calls settle() after each job
    name = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    runtime.worker_id = name
    configure(runtime)
    presence = Presence(
        runtime.client,
        worker_id=name,
        queues=queues,
        registry=registry,
        current_task=lambda: runtime.lease.current_task_id,
    )
    try:
        org_id = presence.register().org_id
    except ForemanError as exc:
        print(f"foreman-worker: error: cannot register with the API: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    reconciler = Reconciler(
        runner_client(retry=RetryPolicy(attempts=2), timeout=30.0),
        connection,
        org_id=org_id,
        namespace=runtime.namespace,
        holder=name,
        interval=settings.worker_reap_interval,
        scan_interval=settings.worker_scan_interval,
    )
    rq_queues = [runtime.namespace.queue(org_id, queue) for queue in queues]
    worker = ForemanWorker(
        rq_queues,
        connection=connection,
        settings=settings,
        reconciler=reconciler,
        presence=presence,
        before_job=send_claim_ahead,
        after_job=settle,
        on_pop=claim_popped_job,
        name=name,
    )
    log.info(
        "worker %s of %s on queues %s, handlers: %s",
        worker.name,
        org_id,
        ", ".join(queues),
        ", ".join(registry.types()),
    )
    worker.work(burst=burst, logging_level=log_level)
    return 0


@dataclass
class _Slot:
    """One of the supervisor's worker processes, and its restart backoff."""

    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    deaths: int = 0
    """Consecutive deaths of processes that did not live HEALTHY_LIFETIME."""
    restart_at: float | None = None


def restart_delay(deaths: int) -> float:
    """Seconds before restarting after the ``deaths``-th consecutive early death."""
    return float(min(RESTART_BACKOFF_MAX, RESTART_BACKOFF * 2.0 ** min(deaths - 1, 16)))


def supervise(argv: Sequence[str], concurrency: int, *, burst: bool) -> int:
    """Run ``concurrency`` single-process workers; restart dead ones; forward signals.

    Each worker process is in a process group of its own, so a terminal's Ctrl+C reaches
    it once, through the supervisor (as SIGTERM), and it gets SIGTERM if the supervisor
    dies (Linux).
    Returns 0, or the exit status of a worker process that failed while stopping (or, with
    ``--burst``, at all).
    """
    child_argv = [sys.executable, "-m", "foreman_worker.cli", *argv, "--concurrency", "1"]
    slots = [_Slot() for _ in range(concurrency)]
    stopping = False

    def spawn(slot: _Slot) -> None:
        slot.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            child_argv, process_group=0, preexec_fn=_die_with_parent()
        )
        slot.started_at = time.monotonic()
        slot.restart_at = None
        if stopping:  # the signal came while it was being started
            slot.process.send_signal(signal.SIGTERM)

    def forward(signum: int, frame: FrameType | None) -> None:
        # SIGINT is passed on as SIGTERM: the same request to a worker, and a process still
        # starting (no handler yet) just ends, where SIGINT would print a traceback.
        nonlocal stopping
        stopping = True
        for slot in slots:
            slot.restart_at = None
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for slot in slots:
        spawn(slot)
    status = 0
    while any(slot.process is not None or slot.restart_at is not None for slot in slots):
        for slot in slots:
            if slot.process is None:
                if slot.restart_at is not None and time.monotonic() >= slot.restart_at:
                    spawn(slot)  # forward() clears restart_at once stopping
                continue
            code = slot.process.poll()
            if code is None:
                continue
            pid, slot.process = slot.process.pid, None
            if stopping and code == -signal.SIGTERM:
                code = 0  # stopped while starting, before it could take any task
            code = 128 - code if code < 0 else code  # killed by a signal: 128 + signum
            if code == 0 or stopping or burst:
                status = code or status
                continue
            lived = time.monotonic() - slot.started_at
            slot.deaths = 1 if lived >= HEALTHY_LIFETIME else slot.deaths + 1
            delay = restart_delay(slot.deaths)
            slot.restart_at = time.monotonic() + delay
            log.warning(
                "worker process %d exited with %d after %.1fs; starting another in %gs",
                pid,
                code,
                lived,
                delay,
            )
        time.sleep(SUPERVISOR_POLL)
    return status


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, have a worker process get SIGTERM when the supervisor dies (even SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    return lambda: libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


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
    except KeyboardInterrupt:  # Ctrl+C while waiting for Redis or the API
        return EXIT_INTERRUPTED
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
