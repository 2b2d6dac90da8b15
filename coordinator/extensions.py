"""Extension singletons, bound to an app in `create_app`."""
from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy

# expire_on_commit=False: after a queue function commits, replies are built from the values it
# just wrote; re-reading them would open a new (BEGIN IMMEDIATE) transaction on SQLite and
# hold the write lock until the request ends. Locked reads use populate_existing instead.
db = SQLAlchemy(session_options={"expire_on_commit": False})
