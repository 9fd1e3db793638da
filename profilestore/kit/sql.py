"""Running the hot read statements: compiled once, executed on the driver's cursor.

A view runs half a dozen small statements and authentication one more; SQLAlchemy's execution
layer costs about 17 µs a statement on top of the 2 µs SQLite takes to answer — together more
than a third of a view. ``rows`` runs a Core statement in the session's transaction as
SQLAlchemy would (same SQL, the columns' own bind and result processors), minus that layer.
Statements whose SQL depends on their parameters (an expanding ``IN``) go through SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Executable, Select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any]


@dataclass
class _Plan:
    sql: str
    positional: bool
    binds: tuple[tuple[str, Processor | None, Any], ...]  # (name, processor, value built into the statement)
    columns: tuple[Any, ...]  # the selected columns' types, for their result processors
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
        if not compiled.literal_execute_params and not compiled.post_compile_params:
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
            plan = _Plan(compiled.string, compiled.positional, binds, columns)
    per_dialect[dialect.name] = plan
    return plan


def fetch(
    connection: Connection, statement: Executable, params: Mapping[str, Any] | None = None
) -> Sequence[tuple[Any, ...]]:
    """All rows of a Core SELECT, as tuples, on ``connection`` (in its transaction)."""
    plan = _plan(statement, connection.dialect)
    if plan is None:
        return [tuple(row) for row in connection.execute(statement, params).all()]
    given = params or {}
    values = []
    for name, process, built_in in plan.binds:
        value = given.get(name, built_in)
        values.append(value if process is None else process(value))
    bound: Any = tuple(values) if plan.positional else dict(zip((b[0] for b in plan.binds), values, strict=True))
    cursor = connection.connection.cursor()
    try:
        cursor.execute(plan.sql, bound)
        found = cursor.fetchall()
        if plan.results is None:
            plan.results = tuple(
                (position, processor)
                for position, (column, described) in enumerate(zip(plan.columns, cursor.description, strict=True))
                if (processor := column.result_processor(connection.dialect, described[1])) is not None
            )
    except connection.dialect.loaded_dbapi.Error as exc:
        # As SQLAlchemy would raise it, so the service's handlers (503 for an outage) apply.
        raise DBAPIError.instance(plan.sql, bound, exc, connection.dialect.loaded_dbapi.Error) from exc
    finally:
        cursor.close()
    if not plan.results:
        return found
    converted = []
    for row in found:
        values = list(row)
        for position, process in plan.results:
            values[position] = process(values[position])
        converted.append(tuple(values))
    return converted


def rows(session: Session, statement: Executable, params: Mapping[str, Any] | None = None) -> Sequence[tuple[Any, ...]]:
    """All rows of a Core SELECT, as tuples, in the session's transaction (pending ORM changes
    flushed first, as ``session.execute`` would)."""
    session.flush()
    return fetch(session.connection(), statement, params)
