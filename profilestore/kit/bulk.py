"""Writing many rows with one statement through the driver's ``executemany``.

SQLAlchemy Core, given a list of rows, builds a parameter dictionary per row and passes every
value through it — about a microsecond a value. An event batch binds some 25,000 values (events,
message-id receipts, signals), and that bookkeeping was a quarter of the batch. ``Bulk`` compiles
the same Core statement once per dialect, converts each column with that column's own bind
processor (the conversion Core would apply: timestamps, JSON, ...), and hands the rows to the
driver in one call. Same SQL, same stored values, in the session's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import LargeBinary
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positional: bool
    names: tuple[str, ...]
    values: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # a row's values in ``names`` order
    processed: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position, processor) to apply


def _converted(column: Sequence[Any], process: Callable[[Any], Any]) -> list[Any]:
    seen: dict[Any, Any] = {}
    converted = []
    for value in column:
        key = tuple(value) if type(value) is list else value
        try:
            found = seen[key]
        except KeyError:
            found = seen[key] = process(value)
        except TypeError:  # unhashable: converted each time
            found = process(value)
        converted.append(found)
    return converted


def _driver_takes_as_is(column_type: Any, dialect: Dialect) -> bool:
    """SQLite takes ``bytes`` as they are: its binary bind processor only wraps each ciphertext
    in a ``memoryview`` first, a cost for nothing."""
    return dialect.name == "sqlite" and isinstance(column_type, LargeBinary)


class Bulk:
    """One INSERT (or upsert) statement, built per dialect by ``build``, run for many rows."""

    def __init__(self, build: Callable[[str], ClauseElement]) -> None:
        self._build = build
        self._compiled: dict[str, _Compiled] = {}

    def _for(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = cast(SQLCompiler, self._build(dialect.name).compile(dialect=dialect))
            names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.binds)
            types = [compiled.binds[n].type for n in names]
            processors = [t.dialect_impl(dialect).bind_processor(dialect) for t in types]
            getter = itemgetter(*names)
            values = getter if len(names) > 1 else lambda row: (getter(row),)
            processed = tuple(
                (i, p)
                for i, (p, t) in enumerate(zip(processors, types, strict=True))
                if p is not None and not _driver_takes_as_is(t, dialect)
            )
            found = _Compiled(compiled.string, compiled.positional, names, values, processed)
            self._compiled[dialect.name] = found
        return found

    def params(self, dialect: Dialect, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        """The driver's parameters for ``rows`` (each a mapping of every bound column to its
        value): the part of a write that needs no connection, so it can be done before one."""
        compiled = self._for(dialect)
        if not rows:
            return []
        # Column by column: each conversion runs over one list, and a value met again in the same
        # column (a batch's receipt time, grant epoch, list of purposes) is converted once.
        columns: list[Sequence[Any]] = list(zip(*map(compiled.values, rows), strict=True))
        for position, process in compiled.processed:
            columns[position] = _converted(columns[position], process)
        values = zip(*columns, strict=True)
        if compiled.positional:
            return list(values)
        return [dict(zip(compiled.names, row, strict=True)) for row in values]

    def row(self, dialect: Dialect, row: Mapping[str, Any]) -> Any:
        """One row's driver parameters, converted as ``params`` converts them, and mutable: a
        column whose value is known only later can be filled in at its ``slot``."""
        compiled = self._for(dialect)
        values = list(compiled.values(row))
        for position, process in compiled.processed:
            values[position] = process(values[position])
        return values if compiled.positional else dict(zip(compiled.names, values, strict=True))

    def slot(self, dialect: Dialect, column: str) -> int | str:
        """Where ``column`` is in a row from ``row``: its position, or its name."""
        compiled = self._for(dialect)
        return compiled.names.index(column) if compiled.positional else column

    def execute(self, session: Session, rows: Sequence[Mapping[str, Any]]) -> int:
        """Write ``rows``; returns the number of rows the database reports written (an insert that
        a conflict skipped is not)."""
        return self.execute_params(session, self.params(session.get_bind().dialect, rows))

    def execute_params(self, session: Session, params: Sequence[Any], *, rows_per_statement: int = 1) -> int:
        """Write rows given as ``params`` (from ``params``, for this session's dialect).

        With ``rows_per_statement`` above one, a driver with positional parameters (SQLite) is
        given that many rows per statement instead of one ``executemany``: SQLite's driver lets
        the GIL go and takes it back around every row it steps, and each hand-over made whatever
        else the process was serving wait (``_rows_sql``)."""
        if not params:
            return 0
        session.flush()  # as session.execute would: pending ORM rows first
        connection = session.connection()
        compiled = self._for(connection.dialect)
        if rows_per_statement <= 1 or not compiled.positional:
            # SQLAlchemy takes positional rows as tuples only; rows from ``row`` are lists.
            rows = [tuple(p) for p in params] if type(params[0]) is list else list(params)
            return int(connection.exec_driver_sql(compiled.sql, rows).rowcount)
        written = 0
        for start in range(0, len(params), rows_per_statement):
            part = params[start : start + rows_per_statement]
            statement = _rows_sql(compiled.sql, len(part))
            written += int(connection.exec_driver_sql(statement, tuple(chain.from_iterable(part))).rowcount)
        return written


@lru_cache(maxsize=64)
def _rows_sql(single: str, rows: int) -> str:
    """``single``, an ``INSERT ... VALUES (?, ...)`` of one row (an ``ON CONFLICT`` clause may
    follow), made to insert ``rows`` rows."""
    head, keyword, rest = single.partition(" VALUES (")
    placeholders, closed, tail = rest.partition(")")
    if not keyword or not closed or set(placeholders) - set("?, "):
        raise ValueError(f"not a one-row INSERT with positional parameters: {single[:80]}")
    row = f"({placeholders})"
    return f"{head} VALUES {', '.join([row] * rows)}{tail}"
