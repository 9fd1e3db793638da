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
from operator import itemgetter
from typing import Any, cast

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
            processors = [compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names]
            getter = itemgetter(*names)
            values = getter if len(names) > 1 else lambda row: (getter(row),)
            processed = tuple((i, p) for i, p in enumerate(processors) if p is not None)
            found = _Compiled(compiled.string, compiled.positional, names, values, processed)
            self._compiled[dialect.name] = found
        return found

    def params(self, dialect: Dialect, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        """The driver's parameters for ``rows`` (each a mapping of every bound column to its
        value): the part of a write that needs no connection, so it can be done before one."""
        compiled = self._for(dialect)
        params: list[Any] = []
        for row in rows:
            values = compiled.values(row)
            if compiled.processed:
                converted = list(values)
                for position, process in compiled.processed:
                    converted[position] = process(converted[position])
                values = tuple(converted)
            params.append(values if compiled.positional else dict(zip(compiled.names, values, strict=True)))
        return params

    def execute(self, session: Session, rows: Sequence[Mapping[str, Any]]) -> int:
        """Write ``rows``; returns the number of rows the database reports written (an insert that
        a conflict skipped is not)."""
        return self.execute_params(session, self.params(session.get_bind().dialect, rows))

    def execute_params(self, session: Session, params: Sequence[Any]) -> int:
        """Write rows given as ``params`` (from ``params``, for this session's dialect)."""
        if not params:
            return 0
        session.flush()  # as session.execute would: pending ORM rows first
        connection = session.connection()
        return int(connection.exec_driver_sql(self._for(connection.dialect).sql, list(params)).rowcount)
