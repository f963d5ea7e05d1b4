"""``foreman-api``: migrate the database, serve the API, manage API keys."""

from __future__ import annotations

import argparse
import logging
import sys
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

try:
    import sqlalchemy as sa
except ModuleNotFoundError as missing:  # the worker-only install: `pip install foreman`
    raise SystemExit(
        f"foreman-api: the API service's dependencies are not installed ({missing.name} is "
        "missing): pip install 'foreman[api]'"
    ) from None

from foreman_api.auth import issue_key
from foreman_api.clock import as_utc, utcnow
from foreman_api.metrics.processes import shared_directory
from foreman_api.settings import Settings, environment_help, get_settings, parse_rate_limit
from foreman_api.storage import api_keys as key_storage
from foreman_api.storage.engine import create_engine, is_sqlite
from foreman_api.storage.migrate import pending_revision, upgrade

_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def parse_expiry(text: str) -> datetime:
    """``30d``, ``12h``, ``90m``, ``2w`` from now, or an ISO-8601 timestamp (UTC if naive).

    The moment must lie in the future; anything else is a CliError.
    """
    text = text.strip()
    now = utcnow()
    unit = _DURATION_UNITS.get(text[-1:])
    try:
        if unit and text[:-1].isdigit():
            moment = now + timedelta(**{unit: int(text[:-1])})
        else:
            moment = as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except (ValueError, OverflowError):
        raise CliError(
            f"invalid --expires {text!r}: use a duration (30d, 12h, 90m, 2w) or an ISO date"
        ) from None
    if moment <= now:
        raise CliError(f"invalid --expires {text!r}: the expiry must be in the future")
    return moment


def _engine(*, create: bool = False) -> sa.Engine:
    """The configured database; a SQLite file that does not exist is an error unless
    ``create`` (``migrate`` makes it; other commands would only make an empty one)."""
    url = get_settings().database_url
    path = sa.make_url(url).database
    if not create and is_sqlite(url) and path and path != ":memory:" and not Path(path).exists():
        raise CliError(
            f"no SQLite database at {Path(path).resolve()}: run `foreman-api migrate` to "
            "create it, or set FOREMAN_DATABASE_URL to the one you meant"
        )
    return create_engine(url, pool_size=1)


def _require_migrated(engine: sa.Engine) -> None:
    if pending_revision(engine) is not None:
        raise CliError("the database schema is not up to date: run `foreman-api migrate` first")


def cmd_migrate(_args: argparse.Namespace) -> None:
    engine = _engine(create=True)
    upgrade(engine)
    print(f"database migrated: {engine.url.render_as_string(hide_password=True)}")


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    _require_migrated(_engine())
    with shared_directory(args.workers):  # the processes' metrics, added up at a scrape
        uvicorn.run(
            "foreman_api.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            access_log=args.access_log,
            log_level=args.log_level,
        )


def cmd_keys_create(args: argparse.Namespace) -> None:
    engine = _engine()
    _require_migrated(engine)
    rate_limit = args.rate_limit
    if rate_limit is not None:
        try:
            parse_rate_limit(rate_limit)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    try:
        secret, record = issue_key(
            engine,
            env=get_settings().env,
            org_id=args.org,
            name=args.name,
            permissions=[p.strip() for p in args.permissions.split(",") if p.strip()],
            rate_limit=rate_limit,
            expires_at=parse_expiry(args.expires) if args.expires else None,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.quiet:
        print(secret)
        return
    print(f"created key {record.id} ({record.name}) for organisation {record.org_id}")
    print(f"permissions: {','.join(record.permissions)}")
    print(f"rate limit: {record.rate_limit or 'server default'}")
    if record.expires_at:
        print(f"expires: {record.expires_at.isoformat()}")
    print("the key is shown once; store it now:")
    print(secret)


def cmd_keys_list(_args: argparse.Namespace) -> None:
    engine = _engine()
    _require_migrated(engine)
    rows = key_storage.list_keys(engine)
    header = ("id", "org", "name", "prefix", "permissions", "rate limit", "status", "last used")
    print("\t".join(header))
    now = utcnow()
    for key in rows:
        if key.revoked_at:
            status = "revoked"
        elif key.expires_at and as_utc(key.expires_at) <= now:
            status = "expired"
        else:
            status = "active"
        print(
            "\t".join(
                [
                    str(key.id),
                    key.org_id,
                    key.name,
                    f"{key.prefix}…",
                    ",".join(key.permissions),
                    key.rate_limit or "default",
                    status,
                    key.last_used_at.isoformat() if key.last_used_at else "never",
                ]
            )
        )


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    engine = _engine()
    _require_migrated(engine)
    try:
        key_id = uuid.UUID(args.id)
    except ValueError:
        raise CliError(f"not a key id: {args.id!r} (see `foreman-api keys list`)") from None
    if not key_storage.revoke_key(engine, key_id):
        raise CliError(f"no active key with id {key_id}")
    print(f"revoked key {key_id}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="foreman-api",
        description="Foreman's API service: migrate the database, serve the API, manage API keys.",
        epilog=environment_help(Settings),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    migrate = commands.add_parser("migrate", help="create or upgrade the database schema")
    migrate.set_defaults(func=cmd_migrate)

    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="API processes (default 1)")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=cmd_serve)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a key and print it once")
    create.add_argument("--org", required=True, help="organisation id the key belongs to")
    create.add_argument("--name", required=True, help="a label for the key")
    create.add_argument(
        "--permissions", required=True, help="comma-separated, e.g. '*' or 'runs:*,tasks:read'"
    )
    create.add_argument(
        "--rate-limit", help="e.g. 100/15m, 5000/1m or 'unlimited' (default: server default)"
    )
    create.add_argument("--expires", help="duration (30d, 12h) or ISO-8601 time")
    create.add_argument("--quiet", "-q", action="store_true", help="print only the key")
    create.set_defaults(func=cmd_keys_create)
    keys.add_parser("list", help="list keys (no secrets)").set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")
    revoke.set_defaults(func=cmd_keys_revoke)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except CliError as exc:
        print(f"foreman-api: {exc}", file=sys.stderr)
        sys.exit(2)
    except sa.exc.OperationalError as exc:
        print(f"foreman-api: cannot reach the database: {exc.orig}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
