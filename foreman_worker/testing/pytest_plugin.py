"""pytest fixtures for testing Foreman handlers, registered as the pytest plugin ``foreman``.

* ``foreman`` — a fresh :class:`~foreman_worker.testing.Foreman` per test: the API and a
  worker in process, running the handlers of ``foreman_registry``.
* ``foreman_registry`` — the handlers the harness runs; by default those ``@task``
  registered. Override it in a ``conftest.py`` to run another
  :class:`~foreman_worker.registry.Registry`.

Nothing of the server stack is imported until a test asks for ``foreman``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from foreman_worker.registry import Registry
    from foreman_worker.testing import Foreman


@pytest.fixture
def foreman_registry() -> Registry:
    """The handlers ``foreman`` runs: by default, the ones ``@task`` registered."""
    from foreman_worker.registry import registry

    return registry


@pytest.fixture
def foreman(foreman_registry: Registry) -> Iterator[Foreman]:
    """The API and a worker in this process, on a throwaway database and a fakeredis."""
    from foreman_worker.testing import Foreman

    with Foreman(foreman_registry) as harness:
        yield harness
