"""``Bulk`` writes the same rows whether it hands the driver one row per statement or many."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from profilestore.kit.bulk import _rows_sql
from profilestore.kit.chain import _CREATE_HEAD, ChainHead
from profilestore.runtime import Runtime

START = datetime(2026, 1, 1, tzinfo=UTC)


def _heads(n: int, offset: int = 0) -> list[dict[str, object]]:
    """Chain heads (a plain table of a few typed columns) named ``bulk-<i>``, updated on day i."""
    return [
        {
            "name": f"bulk-{offset + i:02d}",
            "seq": offset + i,
            "hash": "0" * 64,
            "updated_at": START + timedelta(days=offset + i),
        }
        for i in range(n)
    ]


def _stored(runtime: Runtime) -> list[tuple[str, int, datetime]]:
    with runtime.db.transaction(write=False) as session:
        found = session.execute(
            select(ChainHead.name, ChainHead.seq, ChainHead.updated_at).where(ChainHead.name.startswith("bulk-"))
        )
        return sorted(tuple(row) for row in found)


def _expected(days: range) -> list[tuple[str, int, datetime]]:
    return [(f"bulk-{i:02d}", i, START + timedelta(days=i)) for i in days]


@pytest.mark.parametrize("rows_per_statement", [1, 3, 7, 50])
def test_rows_written_several_to_a_statement_are_the_rows_given(runtime: Runtime, rows_per_statement: int) -> None:
    with runtime.db.transaction() as session:
        params = _CREATE_HEAD.params(session.get_bind().dialect, _heads(7))
        written = _CREATE_HEAD.execute_params(session, params, rows_per_statement=rows_per_statement)
    assert written == 7
    assert _stored(runtime) == _expected(range(7))


def test_an_upsert_several_rows_to_a_statement_keeps_its_conflict_clause(runtime: Runtime) -> None:
    with runtime.db.transaction() as session:
        _CREATE_HEAD.execute(session, _heads(2))
    with runtime.db.transaction() as session:  # rows 0 and 1 are there: DO NOTHING skips them
        params = _CREATE_HEAD.params(session.get_bind().dialect, _heads(5))
        written = _CREATE_HEAD.execute_params(session, params, rows_per_statement=2)
    assert written == 3
    assert _stored(runtime) == _expected(range(5))


def test_one_row_is_filled_in_at_its_slots(runtime: Runtime) -> None:
    dialect = runtime.db.engine.dialect
    row = _CREATE_HEAD.row(dialect, {**_heads(1, offset=9)[0], "seq": None})
    row[_CREATE_HEAD.slot(dialect, "seq")] = 9
    with runtime.db.transaction() as session:
        assert _CREATE_HEAD.execute_params(session, [row]) == 1
    assert _stored(runtime) == _expected(range(9, 10))


def test_the_many_row_form_is_built_from_a_one_row_insert_only() -> None:
    assert _rows_sql("INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT DO NOTHING", 3) == (
        "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?) ON CONFLICT DO NOTHING"
    )
    for statement in ("INSERT INTO t (a) SELECT a FROM u", "INSERT INTO t (a) VALUES (:a)", "UPDATE t SET a = ?"):
        with pytest.raises(ValueError, match="one-row INSERT"):
            _rows_sql(statement, 2)
