"""The worker table: which worker sessions are alive and what they can do."""
from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from shared.protocol import LANGUAGE_KINDS, WorkerInfo

from .models import Worker
from .validation import clean_text

logger = logging.getLogger(__name__)


# Seconds a process reuses the online workers' capabilities for job views' `waiting_for` (a
# worker this process records drops the copy at once; another replica's, within this time).
CAPABILITIES_CACHE_SECONDS = 1.0


class WorkerRegistry:
    """Records worker sessions, writing at most once per `min_interval` per session, and keeps a
    short-lived copy of the online workers' capabilities."""

    def __init__(self, min_interval: float = 10.0):
        self.min_interval = min_interval
        self._last_write: dict[str, tuple[float, WorkerInfo | None]] = {}
        self._lock = threading.Lock()
        self._online: tuple[float, float, list[dict]] | None = None  # (read at, window, caps)

    def info_of(self, session_id: str) -> WorkerInfo | None:
        """The capabilities this worker session last advertised to this process (None if unseen)."""
        with self._lock:
            entry = self._last_write.get(session_id)
        return entry[1] if entry else None

    def forget_online(self) -> None:
        """Drop the copy of the online workers' capabilities (the next view reads them)."""
        self._online = None

    def online(self, session: Session, window: float, now: float | None = None) -> list[dict]:
        """`online_capabilities`, read at most once per CAPABILITIES_CACHE_SECONDS."""
        now = time.time() if now is None else now
        cached = self._online
        if cached is not None and cached[1] == window and 0 <= now - cached[0] < CAPABILITIES_CACHE_SECONDS:
            return cached[2]
        caps = online_capabilities(session, window, now)
        self._online = (now, window, caps)
        return caps

    def _due(self, session_id: str, now: float, info: WorkerInfo | None) -> bool:
        """True when this session's row should be written now (new capabilities, or stale)."""
        with self._lock:
            last, last_info = self._last_write.get(session_id, (None, None))
            fresh = last is not None and now - last < self.min_interval
            if fresh and (info is None or info == last_info):
                return False
            if len(self._last_write) > 10_000:
                self._last_write.clear()
            self._last_write[session_id] = (now, info or last_info)
            return True

    def touch(self, session: Session, session_id: str | None, info: WorkerInfo | None = None,
              now: float | None = None) -> None:
        """Upsert the session's last_seen (and capabilities when `info` is given); never raises."""
        now = time.time() if now is None else now
        session_id = clean_text(session_id or (info.session_id if info else ""), 128)
        if not session_id or not self._due(session_id, now, info):
            return
        try:
            session.execute(_upsert(session, session_id, info, now))
            session.commit()
            if info is not None:
                self.forget_online()  # new or changed capabilities: views read them again
        except SQLAlchemyError as exc:
            session.rollback()
            logger.warning("could not record worker session %s: %s", session_id, exc)


def _upsert(session: Session, session_id: str, info: WorkerInfo | None, now: float):
    """An INSERT ... ON CONFLICT DO UPDATE for the session's row."""
    values = {"session_id": session_id, "first_seen": now, "last_seen": now}
    update = {"last_seen": now}
    if info is not None:
        described = {"worker_id": info.worker_id, "hostname": info.hostname, "device": info.device,
                     "capabilities": info.to_dict()}
        values.update(described)
        update.update(described)
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(Worker).values(**values)
    return stmt.on_conflict_do_update(index_elements=[Worker.session_id], set_=update)


def workers_online(session: Session, window: float, now: float | None = None) -> int:
    """How many worker sessions were seen within `window` seconds."""
    now = time.time() if now is None else now
    return session.scalar(select(func.count()).select_from(Worker).where(Worker.last_seen >= now - window)) or 0




def can_run(caps: dict, kind: str, asr_model: str | None, target_language: str) -> bool:
    """Whether advertised capabilities cover a job (the claim statement's filter, in Python)."""
    if kind not in caps.get("kinds", ()):
        return False
    if asr_model is not None and asr_model not in caps.get("asr_models", ()):
        return False
    return kind not in LANGUAGE_KINDS or target_language in caps.get("target_languages", ())


def online_capabilities(session: Session, window: float, now: float | None = None) -> list[dict]:
    """The advertised capabilities of every worker seen within `window` seconds (parsed once)."""
    now = time.time() if now is None else now
    rows = session.scalars(select(Worker.capabilities).where(Worker.last_seen >= now - window))
    return [caps or {} for caps in rows]


def waiting_for(job, workers: list[dict]) -> str | None:
    """For a queued job none of the online `workers` can run: what it is waiting for (else None)."""
    if any(can_run(caps, job.kind, job.asr_model, job.target_language) for caps in workers):
        return None
    need = [f"{job.kind} jobs"]
    if job.asr_model:
        need.append(f"ASR model '{job.asr_model}'")
    if job.kind in LANGUAGE_KINDS:
        need.append(f"target language '{job.target_language}'")
    return "no online worker can run this job yet; it needs a worker with " + ", ".join(need)


def prune_workers(session: Session, older_than: float) -> int:
    """Delete worker sessions unseen since `older_than`; returns how many."""
    rows = session.execute(Worker.__table__.delete().where(Worker.last_seen < older_than))
    session.commit()
    return rows.rowcount or 0
