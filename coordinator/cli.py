"""`coordinator` command line: serve, manage API keys, prune old jobs."""
from __future__ import annotations

import functools
import logging
import time
from typing import Any, Callable

import click
from flask import Flask

from shared.protocol import KeyKind

from .extensions import db

logger = logging.getLogger(__name__)

# Every option names its environment variable in --help.
option = functools.partial(click.option, show_envvar=True)

# Waitress' body limit sits just above the app's own limit so the app answers most 413s itself;
# waitress' own 413 (a Content-Length past it) is JSON as well (coordinator/serving.py).
_BODY_SLACK = 2 * 1024 * 1024


def _data_dir_option(command: Callable) -> Callable:
    """Shared --data-dir option."""
    return option("--data-dir", envvar="DUBFLEET_DATA_DIR", default=None,
                        type=click.Path(file_okay=False),
                        help="Directory for the SQLite database, inputs and artifacts "
                             "(default ./data).")(command)


def _make_app(data_dir: str | None, **extra: Any) -> Flask:
    """Build the app with the CLI's overrides."""
    from . import create_app
    from .migrate import MigrationError
    overrides = {key: value for key, value in {"DATA_DIR": data_dir, **extra}.items() if value is not None}
    try:
        return create_app(overrides)
    except (ValueError, MigrationError) as exc:
        raise click.ClickException(str(exc)) from exc


def _with_app(command: Callable) -> Callable:
    """Run the command body inside an app context built from --data-dir."""
    @_data_dir_option
    @functools.wraps(command)
    def wrapper(data_dir: str | None, **kwargs: Any) -> Any:
        app = _make_app(data_dir)
        with app.app_context():
            _warn_if_behind(app)
            try:
                return command(app, **kwargs)
            finally:
                db.session.remove()
    return wrapper


@click.group()
@option("--log-level", envvar="LOG_LEVEL", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Logging verbosity.")
def main(log_level: str) -> None:
    """dubfleet coordinator: the job queue server."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_level.upper() != "DEBUG":  # Alembic narrates every connection; coordinator.migrate sums up
        logging.getLogger("alembic").setLevel(logging.WARNING)


@main.command()
@option("--host", envvar="COORDINATOR_HOST", default="127.0.0.1", show_default=True,
              help="Interface to listen on (0.0.0.0 for every interface).")
@option("--port", envvar="PORT", default=8000, show_default=True, type=click.IntRange(1, 65535),
              help="TCP port to listen on.")
@option("--threads", envvar="COORDINATOR_THREADS", default=32, show_default=True,
              type=click.IntRange(4, 1024), help="Request threads (long-polling workers hold one each).")
@option("--connection-limit", envvar="CONNECTION_LIMIT", default=None, type=click.IntRange(min=1),
              help="Open connections at once; more wait in the listen backlog [default: 1000].")
@option("--channel-timeout", envvar="CHANNEL_TIMEOUT", default=None,
              type=click.FloatRange(min=0, min_open=True),
              help="Close a connection idle this many seconds with no request running "
                   "(also cuts a stalled request body) [default: 120].")
@option("--header-timeout", envvar="HEADER_TIMEOUT", default=None,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds from a request's first byte to its last header line; slower "
                   "requests get 408 and are closed [default: 10].")
@option("--shutdown-grace", envvar="SHUTDOWN_GRACE_SECONDS", default=None,
              type=click.FloatRange(min=0),
              help="On SIGTERM/SIGINT, finish requests in flight for up to this many seconds "
                   "(new ones get 503), then exit [default: 30].")
@_data_dir_option
def serve(host: str, port: int, threads: int, connection_limit: int | None,
          channel_timeout: float | None, header_timeout: float | None,
          shutdown_grace: float | None, data_dir: str | None) -> None:
    """Run the coordinator with waitress and the lease reaper; SIGTERM drains, then exits."""
    from . import serving
    from .reaper import start_reaper
    app = _make_app(data_dir, THREADS=threads, CONNECTION_LIMIT=connection_limit,
                    CHANNEL_TIMEOUT=channel_timeout, HEADER_TIMEOUT=header_timeout,
                    SHUTDOWN_GRACE_SECONDS=shutdown_grace)
    _require_current_schema(app)
    max_body = app.config["MAX_UPLOAD_BYTES"] + app.config["MAX_SUBTITLES_BYTES"] + _BODY_SLACK
    settings = serving.ServeSettings.from_app(app, host, port, max_body=max_body)
    reaper = start_reaper(app)
    from .webhooks import start_webhooks
    webhooks = start_webhooks(app)
    background = [reaper] if webhooks is None else [reaper, webhooks]
    click.echo(f"coordinator listening on http://{host}:{port} (data dir {app.config['DATA_DIR']})")
    try:
        from .state import get_state
        serving.serve(app, settings, background=background, on_drain=get_state(app).events.close)
    finally:
        for thread in background:
            thread.stop()


def _warn_if_behind(app: Flask) -> None:
    """Say so when AUTO_MIGRATE is off and the database is behind this version's schema."""
    from . import migrate
    if not app.config["AUTO_MIGRATE"] and not migrate.is_current(app):
        logger.warning("the database is not at this version's schema (%s): run "
                       "`coordinator db upgrade`", migrate.head_revision(app))


def _require_current_schema(app: Flask) -> None:
    """Refuse to serve a database that is not at this version's schema (AUTO_MIGRATE off)."""
    from . import migrate
    with app.app_context():
        if not migrate.is_current(app):
            raise click.ClickException("the database is not at this version's schema: run "
                                       "`coordinator db upgrade` (or set AUTO_MIGRATE=1)")


@main.group("db")
def database() -> None:
    """Database schema: upgrade to this version's revision, show it, check the models."""


def _schema_command(command: Callable) -> Callable:
    """Run a `db` subcommand in an app built without upgrading at start; errors exit 1."""
    @_data_dir_option
    @functools.wraps(command)
    def wrapper(data_dir: str | None, **kwargs: Any) -> Any:
        from .migrate import MigrationError
        app = _make_app(data_dir, AUTO_MIGRATE=False)
        with app.app_context():
            try:
                return command(app, **kwargs)
            except MigrationError as exc:
                raise click.ClickException(exc.message) from exc
            finally:
                db.engine.dispose()
    return wrapper


@database.command("upgrade")
@_schema_command
def db_upgrade(app: Flask) -> None:
    """Upgrade the database to this version's schema (what `serve` does at start with AUTO_MIGRATE)."""
    from . import migrate
    result = migrate.upgrade(app)
    if result.legacy_columns:
        click.echo(f"added columns of older releases: {', '.join(result.legacy_columns)}")
    if result.before == result.after:
        click.echo(f"database already at {result.after} (head)")
    else:
        click.echo(f"database upgraded from {result.before or 'nothing'} to {result.after} (head)")


@database.command("current")
@_schema_command
def db_current(app: Flask) -> None:
    """Print the database's revision; exit 1 when it is behind this version's (head)."""
    from . import migrate
    with db.engine.connect() as conn:
        current = migrate.current_revision(conn)
    head = migrate.head_revision(app)
    if current == head:
        click.echo(f"{current} (head)")
        return
    click.echo(f"{current or 'none (not under migrations yet)'}; this version needs {head}: "
               "run `coordinator db upgrade`")
    raise click.exceptions.Exit(1)


@database.command("check")
@_schema_command
def db_check(app: Flask) -> None:
    """Exit 1 when the models differ from the migrations' head (a model change needs a revision)."""
    from . import migrate
    if not migrate.is_current(app):
        raise click.ClickException("the database is not at head: run `coordinator db upgrade` first")
    found = migrate.differences(app)
    for difference in found:
        click.echo(f"  {difference}")
    if found:
        raise click.ClickException(f"{len(found)} difference(s) between the models and the "
                                   "migrations: add a revision (README \"Database migrations\")")
    click.echo("the models match the migrations' head")


@main.command("create-key")
@option("--kind", envvar="DUBFLEET_KEY_KIND", required=True,
              type=click.Choice([k.value for k in KeyKind]), help="Who the key is for.")
@option("--name", envvar="DUBFLEET_KEY_NAME", required=True, help="A label to recognise the key by.")
@option("--sign-in-link", is_flag=True,
        help="Also print a one-time link that signs a browser in to the web app as this key "
             "(client and admin keys; it works once, for SIGN_IN_LINK_MINUTES).")
@option("--url", "public_url", envvar="DUBFLEET_PUBLIC_URL", default="http://127.0.0.1:8000",
        show_default=True, help="The coordinator's address as browsers reach it (for the link).")
@_with_app
def create_key(app: Flask, kind: str, name: str, sign_in_link: bool, public_url: str) -> None:
    """Create an API key and print it (it is shown only this once)."""
    from .auth import WEB_KINDS, create_key as make
    from . import audit
    if sign_in_link and KeyKind(kind) not in WEB_KINDS:
        raise click.BadParameter("only client and admin keys can sign in to the web app",
                                 param_hint="--sign-in-link")
    row, plain = make(db.session, KeyKind(kind), name.strip()[:128] or kind)
    audit.record(db.engine, "key_created", audit.Actor(None, "cli"), detail=f"#{row.id} {kind} {row.name!r}")
    click.echo(plain)
    click.echo(f"created {kind} key #{row.id} {name!r}; store it now, it cannot be shown again", err=True)
    if sign_in_link:
        click.echo(_sign_in_link(app, row.id, public_url))
    if KeyKind(kind) in _JOB_KINDS:
        _echo_webhook_secret(app, row.id)


# Keys that own jobs, so their jobs' webhook deliveries are signed with the key's secret.
_JOB_KINDS = (KeyKind.CLIENT, KeyKind.ADMIN)


def _echo_webhook_secret(app: Flask, key_id: int) -> None:
    """Give the key a fresh webhook signing secret and print it (last line of stdout)."""
    from .webhook_secrets import rotate
    secret = rotate(db.session, key_id, str(app.config["SECRET_KEY"]))
    if secret is None:
        raise click.ClickException(f"no active key with id {key_id}")
    click.echo("webhook signing secret (verifies X-Dubfleet-Signature; shown only this once):",
               err=True)
    click.echo(secret)


@main.command("rotate-webhook-secret")
@option("--id", "key_id", envvar="DUBFLEET_KEY_ID", required=True, type=int,
        help="Id of an active client or admin key (see list-keys).")
@_with_app
def rotate_webhook_secret(app: Flask, key_id: int) -> None:
    """Give a key a new webhook signing secret and print it; the old one stops at once."""
    from . import audit
    from .models import ApiKey
    row = db.session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None or KeyKind(row.kind) not in _JOB_KINDS:
        raise click.ClickException(f"no active client or admin key with id {key_id}")
    _echo_webhook_secret(app, key_id)
    audit.record(db.engine, "webhook_secret_rotated", audit.Actor(None, "cli"), detail=f"#{key_id}")


def _sign_in_link(app: Flask, key_id: int, public_url: str) -> str:
    """A fresh one-time sign-in link for `key_id` (the token is stored hashed, with an expiry)."""
    from .web import PREFIX
    from .web.tokens import create_token
    minutes = float(app.config["SIGN_IN_LINK_MINUTES"])
    token = create_token(db.session, key_id, minutes * 60)
    click.echo(f"one-time sign-in link (works once, for {minutes:g} min):", err=True)
    return f"{public_url.rstrip('/')}{PREFIX}/sign-in/{token}"


@main.command("sign-in-link")
@option("--id", "key_id", envvar="DUBFLEET_KEY_ID", required=True, type=int,
        help="Id of an active client or admin key (see list-keys).")
@option("--url", "public_url", envvar="DUBFLEET_PUBLIC_URL", default="http://127.0.0.1:8000",
        show_default=True, help="The coordinator's address as browsers reach it.")
@_with_app
def sign_in_link(app: Flask, key_id: int, public_url: str) -> None:
    """Print a one-time link that signs a browser in to the web app as an existing key."""
    from .auth import WEB_KINDS
    from .models import ApiKey
    row = db.session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None or KeyKind(row.kind) not in WEB_KINDS:
        raise click.ClickException(f"no active client or admin key with id {key_id}")
    click.echo(_sign_in_link(app, row.id, public_url))


@main.command("list-keys")
@_with_app
def list_keys(app: Flask) -> None:
    """List API keys (never the keys themselves)."""
    from .models import ApiKey
    for row in db.session.scalars(db.select(ApiKey).order_by(ApiKey.id)):
        state = "revoked" if row.revoked_at else "active"
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(row.created_at))
        unsigned = KeyKind(row.kind) in _JOB_KINDS and not row.webhook_secret
        note = "\t(no webhook secret: rotate-webhook-secret)" if unsigned else ""
        click.echo(f"{row.id}\t{row.kind}\t{state}\t{row.prefix}…\t{created}\t{row.name}{note}")


@main.command("revoke-key")
@option("--id", "key_id", envvar="DUBFLEET_KEY_ID", required=True, type=int,
              help="Id of the key to revoke (see list-keys).")
@_with_app
def revoke_key(app: Flask, key_id: int) -> None:
    """Revoke an API key; requests using it get 401 from now on."""
    from .auth import revoke_key as revoke
    from . import audit
    if not revoke(db.session, key_id):
        raise click.ClickException(f"no active key with id {key_id}")
    audit.record(db.engine, "key_revoked", audit.Actor(None, "cli"), detail=f"#{key_id}")
    click.echo(f"revoked key #{key_id}")


@main.command()
@option("--days", envvar="DUBFLEET_PRUNE_DAYS", default=30.0, show_default=True,
              type=click.FloatRange(min=0), help="Delete finished jobs older than this many days.")
@_with_app
def prune(app: Flask, days: float) -> None:
    """Delete finished (completed, failed, cancelled) jobs and their files."""
    from . import queries
    from .state import get_state
    from .workers import prune_workers
    from .retention import forget
    removed = queries.prune(db.session, days * 86400)
    forget(db.session, removed)  # their lines leave the search index
    storage = get_state(app).storage
    for job_id in removed:
        storage.remove_job(job_id)
    gone = prune_workers(db.session, time.time() - max(days * 86400, 86400))
    click.echo(f"pruned {len(removed)} jobs and {gone} worker sessions")


@main.command()
@_with_app
def reindex(app: Flask) -> None:
    """Rebuild the search index from every job's stored transcript.json."""
    from . import search
    from .state import get_state
    limit = int(app.config["MAX_INDEXED_TRANSCRIPT_MB"]) * 1024 * 1024
    counts = search.reindex(db.session, get_state(app).storage, limit)
    click.echo(f"indexed {counts['segments']} lines of {counts['jobs']} jobs"
               + (f" ({counts['failed']} transcripts unreadable, see the log)" if counts["failed"] else ""))


def _parse_since(value: str | None) -> float | None:
    """Epoch seconds from '2026-11-30', '2026-11-30T12:00', or a relative '90m', '24h', '7d'."""
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(value[:-1]) * units[value[-1]]
    from datetime import datetime, timezone
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use an ISO date/time (2026-11-30, 2026-11-30T12:00) or 90m/24h/7d",
                                 param_hint="--since") from None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


@main.command()
@option("--key", "key_name", envvar="DUBFLEET_AUDIT_KEY", default=None, help="Only this key's events (its name).")
@option("--since", envvar="DUBFLEET_AUDIT_SINCE", default=None,
        help="Only events since then: an ISO date/time (UTC unless given) or 90m / 24h / 7d.")
@option("--job", "job_id", envvar="DUBFLEET_AUDIT_JOB", default=None, help="Only this job's events.")
@option("--limit", envvar="DUBFLEET_AUDIT_LIMIT", default=1000, show_default=True, type=click.IntRange(1))
@option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_with_app
def audit(app: Flask, key_name: str | None, since: str | None, job_id: str | None, limit: int,
          as_json: bool) -> None:
    """Show the audit log: key changes, submits, cancels, retries, downloads (oldest first)."""
    import json

    from . import audit as audit_log
    for event in audit_log.events(db.engine, key_name=key_name, since=_parse_since(since),
                                  job_id=job_id, limit=limit):
        if as_json:
            click.echo(json.dumps(event))
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event["at"]))
        who = event["key_name"] + (f"#{event['key_id']}" if event["key_id"] is not None else "")
        click.echo(f"{when}Z\t{who}\t{event['action']}\t{event['job_id'] or '-'}\t"
                   f"{event['remote']}\t{event['detail']}")
