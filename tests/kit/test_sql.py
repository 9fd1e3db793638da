"""The hot-path statement runner gives exactly what SQLAlchemy gives, expanding lists included."""

from __future__ import annotations

from sqlalchemy import bindparam, select

from profilestore.kit.sql import rows
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
