"""Foreman's worker SDK: the API client, ``@task`` handlers, ``enqueue``/``submit``.

    from foreman_worker import ForemanClient, TaskContext, enqueue, submit, task

Run the handlers with ``foreman-worker --app your.module``.
"""

from foreman_worker.client import AsyncForemanClient, ForemanClient, RetryPolicy
from foreman_worker.context import TaskContext
from foreman_worker.enqueue import enqueue, resubmit, submit
from foreman_worker.errors import (
    ApiError,
    ConfigurationError,
    Fail,
    ForemanError,
    RegistrationError,
    Retry,
)
from foreman_worker.registry import Backoff, task
from foreman_worker.result import ApiErrorInfo, Result

__all__ = [
    "ApiError",
    "ApiErrorInfo",
    "AsyncForemanClient",
    "Backoff",
    "ConfigurationError",
    "Fail",
    "ForemanClient",
    "ForemanError",
    "RegistrationError",
    "Result",
    "Retry",
    "RetryPolicy",
    "TaskContext",
    "enqueue",
    "resubmit",
    "submit",
    "task",
]
