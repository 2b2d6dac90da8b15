"""dubfleet coordinator: the HTTP job queue that clients submit to and workers pull from."""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from flask import Flask

from . import config as config_module
from .database import configure_engine
from .errors import register_error_handlers
from .events import DatabaseViews, EventHub, id_epoch
from .extensions import db
from .gate import CostlyViews, KeyGate
from .metrics import Metrics, install_http_timing
from .notify import AppEvents, ClaimNotifier
from .pgnotify import replica_bus
from .policy import QueuePolicy
from .state import EXTENSION_KEY, CoordinatorState, get_state
from .storage import open_storage
from .webhooks import WebhookDispatcher
from .workers import WorkerRegistry

__version__ = "0.1.0"

logger = logging.getLogger(__name__)


class CoordinatorFlask(Flask):
    """Flask, with `ensure_sync`'s answer kept per function. Flask asks it of every hook and view
    on every request (`inspect.iscoroutinefunction`, a few µs each); the functions are the app's
    own, registered once, so the answer never changes."""

    MAX_KNOWN = 4096  # hooks, views and error handlers are far fewer; a bound on odd callers

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._sync: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        try:
            return self._sync[func]
        except KeyError:
            known = super().ensure_sync(func)
            if len(self._sync) < self.MAX_KNOWN:
                self._sync[func] = known
            return known
        except TypeError:  # an unhashable callable: asked every time, as Flask does
            return super().ensure_sync(func)


def _job_view(session: Any, job: Any) -> dict[str, Any]:
    """The job view (a webhook delivery's body)."""
    from .serializers import job_view
    return job_view(session, job)


def _event_hub(app: Flask) -> EventHub:
    """The live event hub, reading job states from the app's database."""
    return EventHub(DatabaseViews(app, int(app.config["MAX_LIST_LIMIT"])),
                    int(app.config["MAX_EVENT_STREAMS"]),
                    max_per_key=int(app.config["MAX_EVENT_STREAMS_PER_KEY"]), first_id=id_epoch())


def _init_state(app: Flask) -> CoordinatorState:
    """Create the storage, queue policy, notifier and callback sender."""
    storage = open_storage(app.config)
    notifier = ClaimNotifier(int(app.config["MAX_CLAIM_WAITERS"]), float(app.config["CLAIM_RECHECK_SECONDS"]))
    sender = None
    if app.config["CALLBACKS_ENABLED"]:
        sender = WebhookDispatcher(_job_view)
    metrics = Metrics()
    events = AppEvents(notifier, sender, metrics.ended, hub=_event_hub(app), bus=replica_bus(app.config))
    state = CoordinatorState(storage=storage, policy=QueuePolicy.from_config(app.config),
                             notifier=notifier, events=events,
                             workers=WorkerRegistry(), callbacks=sender,
                             gate=KeyGate(int(app.config["CLIENT_MAX_INFLIGHT"])),
                             costly=CostlyViews(int(app.config["LIST_CONCURRENCY"])),
                             metrics=metrics)
    app.extensions[EXTENSION_KEY] = state
    return state


def _init_database(app: Flask) -> None:
    """Bind SQLAlchemy, install the engine hooks and upgrade the schema (AUTO_MIGRATE)."""
    db.init_app(app)
    from . import migrate, models  # noqa: F401 - register the tables
    migrate.init_migrations(app)
    with app.app_context():
        configure_engine(db.engine)
        if app.config["AUTO_MIGRATE"]:
            migrate.upgrade(app)


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the coordinator app: defaults, then environment, then `test_config`."""
    app = CoordinatorFlask(__name__)
    app.config.update(config_module.build(test_config))
    app.json.sort_keys = False
    _init_state(app)
    _init_database(app)
    register_error_handlers(app)
    state = get_state(app)
    state.metrics.watch_queue(app)
    install_http_timing(app, state.metrics)
    from .api import register_blueprints
    register_blueprints(app)
    from .web import init_web
    init_web(app)
    logger.info("coordinator ready: data dir %s, database %s, files in %s", app.config["DATA_DIR"],
                app.config["SQLALCHEMY_DATABASE_URI"].split("@")[-1], state.storage.describe())
    return app


__all__ = ["create_app", "get_state", "__version__"]
