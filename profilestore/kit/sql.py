"""Running the hot read statements: compiled once, executed on the driver's cursor.

A view runs half a dozen small statements and authentication one more; SQLAlchemy's execution
layer costs about 17 µs a statement on top of the 2 µs SQLite takes to answer — together more
than a third of a view. ``rows`` runs a Core statement in the session's transaction as
SQLAlchemy would (same SQL, the columns' own bind and result processors), minus that layer.
An expanding ``IN`` (a batch's subjects, say) is spelled out with one placeholder per value, as
SQLAlchemy does; an empty one, and anything else whose SQL depends on its parameters, goes
through SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Executable, Select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.sqltypes import TupleType

Processor = Callable[[Any], Any]


@dataclass
class _Plan:
    sql: str
    positional: bool
    binds: tuple[tuple[str, Processor | None, Any], ...]  # (name, processor, value built into the statement)
    columns: tuple[Any, ...]  # the selected columns' types, for their result processors
    expanding: frozenset[str]  # parameters that are lists, each spelled out as one placeholder per value
    template: str  # the driver's placeholder, with ``%(name)s`` for a parameter's name
    # (column position, processor) to apply; known after the first execution, as some drivers'
    # processors depend on the type the database reports for the column
    results: tuple[tuple[int, Processor], ...] | None = None


_plans: WeakKeyDictionary[Executable, dict[str, _Plan | None]] = WeakKeyDictionary()


def _plan(statement: Executable, dialect: Dialect) -> _Plan | None:
    """How to run ``statement`` on the cursor, or None when only SQLAlchemy can (its SQL is
    rendered per execution, or it is not a plain SELECT)."""
    per_dialect = _plans.setdefault(statement, {})
    if dialect.name in per_dialect:
        return per_dialect[dialect.name]
    plan = None
    if isinstance(statement, Select):
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        expanding = frozenset(p.key for p in compiled.post_compile_params)
        plain = all(p.expanding and not isinstance(p.type, TupleType) for p in compiled.post_compile_params)
        if not compiled.literal_execute_params and plain:
            names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.binds)
            binds = tuple(
                (
                    name,
                    compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect),
                    compiled.binds[name].effective_value,
                )
                for name in names
            )
            columns = tuple(column.type.dialect_impl(dialect) for column in statement.selected_columns)
            plan = _Plan(compiled.string, compiled.positional, binds, columns, expanding, compiled.bindtemplate)
    per_dialect[dialect.name] = plan
    return plan


def fetch(
    connection: Connection, statement: Executable, params: Mapping[str, Any] | None = None
) -> Sequence[tuple[Any, ...]]:
    """All rows of a Core SELECT, as tuples, on ``connection`` (in its transaction)."""
    plan = _plan(statement, connection.dialect)
    bound = _bound(plan, params or {}) if plan is not None else None
    if plan is None or bound is None:
        return [tuple(row) for row in connection.execute(statement, params).all()]
    sql, values = bound
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql, values)
        return _converted(connection, plan, cursor, cursor.fetchall())
    except connection.dialect.loaded_dbapi.Error as exc:
        raise _as_sqlalchemy(connection, sql, values, exc) from exc
    finally:
        cursor.close()


def _converted(connection: Connection, plan: _Plan, cursor: Any, found: Sequence[Any]) -> Sequence[tuple[Any, ...]]:
    """``found`` with the columns' result processors applied (worked out at the first execution)."""
    if plan.results is None:
        plan.results = tuple(
            (position, processor)
            for position, (column, described) in enumerate(zip(plan.columns, cursor.description, strict=True))
            if (processor := column.result_processor(connection.dialect, described[1])) is not None
        )
    if not plan.results:
        return found
    converted = []
    for row in found:
        values = list(row)
        for position, process in plan.results:
            values[position] = process(values[position])
        converted.append(tuple(values))
    return converted


def _as_sqlalchemy(connection: Connection, sql: str, values: Any, exc: Exception) -> StatementError:
    """The driver's error as SQLAlchemy would raise it, so the service's handlers (503 for an
    outage) apply; and, as SQLAlchemy would, a connection found dead is thrown away, not pooled
    again (``connection_invalidated`` says so to those who may retry on a new one)."""
    dialect = connection.dialect
    lost = dialect.is_disconnect(cast(Any, exc), connection.connection.dbapi_connection, None)
    if lost:
        connection.invalidate(exc)
    return DBAPIError.instance(sql, values, exc, dialect.loaded_dbapi.Error, connection_invalidated=lost)


def _bound(plan: _Plan, given: Mapping[str, Any]) -> tuple[str, Any] | None:
    """The SQL and the driver's parameters for one execution; None for an empty expanding list
    (SQLAlchemy spells that as a subquery of no rows)."""
    sql = plan.sql
    positional: list[Any] = []
    named: dict[str, Any] = {}
    for name, process, built_in in plan.binds:
        value = given.get(name, built_in)
        if name in plan.expanding:
            items = list(value)
            if not items:
                return None
            if process is not None:
                items = [process(item) for item in items]
            keys = [f"{name}_{i}" for i in range(1, len(items) + 1)]
            sql = sql.replace(f"__[POSTCOMPILE_{name}]", ", ".join(plan.template % {"name": key} for key in keys))
            if plan.positional:
                positional.extend(items)
            else:
                named.update(zip(keys, items, strict=True))
        elif plan.positional:
            positional.append(value if process is None else process(value))
        else:
            named[name] = value if process is None else process(value)
    return sql, tuple(positional) if plan.positional else named


def rows(session: Session, statement: Executable, params: Mapping[str, Any] | None = None) -> Sequence[tuple[Any, ...]]:
    """All rows of a Core SELECT, as tuples, in the session's transaction (pending ORM changes
    flushed first, as ``session.execute`` would); or the rows ``prefetch`` read for it."""
    session.flush()
    prefetched = session.info.get(_PREFETCHED)
    if prefetched:
        found = prefetched.pop(_key(statement, params), None)
        if found is not None:
            return found
    return fetch(session.connection(), statement, params)


Query = tuple[Executable, Mapping[str, Any]]
_PREFETCHED = "profilestore.prefetched"


def _key(statement: Executable, params: Mapping[str, Any] | None) -> tuple[Executable, tuple[Any, ...]]:
    items = sorted((params or {}).items())
    return statement, tuple((name, tuple(v) if isinstance(v, list) else v) for name, v in items)


def reads_ahead(session: Session) -> bool:
    """Whether ``prefetch`` reads anything ahead on this session's database (PostgreSQL's driver:
    round trips to save); the caller can skip naming its queries otherwise."""
    return session.get_bind().dialect.driver == "psycopg"


def prefetch(session: Session, queries: Sequence[Query]) -> None:
    """Read, in one round trip, statements that read-only work is about to run one after another
    (a view: its purpose's rules, its subject's status, consent and preferences, none of which
    waits for another's answer). ``rows`` then hands each result out once instead of running its
    statement. On PostgreSQL this is psycopg's pipeline mode; elsewhere (SQLite: no round trips)
    nothing is read ahead. Only for work that writes nothing in between: the rows are as of now."""
    if not reads_ahead(session):
        return
    connection = session.connection()
    planned = []
    for statement, params in queries:
        plan = _plan(statement, connection.dialect)
        bound = _bound(plan, params) if plan is not None else None
        if plan is not None and bound is not None:  # anything else is left for ``rows`` to run
            planned.append((_key(statement, params), plan, bound))
    if not planned:
        return
    driver = connection.connection.driver_connection
    assert driver is not None
    cursors = []
    try:
        with driver.pipeline():
            for _, _, (sql, values) in planned:
                cursor = driver.cursor()
                cursors.append(cursor)
                cursor.execute(sql, values)
            found = [cursor.fetchall() for cursor in cursors]
        session.info.setdefault(_PREFETCHED, {}).update(
            (key, _converted(connection, plan, cursor, result))
            for (key, plan, _), cursor, result in zip(planned, cursors, found, strict=True)
        )
    except connection.dialect.loaded_dbapi.Error as exc:
        raise _as_sqlalchemy(connection, "(pipeline)", None, exc) from exc
    finally:
        for cursor in cursors:
            cursor.close()
