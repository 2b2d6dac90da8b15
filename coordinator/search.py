"""Full-text search over transcripts and translations (README "Search").

Every segment of a job's `transcript.json` (source lines and `translation.segments`) is one row
of `search_segments` (revision 0003): indexed when the worker uploads the transcript (replacing
an earlier run's rows), removed with the job, rebuilt by `coordinator reindex`. SQLite answers
from two FTS5 tables (Porter-stemmed for English, unstemmed otherwise, see
`search_query.SQLITE_STEMMED`), PostgreSQL from a GIN-indexed `tsvector` built with each row's
language configuration. A search only ever joins the caller's own jobs (admin: all).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .errors import ValidationFailed
from .models import Artifact, Job
from .search_query import (MARK_END, MARK_START, SQLITE_STEMMED, PG_CONFIGS, PG_SIMPLE,
                           SearchRequest, Snippet, base_language, clean_text, fts_query,
                           pg_config, snippet_of)

logger = logging.getLogger(__name__)

TRANSCRIPT = "transcript.json"
SNIPPET_TOKENS = 24
_FTS_TABLES = ("search_fts_stemmed", "search_fts_plain")
_COLUMNS = "job_id, owner_key_id, language, kind, segment_index, start_sec, end_sec, text"
_PG_HEADLINE = (f"StartSel={MARK_START}, StopSel={MARK_END}, MaxWords={SNIPPET_TOKENS}, "
                "MinWords=8, ShortWord=2")


class TranscriptUnreadable(ValidationFailed):
    """The transcript is not a JSON object of segments."""


@dataclass(frozen=True)
class Entry:
    """One indexed line: a source segment or a translated one."""

    kind: str
    language: str
    index: int
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Hit:
    """One search result: where in which job, and the snippet around the match."""

    job_id: str
    input_name: str
    segment_index: int
    start: float
    end: float
    language: str
    kind: str
    snippet: Snippet

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (GET /search)."""
        return {"job_id": self.job_id, "input_name": self.input_name,
                "segment_index": self.segment_index, "start": self.start, "end": self.end,
                "language": self.language, "kind": self.kind, "snippet": self.snippet.text,
                "highlights": [list(span) for span in self.snippet.highlights]}


def _is_sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


# --- reading transcripts ---------------------------------------------------------------------


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _entries(segments: Any, kind: str, language: str) -> Iterable[Entry]:
    """The indexable segments of one list (malformed items are skipped)."""
    for position, seg in enumerate(segments if isinstance(segments, list) else []):
        if not isinstance(seg, Mapping) or not isinstance(seg.get("text"), str):
            continue
        text = clean_text(seg["text"])
        index = seg.get("index")
        if text:
            yield Entry(kind, language, index if isinstance(index, int) else position,
                        _number(seg.get("start")), _number(seg.get("end")), text)


def transcript_entries(data: Any, source_language: str | None = None,
                       target_language: str | None = None) -> list[Entry]:
    """Source and translation lines of a parsed transcript.json."""
    if not isinstance(data, Mapping):
        raise TranscriptUnreadable("transcript.json is not a JSON object")
    source = base_language(data.get("language") or source_language)
    entries = list(_entries(data.get("segments"), "source", source))
    translation = data.get("translation")
    if isinstance(translation, Mapping):
        target = base_language(translation.get("target_language") or target_language)
        entries += _entries(translation.get("segments"), "translation", target)
    return entries


# --- writing the index -----------------------------------------------------------------------


def remove_jobs(session: Session, job_ids: Sequence[str]) -> None:
    """Delete the jobs' rows from the index (the caller commits)."""
    if not job_ids:
        return
    ids = sa.bindparam("ids", expanding=True)
    if _is_sqlite(session):
        for table in _FTS_TABLES:
            session.execute(sa.text(f"DELETE FROM {table} WHERE rowid IN "
                                    "(SELECT id FROM search_segments WHERE job_id IN :ids)")
                            .bindparams(ids), {"ids": list(job_ids)})
    session.execute(sa.text("DELETE FROM search_segments WHERE job_id IN :ids").bindparams(ids),
                    {"ids": list(job_ids)})


def _row(job_id: str, owner_key_id: int, entry: Entry) -> dict[str, Any]:
    return {"job_id": job_id, "owner_key_id": owner_key_id, "language": entry.language,
            "kind": entry.kind, "segment_index": entry.index, "start_sec": entry.start,
            "end_sec": entry.end, "text": entry.text}


def _insert_sqlite(session: Session, job_id: str, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        row["stemmed"] = row["language"] in SQLITE_STEMMED
    session.execute(sa.text(f"INSERT INTO search_segments ({_COLUMNS}, stemmed) VALUES "
                            "(:job_id, :owner_key_id, :language, :kind, :segment_index, "
                            ":start_sec, :end_sec, :text, :stemmed)"), rows)
    for table, stemmed in zip(_FTS_TABLES, (1, 0)):
        session.execute(sa.text(f"INSERT INTO {table} (rowid, text) SELECT id, text FROM "
                                "search_segments WHERE job_id = :job AND stemmed = :stemmed"),
                        {"job": job_id, "stemmed": stemmed})


def _insert_postgres(session: Session, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        row["ts_config"] = pg_config(row["language"])
    session.execute(sa.text(f"INSERT INTO search_segments ({_COLUMNS}, ts_config, tsv) VALUES "
                            "(:job_id, :owner_key_id, :language, :kind, :segment_index, "
                            ":start_sec, :end_sec, :text, CAST(:ts_config AS varchar), "
                            "to_tsvector(CAST(CAST(:ts_config AS varchar) AS regconfig), :text))"),
                    rows)


def index_entries(session: Session, job_id: str, owner_key_id: int, entries: Sequence[Entry]) -> int:
    """Replace the job's rows in the index with `entries` (the caller commits); returns how many."""
    remove_jobs(session, [job_id])
    rows = [_row(job_id, owner_key_id, entry) for entry in entries]
    if rows:
        (_insert_sqlite(session, job_id, rows) if _is_sqlite(session)
         else _insert_postgres(session, rows))
    return len(rows)


def index_transcript(session: Session, storage: Any, job_id: str, relpath: str, max_bytes: int) -> int:
    """Index the stored transcript.json at `relpath` for its job, and commit; returns the rows."""
    job = session.get(Job, job_id)
    if job is None:
        return 0
    try:
        data = json.loads(storage.read_bytes(relpath, max_bytes))
    except (ValueError, UnicodeDecodeError) as exc:
        raise TranscriptUnreadable(f"transcript.json of job {job_id} is not JSON: {exc}") from exc
    entries = transcript_entries(data, job.detected_language or job.source_language,
                                 job.target_language)
    count = index_entries(session, job_id, job.owner_key_id, entries)
    session.commit()
    return count


def on_upload(session: Session, storage: Any, job_id: str, upload: Any, max_bytes: int) -> None:
    """After a worker's upload: index it when it is a new transcript.json (never raises: the
    upload has been stored either way, and `coordinator reindex` can catch up)."""
    if upload.artifact.name != TRANSCRIPT or upload.repeated or not upload.path:
        return
    try:
        count = index_transcript(session, storage, job_id, upload.path, max_bytes)
        logger.info("job %s: indexed %d transcript lines for search", job_id, count)
    except Exception:
        session.rollback()
        logger.exception("job %s: could not index transcript.json for search", job_id)


def _latest_transcripts(session: Session) -> list[sa.Row]:
    """(job_id, path) of each job's transcript.json from its newest run."""
    newest = (sa.select(Artifact.job_id, sa.func.max(Artifact.attempt).label("attempt"))
              .where(Artifact.name == TRANSCRIPT).group_by(Artifact.job_id).subquery())
    return list(session.execute(
        sa.select(Artifact.job_id, Artifact.path).join(
            newest, sa.and_(Artifact.job_id == newest.c.job_id, Artifact.attempt == newest.c.attempt))
        .where(Artifact.name == TRANSCRIPT).order_by(Artifact.job_id)))


def reindex(session: Session, storage: Any, max_bytes: int) -> dict[str, int]:
    """Rebuild the whole index from the stored transcripts; returns counts."""
    session.execute(sa.text("DELETE FROM search_segments"))
    if _is_sqlite(session):
        for table in _FTS_TABLES:
            session.execute(sa.text(f"DELETE FROM {table}"))
    session.commit()
    counts = {"jobs": 0, "segments": 0, "failed": 0}
    for job_id, path in _latest_transcripts(session):
        try:
            counts["segments"] += index_transcript(session, storage, job_id, path, max_bytes)
            counts["jobs"] += 1
        except Exception as exc:  # one unreadable file must not stop the rebuild
            session.rollback()
            counts["failed"] += 1
            logger.warning("reindex: job %s skipped: %s", job_id, exc)
    return counts


# --- searching -------------------------------------------------------------------------------


def _filters(owner_key_id: int | None, request: SearchRequest) -> tuple[str, dict[str, Any]]:
    """The WHERE clause of the caller's scope and the filters."""
    where, params = ["1 = 1"], {}
    if owner_key_id is not None:
        where.append("s.owner_key_id = :owner")
        params["owner"] = owner_key_id
    if request.language:
        where.append("s.language = :language")
        params["language"] = request.language
    if request.kind:
        where.append("s.kind = :kind")
        params["kind"] = request.kind
    return " AND ".join(where), params


_SELECT = ("s.id, s.job_id, j.input_name, s.segment_index, s.start_sec, s.end_sec, s.language, "
           "s.kind, count(*) OVER () AS total")


def _sqlite_page(session: Session, request: SearchRequest, where: str,
                 params: dict[str, Any]) -> list[sa.Row]:
    hits = " UNION ALL ".join(f"SELECT rowid AS id, bm25({t}) AS rank FROM {t} WHERE {t} MATCH :q"
                              for t in _FTS_TABLES)
    # CROSS JOIN fixes the order: the matches first, then their rows by primary key (left to
    # itself, SQLite may walk the owner's rows and run the full-text match for each).
    sql = (f"WITH hits AS ({hits}) SELECT {_SELECT} FROM hits h "
           "CROSS JOIN search_segments s ON s.id = h.id CROSS JOIN jobs j ON j.id = s.job_id "
           f"WHERE {where} ORDER BY h.rank, s.job_id, s.segment_index LIMIT :limit OFFSET :offset")
    return list(session.execute(sa.text(sql), {**params, "q": fts_query(request.q)}))


def _sqlite_snippets(session: Session, request: SearchRequest, ids: list[int]) -> dict[int, str]:
    marked: dict[int, str] = {}
    for table in _FTS_TABLES:
        sql = sa.text(f"SELECT rowid, snippet({table}, 0, :a, :b, '…', {SNIPPET_TOKENS}) FROM {table} "
                      f"WHERE {table} MATCH :q AND rowid IN :ids").bindparams(
            sa.bindparam("ids", expanding=True))
        marked.update(session.execute(sql, {"a": MARK_START, "b": MARK_END, "ids": ids,
                                            "q": fts_query(request.q)}).all())
    return marked


_PG_QUERIES = ("WITH q AS (SELECT c.cfg, websearch_to_tsquery(CAST(c.cfg AS regconfig), :q) AS query "
               "FROM unnest(CAST(:configs AS text[])) AS c(cfg))")


def _postgres_page(session: Session, request: SearchRequest, where: str,
                   params: dict[str, Any]) -> list[sa.Row]:
    sql = (f"{_PG_QUERIES} SELECT {_SELECT}, ts_rank(s.tsv, q.query) AS rank FROM q "
           "JOIN search_segments s ON s.ts_config = q.cfg AND s.tsv @@ q.query "
           f"JOIN jobs j ON j.id = s.job_id WHERE {where} "
           "ORDER BY rank DESC, s.job_id, s.segment_index LIMIT :limit OFFSET :offset")
    configs = sorted({*PG_CONFIGS.values(), PG_SIMPLE})
    return list(session.execute(sa.text(sql), {**params, "q": request.q, "configs": configs}))


# ts_headline's parser drops what looks like markup (`<b>`, `&amp;`) from its output: those
# characters are swapped for private-use ones around the call, and back.
_PG_HIDE = {"<": "\ue000", ">": "\ue001", "&": "\ue002"}
_PG_SHOW = str.maketrans({hidden: shown for shown, hidden in _PG_HIDE.items()})


def _postgres_snippets(session: Session, request: SearchRequest, ids: list[int]) -> dict[int, str]:
    sql = sa.text("SELECT id, ts_headline(CAST(ts_config AS regconfig), translate(text, :shown, :hidden), "
                  "websearch_to_tsquery(CAST(ts_config AS regconfig), :q), :opts) "
                  "FROM search_segments WHERE id = ANY(:ids)")
    rows = session.execute(sql, {"q": request.q, "opts": _PG_HEADLINE, "ids": ids,
                                 "shown": "".join(_PG_HIDE), "hidden": "".join(_PG_HIDE.values())})
    return {row_id: marked.translate(_PG_SHOW) for row_id, marked in rows}


def _count(session: Session, request: SearchRequest, owner_key_id: int | None) -> int:
    """The total when the page is past the end (the window count came with no row)."""
    if request.offset == 0:
        return 0
    first = search(session, SearchRequest(request.q, 1, 0, request.language, request.kind),
                   owner_key_id)
    return first[1]


def search(session: Session, request: SearchRequest, owner_key_id: int | None) -> tuple[list[Hit], int]:
    """A page of hits, best first, among `owner_key_id`'s jobs (None: everyone's), and the total."""
    where, params = _filters(owner_key_id, request)
    params.update(limit=request.limit, offset=request.offset)
    sqlite = _is_sqlite(session)
    rows = (_sqlite_page if sqlite else _postgres_page)(session, request, where, params)
    if not rows:
        return [], _count(session, request, owner_key_id)
    ids = [row.id for row in rows]
    marked = (_sqlite_snippets if sqlite else _postgres_snippets)(session, request, ids)
    hits = [Hit(row.job_id, row.input_name or "", row.segment_index, row.start_sec, row.end_sec,
                row.language, row.kind, snippet_of(marked.get(row.id, ""))) for row in rows]
    return hits, int(rows[0].total)
