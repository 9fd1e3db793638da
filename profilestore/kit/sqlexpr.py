"""SQL expressions the two databases spell differently, so that arithmetic over many rows stays in
the database (one statement) instead of crossing into Python row by row."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement, ReturnTypeFromArgs


class decayed(FunctionElement[float]):
    """``score`` held as of ``held_at``, carried to ``ref`` by exponential decay with a half-life
    in days: ``score * 2^((held_at - ref) / half-life)``."""

    type = Float()
    inherit_cache = True
    name = "decayed"

    def __init__(self, score: ColumnElement[Any], held_at: ColumnElement[Any], ref: Any, half_life_days: Any) -> None:
        super().__init__(score, held_at, ref, half_life_days)


@compiles(decayed, "sqlite")
def _decayed_sqlite(element: decayed, compiler: SQLCompiler, **kw: Any) -> str:
    score, held_at, ref, half_life = (compiler.process(c, **kw) for c in element.clauses)
    # julianday() reads the stored UTC text; pow() is SQLite's (see db.py for builds without it).
    return f"({score} * pow(2.0, (julianday({held_at}) - julianday({ref})) / {half_life}))"


@compiles(decayed, "postgresql")
def _decayed_postgresql(element: decayed, compiler: SQLCompiler, **kw: Any) -> str:
    score, held_at, ref, half_life = (compiler.process(c, **kw) for c in element.clauses)
    seconds = f"CAST(EXTRACT(EPOCH FROM ({held_at} - {ref})) AS DOUBLE PRECISION)"
    return f"({score} * power(CAST(2.0 AS DOUBLE PRECISION), {seconds} / ({half_life} * 86400.0)))"


def _spelled(function: type[FunctionElement[Any]], **by_dialect: str) -> None:
    """Render ``function(args)`` with a template per dialect, ``{}`` standing for the arguments."""
    for dialect, template in by_dialect.items():

        def render(element: FunctionElement[Any], compiler: SQLCompiler, _template: str = template, **kw: Any) -> str:
            return _template.format(compiler.process(element.clauses, **kw))

        compiles(function, dialect)(render)


class greatest(ReturnTypeFromArgs[Any]):
    """The larger of two values."""

    inherit_cache = True


class any_value(ReturnTypeFromArgs[Any]):
    """Any one value of a group, for groups whose values are interchangeable (PostgreSQL 15 has
    no ``any_value`` and no ``max`` over ``bytea``)."""

    inherit_cache = True


_spelled(greatest, sqlite="max({})", postgresql="GREATEST({})")
_spelled(any_value, sqlite="max({})", postgresql="(array_agg({}))[1]")
