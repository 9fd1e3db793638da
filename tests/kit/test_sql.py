"""The hot-path statement runner gives exactly what SQLAlchemy gives, expanding lists included."""

from __future__ import annotations

from sqlalchemy import bindparam, func, select, text

from profilestore.kit.chain import ChainHead
from profilestore.kit.sql import prefetch, rows
from profilestore.purposes.models import Purpose
from profilestore.runtime import Runtime

_BY_KEYS = (
    select(Purpose.key, Purpose.legal_basis, Purpose.retention_days, Purpose.created_at)
    .where(Purpose.key.in_(bindparam("keys", expanding=True)), Purpose.retention_days >= bindparam("days"))
    .order_by(Purpose.key)
)


def test_an_expanding_list_is_spelled_out_and_typed_as_sqlalchemy_does(runtime: Runtime) -> None:
    with runtime.db.read_session() as session:
        every = [key for (key,) in session.execute(select(Purpose.key))]
        assert len(every) > 3
        for keys in (every, every[:1], [every[0], "no.such.purpose", every[-1]]):
            params = {"keys": keys, "days": 0}
            expected = [tuple(row) for row in session.execute(_BY_KEYS, params)]
            got = list(rows(session, _BY_KEYS, params))
            assert got == expected
            assert {row[0] for row in got} == set(keys) & set(every)
            assert all(row[3].tzinfo is not None for row in got)  # timestamps come back typed, in UTC


def test_an_empty_expanding_list_finds_nothing(runtime: Runtime) -> None:
    with runtime.db.read_session() as session:
        assert list(rows(session, _BY_KEYS, {"keys": [], "days": 0})) == []


def test_other_parameters_still_filter_beside_an_expanding_list(runtime: Runtime) -> None:
    with runtime.db.read_session() as session:
        every = [key for (key,) in session.execute(select(Purpose.key))]
        longest = max(days for (days,) in session.execute(select(Purpose.retention_days)))
        got = rows(session, _BY_KEYS, {"keys": every, "days": longest})
        assert got and all(row[2] == longest for row in got)


_HEADS = select(func.count()).select_from(ChainHead)


def _add_head(runtime: Runtime, name: str) -> None:
    with runtime.db.transaction() as session:
        session.execute(text(f"INSERT INTO chain_heads VALUES ('{name}', 0, '', '2026-01-01 00:00:00')"))


def test_prefetched_rows_are_the_statements_rows_typed_the_same(runtime: Runtime) -> None:
    with runtime.db.read_session(transaction=False) as session:
        every = [key for (key,) in session.execute(select(Purpose.key))]
        queries = [(_BY_KEYS, {"keys": every, "days": 0}), (_BY_KEYS, {"keys": every[:2], "days": 0})]
        expected = [[tuple(row) for row in session.execute(statement, params)] for statement, params in queries]
        prefetch(session, queries)
        assert [list(rows(session, statement, params)) for statement, params in queries] == expected


def test_a_prefetched_result_is_handed_out_once(runtime: Runtime) -> None:
    """PostgreSQL reads ahead (one round trip); the next ``rows`` call for the same statement and
    parameters runs it again and sees what changed since. SQLite reads nothing ahead."""
    with runtime.db.read_session(transaction=False) as session:
        prefetch(session, [(_HEADS, {})])
        _add_head(runtime, "prefetch-1")
        first = rows(session, _HEADS)[0][0]
        _add_head(runtime, "prefetch-2")
        second = rows(session, _HEADS)[0][0]
    if runtime.db.is_sqlite:  # one read transaction from its first statement: both see the first head
        assert second == first
    else:  # the read ahead, then a statement of its own that sees both heads
        assert second == first + 2
