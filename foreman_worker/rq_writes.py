"""RQ's own Redis writes, sent as one Lua script: atomic, one round trip, one reply.

RQ writes its records (a job, its execution, the worker's state) through pipelines. A
transaction pipeline costs a reply per command (``QUEUED``) on top of the ``EXEC``, and a
decision that needs a read first (is a job already waiting?) costs ``WATCH`` and a read
of its own. Here RQ writes into a pipeline that is never sent (:func:`recorded`), and
:data:`RUN_COMMANDS` runs those commands inside one script, after a check of the caller's
where one is needed (:func:`script`). RQ decides what is written, so its records are
exactly RQ's own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError

Command = tuple[Any, ...]
T = TypeVar("T")

RUN_COMMANDS = """
local i = FIRST
while i <= #ARGV do
    local count = tonumber(ARGV[i])
    redis.call(unpack(ARGV, i + 1, i + count))
    i = i + count + 1
end
"""
"""Lua: run the commands packed into ARGV from index ``FIRST`` on (see :func:`packed`)."""


def recorded(conn: Redis, write: Callable[[Pipeline], T]) -> tuple[list[Command], T]:
    """The commands ``write`` queues on a pipeline of ``conn``, none of them sent, and
    what ``write`` returned."""
    pipe = conn.pipeline(transaction=False)
    try:
        returned = write(pipe)
        return [tuple(args) for args, _options in pipe.command_stack], returned
    finally:
        pipe.reset()


def packed(commands: Sequence[Command]) -> list[Any]:
    """``commands`` as script arguments: each one's length, then its words."""
    words: list[Any] = []
    for command in commands:
        words.append(len(command))
        words.extend(command)
    return words


def script(before: str = "", *, first: int = 1, after: str = "") -> str:
    """A script that runs ``before``, then the commands packed from ``ARGV[first]`` on,
    then ``after`` (``before`` may return early: nothing is written then)."""
    return before + RUN_COMMANDS.replace("FIRST", str(first)) + after


class Lua:
    """A script run by its SHA1 (``EVALSHA``), loaded again if the server lost it (a
    restarted Redis); unlike redis-py's ``Script``, not hashed again for every call."""

    def __init__(self, text: str) -> None:
        self.text = text
        # Redis names scripts by their SHA1.
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    def __call__(self, conn: Redis, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        try:
            return conn.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            conn.script_load(self.text)
            return conn.evalsha(self.sha, len(keys), *keys, *args)


_WRITE = Lua(script())


def write_atomically(conn: Redis, write: Callable[[Pipeline], T]) -> T:
    """Run RQ's ``write`` (pipeline commands) on ``conn`` as one atomic script; what
    ``write`` returned."""
    commands, returned = recorded(conn, write)
    _WRITE(conn, args=packed(commands))
    return returned
