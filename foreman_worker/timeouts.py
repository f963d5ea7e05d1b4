"""Run a handler under its timeout so that the timeout stops it: sync or async, blocking or not.

:func:`call_with_timeout` returns what the handler returns or raises what it raises. When
the timeout expires it raises ``TimeoutError("task exceeded its timeout of Xs")``, and by
then none of the handler's code is running any more: a retry never overlaps the attempt it
follows.

How a handler is stopped once its deadline has passed (at the deadline, then again every
:data:`TICK` seconds until it has stopped):

* **On the main thread**, where a worker runs its jobs, a ``SIGALRM`` timer (``setitimer``)
  raises a ``BaseException`` in whatever code is running, so a handler's own
  ``except Exception`` cannot swallow it: ``time.sleep``, a busy loop, a blocking call of a
  ``TaskContext`` helper, in a ``def`` handler or inside an ``async def`` one. An ``async
  def`` handler that is waiting (its event loop is idle) is cancelled instead, as
  ``asyncio.timeout`` (which also bounds it) does.
* **Off the main thread**, where there are no signals, the handler runs in a helper thread
  while the caller waits. The caller cancels an async handler that is waiting, or raises the
  exception in the helper thread (``PyThreadState_SetAsyncExc``). Python sees such an
  exception only between two instructions: a thread blocked in one C call (a long
  ``time.sleep``, a socket read) sees it when the call returns.

A handler that is still running ``grace`` seconds (2 by default) after its deadline — off
the main thread in one long C call or catching ``BaseException``; an async handler whose
event loop still waits for it or for threads it started — cannot be stopped from inside
the process, and returning would let its retry run beside it. :func:`call_with_timeout`
raises :class:`HandlerStuckError` instead: the worker process must then exit without
recording anything, and the task's lease expiring in the database hands the task to
another worker. (On the main thread a sync handler that catches ``BaseException`` gets the
exception again every tick; code that swallows every one of them cannot be stopped.)

With ``timeout=None`` the handler is simply called: no timer, no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, Final

TICK: Final = 0.1
"""Seconds between two attempts to stop a handler once its deadline has passed."""
STOP_GRACE: Final = 2.0
"""Seconds a timed-out handler gets to stop before :class:`HandlerStuckError`."""


class HandlerStuckError(BaseException):
    """A timed-out handler is still running and cannot be stopped: the process must exit.

    Not an ``Exception``, so that neither the handler nor the runner's ``except Exception``
    handles it: recording the attempt and retrying would run the task twice at once.
    """


class _Expired(BaseException):
    """Raised inside a handler to stop it; :func:`call_with_timeout` reports ``TimeoutError``."""


def call_with_timeout(
    func: Callable[..., Any],
    args: Sequence[object],
    *,
    timeout: float | None,
    is_async: bool,
    grace: float = STOP_GRACE,
) -> object:
    """``func(*args)`` (awaited when ``is_async``) stopped after ``timeout`` seconds.

    Raises ``TimeoutError`` when the timeout expired and the handler has stopped, and
    :class:`HandlerStuckError` when it has not stopped ``grace`` seconds later.
    """
    if timeout is None:
        return asyncio.run(func(*args)) if is_async else func(*args)
    attempt = _Attempt(timeout, grace)

    def run() -> object:
        return attempt.run_async(func, args) if is_async else func(*args)

    try:
        if threading.current_thread() is threading.main_thread():
            return _on_main_thread(run, attempt)
        return _in_helper_thread(run, attempt)
    except _Expired as exc:
        raise TimeoutError(attempt.message) from exc
    except asyncio.CancelledError as exc:
        if attempt.struck:
            raise TimeoutError(attempt.message) from exc
        raise


class _Attempt:
    """One call under a timeout: its deadlines, and how to stop the handler now."""

    def __init__(self, timeout: float, grace: float) -> None:
        self.timeout = timeout
        self.grace = grace
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.message = f"task exceeded its timeout of {timeout:g}s"
        self.struck = False
        """Whether the handler was told to stop."""
        self.done = False
        """Whether the handler has returned: nothing is to be stopped any more."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.main: asyncio.Task[Any] | None = None
        """An async handler's event loop and task, while its ``asyncio.run`` runs."""

    @property
    def late(self) -> bool:
        return time.monotonic() >= self.deadline + self.grace

    def run_async(self, func: Callable[..., Any], args: Sequence[object]) -> object:
        try:
            return asyncio.run(self._main(func, args))
        finally:
            self.loop = self.main = None

    async def _main(self, func: Callable[..., Any], args: Sequence[object]) -> object:
        self.loop = asyncio.get_running_loop()
        self.main = asyncio.current_task()
        scope = asyncio.timeout(self.deadline - time.monotonic())
        try:
            async with scope:
                return await func(*args)
        except TimeoutError as exc:
            if scope.expired():
                raise TimeoutError(self.message) from exc
            raise  # the handler's own

    def strike(self) -> type[BaseException] | None:
        """Stop the handler: cancel an async one that is waiting, or return the exception
        to raise in the thread that runs it (None: nothing to raise)."""
        self.struck = True
        loop, main = self.loop, self.main
        if loop is None or main is None or asyncio.current_task(loop) is not None:
            return _Expired  # the handler's code is running
        # The event loop is idle, or busy with its own code: the handler is waiting.
        if self.late:
            return HandlerStuckError
        with contextlib.suppress(RuntimeError):  # the loop has just been closed
            loop.call_soon_threadsafe(main.cancel)
        return None

    def stuck(self) -> HandlerStuckError:
        return HandlerStuckError(
            f"{self.message} and was still running {self.grace:g}s later; "
            "the worker process must exit"
        )


def _on_main_thread(run: Callable[[], object], attempt: _Attempt) -> object:
    def tick(signum: int, frame: FrameType | None) -> None:
        if attempt.done:
            return  # a tick that was already pending when the timer was stopped
        stop = attempt.strike()
        if stop is HandlerStuckError:
            raise attempt.stuck()
        if stop is not None:
            raise stop()

    previous_handler = signal.signal(signal.SIGALRM, tick)
    # (a delay of 0 would switch the timer off rather than fire at once)
    previous_timer = signal.setitimer(signal.ITIMER_REAL, max(attempt.timeout, 1e-6), TICK)
    try:
        return run()
    finally:
        attempt.done = True  # first: no tick may interrupt the rest of this block
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(
            signal.SIGALRM, previous_handler if previous_handler is not None else signal.SIG_DFL
        )
        delay, interval = previous_timer
        if delay > 0:  # someone else's timer (pytest-timeout's, RQ's): let it run on
            left = delay - (time.monotonic() - attempt.started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), interval)


def _in_helper_thread(run: Callable[[], object], attempt: _Attempt) -> object:
    outcome: list[object] = []
    errors: list[BaseException] = []
    lock = threading.Lock()  # held while the handler is told to stop, and when it is done

    def body() -> None:
        try:
            try:
                outcome.append(run())
            except BaseException as exc:  # handed to the caller
                errors.append(exc)
            with lock:
                attempt.done = True
            _raise_in_thread(threading.get_ident(), None)  # forget a stop that came too late
        except _Expired:
            pass  # came after the handler ended: what it returned or raised stands

    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(body,), name="foreman-handler", daemon=True
    )
    thread.start()
    thread.join(max(attempt.deadline - time.monotonic(), 0.0))
    while thread.is_alive() and not attempt.late:
        # A bounded wait: the helper may have been stopped while holding the lock.
        if lock.acquire(timeout=TICK):
            try:
                if not attempt.done and attempt.strike() is _Expired and thread.ident:
                    _raise_in_thread(thread.ident, _Expired)
            finally:
                lock.release()
        thread.join(TICK)
    if thread.is_alive():
        raise attempt.stuck()
    if errors:
        raise errors[0]
    if outcome:
        return outcome[0]
    raise _Expired  # stopped between returning and recording its outcome


def _raise_in_thread(ident: int, exc: type[BaseException] | None) -> None:
    """Make ``exc`` be raised in thread ``ident`` at its next instruction (None: cancel)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc) if exc is not None else None
    )
