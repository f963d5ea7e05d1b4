"""Foreman API service: the source of truth for runs, tasks and run data.

Importing this package is cheap: the wire models in :mod:`foreman_api.schemas` are shared with
the worker SDK, so nothing here pulls in FastAPI or SQLAlchemy until the app is built.
"""

__version__ = "0.1.0"
