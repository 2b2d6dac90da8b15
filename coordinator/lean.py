"""Hot-path statements on a DBAPI connection, below the ORM session.

An ORM session spends about 90 µs of Python per short transaction (its state machine, the
Connection's execution context, result metadata); the same statement on a pooled DBAPI
connection takes under 10 µs. The hottest requests (a job view, a heartbeat, an idle claim)
run their prebuilt Core statements (`coordinator.statements`) here: each statement is compiled
once per dialect with its bind and result processors (JSON, booleans), so the SQL and the values
are exactly what SQLAlchemy itself would send. Everything else keeps the ORM session.

SQLite connections run in autocommit mode (`coordinator.database`): a read is one statement and
so is a single-statement write (`write_one`); both run on the connection the thread keeps
(`coordinator.keptconn`), transactions on pooled ones. PostgreSQL uses the pool throughout and
opens its transaction implicitly; each use ends it (commit after a write, rollback after reads).
Statements that must commit with other work run on the ORM transaction's own connection
(`joined`).
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Callable, Iterator, Mapping, Sequence

from flask import has_app_context
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy import text as sa_text
from sqlalchemy.orm import Session, scoped_session
from sqlalchemy.sql import ClauseElement

from .extensions import db
from .keptconn import KeptConnections

logger = logging.getLogger(__name__)


class Record(dict):
    """A result row: mapping access (`row["id"]`) and attribute access (`row.id`), like a Row."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _Prepared:
    """One statement compiled for one dialect: SQL text, parameter order, processors."""

    __slots__ = ("statement", "sql", "compiled", "order", "binds", "expanding", "forms", "dialect",
                 "columns", "fields", "results", "processed")

    def __init__(self, statement: ClauseElement, engine: Engine):
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        self.statement, self.compiled, self.sql = statement, compiled, compiled.string
        self.order: Sequence[str] | None = compiled.positiontup if dialect.positional else None
        self.binds: Mapping[str, Callable] = compiled._bind_processors
        if compiled.literal_execute_params:  # their values go into the SQL text: no shape cache
            raise ValueError("literal_execute parameters are not supported below the ORM")
        self.expanding = tuple(compiled.bind_names[bind] for bind in compiled.post_compile_params)  # IN lists
        self.forms: dict[tuple[int, ...], tuple] = {}  # expanded SQL by the IN lists' lengths
        self.dialect = dialect
        self.columns = getattr(compiled, "_result_columns", None) or []
        self.fields = tuple(column[0] for column in self.columns)
        self.results: tuple | None = None  # made from the first result's cursor.description
        self.processed: tuple[tuple[str, Callable], ...] = ()  # the columns that have a processor

    def bound(self, params: Mapping[str, Any]) -> tuple[str, Any]:
        """The SQL text and DBAPI parameters for `params` (literal values, IN lists and bind
        processors applied, as SQLAlchemy's own execution would)."""
        sql, order, binds = self.sql, self.order, self.binds
        values = self.compiled.construct_params(params)
        if self.expanding:
            sql, expanded_order, binds, expansion = self._form(values, params)
            order = expanded_order if order is not None else None
            for name, names in expansion.items():
                values.update(zip(names, values.pop(name)))
        for name, process in binds.items():
            if name in values and values[name] is not None:
                values[name] = process(values[name])
        return sql, ([values[name] for name in order] if order is not None else values)

    def _form(self, values: Mapping[str, Any], params: Mapping[str, Any]) -> tuple:
        """The statement with its IN lists expanded for lists of these lengths (rendered once per
        shape: SQLAlchemy renders it again on every execution)."""
        shape = tuple(len(values[name]) for name in self.expanding)
        form = self.forms.get(shape)
        if form is None:
            state = self.compiled.construct_expanded_state(params)
            form = (state.statement, state.positiontup, state.processors, state.parameter_expansion)
            if len(self.forms) < 256:
                self.forms[shape] = form
        return form

    def processors(self, description: Sequence[Sequence[Any]]) -> tuple:
        """The result processors (JSON, booleans, PostgreSQL numerics by their type codes)."""
        if self.results is None:
            results = tuple(column[3]._cached_result_processor(self.dialect, described[1])
                            for column, described in zip(self.columns, description))
            self.processed = tuple((name, process) for name, process in zip(self.fields, results) if process)
            self.results = results
        return self.results

    def record(self, row: Sequence[Any]) -> Record:
        """A Record of one fetched row, with the result processors applied (`processors` ran)."""
        record = Record(zip(self.fields, row))
        for name, process in self.processed:  # most columns have none: a row is one dict build
            value = record[name]
            if value is not None:
                record[name] = process(value)
        return record


class LeanCursor:
    """Runs prepared statements on one DBAPI cursor (`Lean.reading()`, `Lean.write_one`, `joined`)."""

    def __init__(self, lean: "Lean", cursor: Any):
        self._lean, self._cursor = lean, cursor

    @property
    def sqlite(self) -> bool:
        """Whether this cursor's database is SQLite."""
        return self._lean.sqlite

    def execute(self, statement: ClauseElement, params: Mapping[str, Any]) -> _Prepared:
        """Execute `statement` with `params`; the prepared form reads the rows back."""
        prepared = self._lean.prepare(statement)
        sql, values = prepared.bound(params)
        try:
            self._cursor.execute(sql, values)
        except self._lean.dbapi_error as exc:
            raise self._lean.error(sql, values, exc) from exc
        return prepared

    def first(self, statement: ClauseElement, params: Mapping[str, Any]) -> Record | None:
        """The first row as a Record (None when there is none)."""
        rows = self.all(statement, params)  # read to the end: the statement is finished
        return rows[0] if rows else None

    def all(self, statement: ClauseElement, params: Mapping[str, Any]) -> list[Record]:
        """Every row as a Record."""
        prepared = self.execute(statement, params)
        cursor = self._cursor
        if cursor.description is None:  # a write without RETURNING: no rows to read
            return []
        try:
            rows = cursor.fetchall()
        except self._lean.dbapi_error as exc:
            raise self._lean.error(prepared.sql, params, exc) from exc
        if not rows:
            return []
        prepared.processors(cursor.description)
        return [prepared.record(row) for row in rows]

    def scalar(self, statement: ClauseElement, params: Mapping[str, Any]) -> Any:
        """The first column of the first row (None when there is none)."""
        row = self.first(statement, params)
        return None if row is None else next(iter(row.values()))


class Lean:
    """Prepared hot-path statements on one engine's pool."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self.dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        self._prepared: dict[int, _Prepared] = {}
        self._lock = threading.Lock()
        self.kept = KeptConnections(engine) if self.sqlite else None  # its single statements' connections

    def prepare(self, statement: ClauseElement) -> _Prepared:
        """The statement compiled for this engine (once; statements are long-lived objects)."""
        prepared = self._prepared.get(id(statement))
        if prepared is None or prepared.statement is not statement:
            prepared = _Prepared(statement, self.engine)
            with self._lock:
                self._prepared[id(statement)] = prepared
        return prepared

    def reading(self) -> "_Block":
        """A block of reads (SQLite: each statement on its own snapshot, without any lock, on
        this thread's kept connection)."""
        return _Block(self, commit=False)

    @contextlib.contextmanager
    def transaction(self, session: Session | scoped_session | None) -> Iterator[LeanCursor]:
        """One writing transaction on a pooled connection, below the ORM session (whose begin and
        commit cost more than the statements of a short transaction): SQLite begins it holding
        the write lock; it commits when the block ends and rolls back when it raises. A
        transaction `session` has open is committed first (see `write_one`)."""
        _end_open_transaction(session)
        with _Block(self, commit=True) as cursor:
            if self.sqlite:
                cursor.execute(_BEGIN_IMMEDIATE, {})
            yield cursor

    def write_one(self, session: Session | scoped_session | None, statement: ClauseElement,
                  params: Mapping[str, Any]) -> list[Record]:
        """One writing statement as its own transaction; the rows it returns (RETURNING).

        On SQLite the statement runs in autocommit mode: a write statement takes the write lock
        (waiting in the busy handler) before it reads anything, and commits when it has run, so
        it needs no BEGIN IMMEDIATE and no COMMIT round of its own. A transaction `session` has
        open is committed first, as an ORM write in it would have done: on SQLite it would hold
        the write lock this statement waits for."""
        _end_open_transaction(session)
        with _Block(self, commit=not self.sqlite) as cursor:  # SQLite: this thread's kept connection
            return cursor.all(statement, params)  # stepping to the end finishes the statement

    def error(self, sql: str | None, params: Any, exc: Exception) -> sa_exc.DBAPIError:
        """The driver's error `exc` as SQLAlchemy's (OperationalError, IntegrityError, ...), as
        the ORM would raise it: the error handlers (a busy database is 503) and callers see one
        kind."""
        return sa_exc.DBAPIError.instance(sql, params, exc, self.dbapi_error, dialect=self.engine.dialect)


class _Block:
    """A block of statements on one connection's cursor (a class, not a generator: it runs on
    every hot request). SQLite's single statements (`commit` False) run on the
    thread's kept connection (`coordinator.keptconn`); anything else on a pooled connection,
    whose transaction ends with the block (commit, or roll back after an error) before it goes
    back to the pool."""

    __slots__ = ("lean", "commit", "kept", "connection", "cursor")

    def __init__(self, lean: Lean, commit: bool):
        self.lean, self.commit = lean, commit
        self.kept = None if commit else lean.kept  # lean.kept: None on PostgreSQL
        self.connection = self.cursor = None

    def __enter__(self) -> LeanCursor:
        lean = self.lean
        try:
            self.connection = lean.engine.raw_connection() if self.kept is None else self.kept.connection()
            self.cursor = self.connection.cursor()
        except lean.dbapi_error as exc:
            if self.connection is not None:
                self._failed(exc)
                if self.kept is None:
                    self.connection.close()
            raise lean.error(None, None, exc) from exc
        return LeanCursor(lean, self.cursor)

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> None:
        try:
            if kind is None:
                self._end()
            else:
                self._failed(exc)
        finally:
            if self.kept is None:
                self.cursor.close()
                self.connection.close()  # back to the pool
            else:
                with contextlib.suppress(self.lean.dbapi_error):  # its connection may be closed now
                    self.cursor.close()

    def _failed(self, exc: BaseException | None) -> None:
        if self.kept is not None:
            self.kept.failed(self.connection, exc)
            return
        with contextlib.suppress(self.lean.dbapi_error):  # the first error is the one to see
            self.connection.rollback()

    def _end(self) -> None:
        """Commit (a writing block) or end the read (PostgreSQL's implicit transaction)."""
        lean, connection = self.lean, self.connection
        try:
            if self.commit:
                connection.commit()
            elif not lean.sqlite:
                connection.rollback()
        except lean.dbapi_error as exc:
            self._failed(exc)
            raise lean.error("COMMIT" if self.commit else "ROLLBACK", None, exc) from exc


def joined(session: Session | scoped_session) -> LeanCursor:
    """A cursor inside `session`'s own transaction (begun now if it is not): prebuilt statements
    run there at the cost they have below the ORM, and commit or roll back with the session."""
    connection = session.connection().connection.driver_connection
    return LeanCursor(of(session), connection.cursor())


def _end_open_transaction(session: Session | scoped_session | None) -> None:
    """Commit what `session` has open (see `Lean.write_one`)."""
    if isinstance(session, scoped_session):
        if not session.registry.has():  # this thread has no session yet: nothing is open
            return
        session = session()
    if session is not None and session.in_transaction():
        session.commit()


_ATTRIBUTE = "_dubfleet_lean"
_BEGIN_IMMEDIATE = sa_text("BEGIN IMMEDIATE")
_OF_LOCK = threading.Lock()


def of(session: Session | scoped_session) -> Lean:
    """The Lean of the engine `session` is bound to (made once, kept on the engine itself)."""
    if isinstance(session, scoped_session) and has_app_context():
        engine = db.engine  # without making this thread's session just to ask it
    else:
        engine = session.get_bind()
    lean = getattr(engine, _ATTRIBUTE, None)
    if lean is None:
        with _OF_LOCK:
            lean = getattr(engine, _ATTRIBUTE, None) or Lean(engine)
            setattr(engine, _ATTRIBUTE, lean)
    return lean
