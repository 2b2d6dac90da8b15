"""HTTP blueprints: client endpoints, worker endpoints, the health check and the API docs."""
from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask) -> None:
    """Attach every blueprint to `app`."""
    from .client import bp as client_bp
    from .docs import bp as docs_bp
    from .health import bp as health_bp
    from .worker import bp as worker_bp

    from ..ratelimit import init_rate_limits

    init_rate_limits(app, client=client_bp, worker=worker_bp, exempt=health_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(worker_bp)
    app.register_blueprint(client_bp)
    app.register_blueprint(docs_bp)
