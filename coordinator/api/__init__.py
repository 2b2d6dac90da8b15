"""HTTP blueprints: client endpoints, worker endpoints, the health check and the API docs."""
from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask) -> None:
    """Attach every blueprint to `app`."""
    from .client import bp as client_bp
    from .docs import bp as docs_bp
    from .events import bp as events_bp
    from .health import bp as health_bp
    from .search import bp as search_bp
    from .worker import bp as worker_bp
    from . import redub  # noqa: F401  (adds the re-dub routes to the client and worker blueprints)
    from . import webhooks  # noqa: F401  (adds GET /jobs/<id>/deliveries to the client blueprint)
    from . import summary  # noqa: F401  (adds PUT /jobs/<id>/summary to the client blueprint)
    from . import batch  # noqa: F401  (adds POST /jobs/batch to the worker blueprint)

    from ..ratelimit import init_rate_limits

    limiter = init_rate_limits(app, client=client_bp, worker=worker_bp, exempt=health_bp)
    if limiter is not None:  # event streams and searches are client calls: the same budget
        limiter.shared_limit(app.config["CLIENT_RATE_LIMIT"], scope="client")(events_bp)
        limiter.shared_limit(app.config["CLIENT_RATE_LIMIT"], scope="client")(search_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(worker_bp)
    app.register_blueprint(client_bp)
    app.register_blueprint(events_bp)
    app.register_blueprint(search_bp)
    app.register_blueprint(docs_bp)
