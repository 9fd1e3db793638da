"""Two senders posting the same message ids at the same moment: each event is stored once, and
between them the answers count every repeat as a duplicate (on PostgreSQL the two transactions
really overlap; on SQLite they take turns on the writer lock)."""

from __future__ import annotations

import threading
from typing import Any

from fastapi.testclient import TestClient

from profilestore.runtime import Runtime
from tests.conftest import Keys
from tests.events.support import event, grant, post_events, stored_events, stored_signals

ADA = {"email": "ada@example.com"}
BOB = {"email": "bob@example.com"}
EVENTS = 150


def test_the_same_batch_sent_twice_at_once_is_stored_once(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    grant(api, keys, ADA)
    grant(api, keys, BOB)
    batch = [event(ADA if i % 2 else BOB, f"dup-{i}", properties={"category": f"c{i % 7}"}) for i in range(EVENTS)]
    start = threading.Barrier(2)
    answers: list[Any] = []

    def send() -> None:
        start.wait()
        answers.append(post_events(api, keys, batch))

    senders = [threading.Thread(target=send) for _ in range(2)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()

    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    bodies = [a.json() for a in answers]
    assert sum(b["accepted"] for b in bodies) == EVENTS
    assert sum(b["duplicates"] for b in bodies) == EVENTS
    stored = stored_events(runtime)
    assert sorted(e.message_id for e in stored) == sorted(f"dup-{i}" for i in range(EVENTS))
    # and the signals counted each event once
    assert sum(s.evidence for s in stored_signals(runtime) if s.dimension == "category") == EVENTS
