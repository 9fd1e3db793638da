"""The access log of view reads: every read is recorded (client, purpose, subject, sections) by the
batching AccessRecorder, listed to privacy clients, kept through a clean shutdown, and chained so
that an edited entry is found."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from profilestore.app import create_app
from profilestore.audit.models import AccessLogEntry
from profilestore.audit.service import verify
from profilestore.auth.service import authenticate
from profilestore.cli import app
from profilestore.config import Settings
from profilestore.kit.chain import Verification
from profilestore.runtime import Runtime
from tests.conftest import Keys, publish_notice
from tests.views.support import VIEW_PURPOSE, Store, get_view, view

UNKNOWN_ID = "sub_0000000000000000000000"


def _quiet_runtime(runtime: Runtime) -> Runtime:
    """A second runtime on the same databases whose recorder never flushes on its own (within a
    test): only ``flush()`` and ``close()`` write what it buffered."""
    settings: Settings = runtime.settings
    views = settings.views.model_copy(update={"audit_flush_seconds": 3600.0})
    return Runtime.from_settings(settings.model_copy(update={"views": views}))


@dataclass
class Quiet:
    client: TestClient
    runtime: Runtime


@pytest.fixture
def quiet(runtime: Runtime, keys: Keys) -> Iterator[Quiet]:
    quiet_runtime = _quiet_runtime(runtime)
    try:
        with TestClient(create_app(runtime=quiet_runtime)) as client:
            publish_notice(client, keys)
            yield Quiet(client, quiet_runtime)
    finally:
        quiet_runtime.close()


def _client_id(runtime: Runtime, key: str) -> str:
    with runtime.db.transaction(write=False) as session:
        caller = authenticate(session, key)
    assert caller is not None
    return caller.client_id


def _view_reads(runtime: Runtime) -> list[dict[str, Any]]:
    with runtime.db.transaction(write=False) as session:
        rows = session.scalars(
            select(AccessLogEntry).where(AccessLogEntry.action == "view.read").order_by(AccessLogEntry.seq)
        )
        return [
            {"client_id": e.client_id, "subject_id": e.subject_id, "purpose": e.purpose, "detail": e.detail}
            for e in rows
        ]


def _count_view_reads(runtime: Runtime) -> int:
    with runtime.db.engine.connect() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM access_log WHERE action = 'view.read'")).scalar_one())


def _verify(runtime: Runtime) -> Verification:
    with runtime.db.transaction(write=False) as session:
        return verify(session)


def _audit(client: TestClient, keys: Keys, subject: str, role: str = "privacy") -> list[dict[str, Any]]:
    answer = client.get("/v1/audit", headers=keys.header(role), params={"subject_id": subject})
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, Any]] = answer.json()
    return entries


def test_every_view_read_is_listed_with_client_purpose_and_sections(quiet: Quiet, keys: Keys, runtime: Runtime) -> None:
    api = quiet.client
    ada = Store(api, keys, {"email": "ada@example.com"})
    subject = ada.consent({"personalize": "granted"})
    ada.events(2, {"category": "Golf"})
    other = Store(api, keys, {"email": "bob@example.com"}).consent({"personalize": "granted"})

    view(api, keys, subject)
    posted = api.post(
        "/v1/views",
        headers=keys.header("reader"),
        json={"purpose": VIEW_PURPOSE, "identifiers": ada.identifiers, "include": ["recent_events"]},
    )
    assert posted.status_code == 200
    assert get_view(api, keys.header("privacy"), subject, "personalize", explain="true").status_code == 200
    view(api, keys, other)
    assert _count_view_reads(runtime) == 0  # buffered, not yet written

    entries = [e for e in _audit(api, keys, subject) if e["action"] == "view.read"]

    reader, privacy = _client_id(runtime, keys.reader), _client_id(runtime, keys.privacy)
    assert [(e["client_id"], e["subject_id"], e["purpose"], e["detail"]["sections"]) for e in entries] == [
        (reader, subject, VIEW_PURPOSE, ["preferences", "signals"]),
        (reader, subject, VIEW_PURPOSE, ["preferences", "recent_events", "signals"]),
        (privacy, subject, "personalize", ["explain", "preferences", "signals"]),
    ]
    assert all(e["detail"]["personalised"] is True for e in entries)
    assert _count_view_reads(runtime) == 4  # the audit call flushed every buffered read
    assert "golf" not in str(_view_reads(runtime)).lower()


def test_a_default_read_is_logged_with_its_reason(quiet: Quiet, keys: Keys, runtime: Runtime) -> None:
    """The reason a view was a default is never told to the reader, but it is logged."""
    api = quiet.client
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"})
    ada.consent({"personalize": "withdrawn"})

    view(api, keys, subject)

    entries = [e for e in _audit(api, keys, subject) if e["action"] == "view.read"]
    assert len(entries) == 1
    assert entries[0]["detail"]["sections"] == ["default"]
    assert entries[0]["detail"]["personalised"] is False
    assert entries[0]["detail"]["reason"] == "consent_withdrawn"


def test_the_audit_is_for_privacy_and_admin_clients(quiet: Quiet, keys: Keys) -> None:
    api = quiet.client
    subject = Store(api, keys).consent({"personalize": "granted"})
    view(api, keys, subject)
    for role in ("reader", "collector"):
        answer = api.get("/v1/audit", headers=keys.header(role), params={"subject_id": subject})
        assert answer.status_code == 403, answer.text
    assert [e["action"] for e in _audit(api, keys, subject, "admin") if e["action"] == "view.read"] == ["view.read"]


def test_a_clean_shutdown_writes_every_buffered_read(runtime: Runtime, keys: Keys) -> None:
    quiet_runtime = _quiet_runtime(runtime)
    reads = 25
    try:
        with TestClient(create_app(runtime=quiet_runtime)) as client:
            publish_notice(client, keys)
            subject = Store(client, keys).consent({"personalize": "granted"})
            for i in range(reads):
                target = subject if i % 2 else UNKNOWN_ID
                assert get_view(client, keys.header("reader"), target).status_code == 200
            assert _count_view_reads(runtime) == 0
        # leaving the client ran the app's shutdown
        assert _count_view_reads(runtime) == reads
    finally:
        quiet_runtime.close()
    assert _count_view_reads(runtime) == reads
    assert _verify(runtime).ok


def test_reads_of_unknown_subjects_are_logged_without_a_subject_or_identifier(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    get_view(api, keys.header("reader"), UNKNOWN_ID)
    api.post(
        "/v1/views",
        headers=keys.header("reader"),
        json={"purpose": VIEW_PURPOSE, "identifiers": {"email": "probe@example.com"}},
    )
    runtime.recorder.close()  # joins the background flusher, then writes what is left

    reads = _view_reads(runtime)

    reader = _client_id(runtime, keys.reader)
    assert [(r["client_id"], r["subject_id"], r["purpose"]) for r in reads] == [(reader, None, VIEW_PURPOSE)] * 2
    assert all(r["detail"]["sections"] == ["default"] for r in reads)
    with runtime.db.engine.connect() as conn:
        everything = str(conn.execute(text("SELECT * FROM access_log")).all())
    assert "probe@example.com" not in everything
    assert UNKNOWN_ID not in everything


def test_privacy_lookups_and_consent_reads_are_logged_without_identifiers(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    """Privacy clients' reads are reads of personal data too: a subject lookup (found or not) and
    a read of someone's consents each leave an entry, naming kinds of identifier, never values."""
    subject = Store(api, keys, {"email": "ada@example.com"}).consent({"personalize": "granted"})
    found = api.post(
        "/v1/subjects/resolve", headers=keys.header("privacy"), json={"identifiers": {"email": "ada@example.com"}}
    )
    missed = api.post(
        "/v1/subjects/resolve", headers=keys.header("admin"), json={"identifiers": {"email": "probe@example.com"}}
    )
    consents = api.get(f"/v1/subjects/{subject}/consents", headers=keys.header("privacy"))
    assert (found.status_code, missed.status_code, consents.status_code) == (200, 404, 200)

    with runtime.db.transaction(write=False) as session:
        logged = [
            (e.client_id, e.action, e.subject_id, e.detail)
            for e in session.scalars(
                select(AccessLogEntry)
                .where(AccessLogEntry.action.in_(["subject.resolve", "consent.read"]))
                .order_by(AccessLogEntry.seq)
            )
        ]
        everything = str(session.execute(text("SELECT * FROM access_log")).all())

    privacy, admin = _client_id(runtime, keys.privacy), _client_id(runtime, keys.admin)
    assert logged == [
        (privacy, "subject.resolve", subject, {"identifier_kinds": ["email"], "found": True}),
        (admin, "subject.resolve", None, {"identifier_kinds": ["email"], "found": False}),
        (privacy, "consent.read", subject, {}),
    ]
    assert "ada@example.com" not in everything and "probe@example.com" not in everything
    assert _verify(runtime).ok


def test_the_audit_lists_reads_of_every_subject_merged_into_one(quiet: Quiet, keys: Keys) -> None:
    api = quiet.client
    visitor = Store(api, keys, {"anonymous_id": "cookie-1"})
    anonymous = visitor.consent({"personalize": "granted"})
    member = Store(api, keys, {"email": "ada@example.com"})
    known = member.consent({"personalize": "granted"})
    view(api, keys, anonymous)
    view(api, keys, known)
    survivor = Store(api, keys, {"anonymous_id": "cookie-1", "email": "ada@example.com"}).consent(
        {"personalize": "granted"}
    )

    entries = [e for e in _audit(api, keys, survivor) if e["action"] == "view.read"]

    assert sorted(e["subject_id"] for e in entries) == sorted([anonymous, known])


def test_the_audit_pages_through_a_merged_subjects_log_by_its_next_links(quiet: Quiet, keys: Keys) -> None:
    api = quiet.client
    anonymous = Store(api, keys, {"anonymous_id": "cookie-1"}).consent({"personalize": "granted"})
    known = Store(api, keys, {"email": "ada@example.com"}).consent({"personalize": "granted"})
    other = Store(api, keys, {"email": "bob@example.com"}).consent({"personalize": "granted"})
    for i in range(7):
        view(api, keys, (anonymous, known, other)[i % 3])
    survivor = Store(api, keys, {"anonymous_id": "cookie-1", "email": "ada@example.com"}).consent(
        {"personalize": "granted"}
    )
    whole = _audit(api, keys, survivor)
    assert len(whole) >= 8 and {e["subject_id"] for e in whole} == {anonymous, known}

    pages, url = [], f"/v1/audit?subject_id={survivor}&limit=3"
    while url:
        answer = api.get(url, headers=keys.header("privacy"))
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        link = answer.headers.get("link")
        url = link[link.index("<") + 1 : link.index(">")] if link else ""
        assert (link is not None) == (len(pages[-1]) == 3)
        assert len(pages) <= len(whole)
    assert [e for page in pages for e in page] == whole  # every entry once, in log order
    assert all(len(page) <= 3 for page in pages)

    after = whole[2]["seq"]
    answer = api.get("/v1/audit", headers=keys.header("privacy"), params={"subject_id": survivor, "after": after})
    assert answer.json() == whole[3:]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 0}, "limit"), ({"limit": 5001}, "limit"), ({"after": -1}, "after"), ({"after": 2**63}, "after")],
)
def test_a_bad_audit_page_is_refused_naming_the_parameter(
    quiet: Quiet, keys: Keys, params: dict[str, int], field: str
) -> None:
    answer = quiet.client.get("/v1/audit", headers=keys.header("privacy"), params={"subject_id": UNKNOWN_ID, **params})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field


def test_the_access_log_chain_verifies_and_finds_an_edited_entry(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"})
    for _ in range(3):
        view(api, keys, subject)
    ada.consent({"personalize": "withdrawn"})  # privacy-relevant writes share the chain
    view(api, keys, subject)
    get_view(api, keys.header("reader"), UNKNOWN_ID)
    runtime.recorder.close()  # joins the background flusher, then writes what is left

    verified = _verify(runtime)
    with runtime.db.engine.connect() as conn:
        total = conn.execute(text("SELECT COUNT(*) FROM access_log")).scalar_one()
        target = conn.execute(text("SELECT seq FROM access_log WHERE action = 'view.read' ORDER BY seq")).first()
    assert verified.ok, verified.first_bad
    assert verified.records == total >= 5
    assert target is not None

    with runtime.db.engine.begin() as conn:
        conn.execute(text("UPDATE access_log SET purpose = 'marketing' WHERE seq = :seq"), {"seq": target.seq})
    tampered = _verify(runtime)
    assert not tampered.ok
    assert tampered.first_bad is not None and tampered.first_bad["seq"] == target.seq


def test_privacy_clients_and_the_cli_verify_the_access_log(
    api: TestClient, keys: Keys, runtime: Runtime, cli: CliRunner
) -> None:
    subject = Store(api, keys).consent({"personalize": "granted"})
    view(api, keys, subject)  # buffered: the verification writes it first
    answer = api.get("/v1/audit/verify", headers=keys.header("privacy"))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"ok": True, "records": 2, "first_bad": None}  # the consent, the read
    for role in ("reader", "collector"):
        assert api.get("/v1/audit/verify", headers=keys.header(role)).status_code == 403

    with runtime.db.engine.begin() as conn:
        conn.execute(text("UPDATE access_log SET client_id = 'cli_someone_else' WHERE seq = 2"))
    tampered = api.get("/v1/audit/verify", headers=keys.header("admin")).json()
    assert tampered["ok"] is False and tampered["first_bad"]["seq"] == 2
    assert "altered" in tampered["first_bad"]["reason"]
    printed = cli.invoke(app, ["audit", "verify"])
    assert printed.exit_code == 1
    assert json.loads(printed.stdout.splitlines()[-1]) == tampered


def test_concurrent_reads_and_consent_changes_keep_one_unbroken_chain(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    people = [Store(api, keys, {"email": f"p{i}@example.com"}) for i in range(3)]
    subjects = [p.consent({"personalize": "granted"}) for p in people]
    reads_per_thread, failures = 8, []

    def reader(subject: str) -> None:
        for _ in range(reads_per_thread):
            answer = get_view(api, keys.header("reader"), subject)
            if answer.status_code != 200:
                failures.append(answer.text)

    def changer(person: Store) -> None:
        for status in ("withdrawn", "granted", "withdrawn", "granted"):
            person.consent({"personalize": status})

    threads = [threading.Thread(target=reader, args=(s,)) for s in subjects]
    threads += [threading.Thread(target=changer, args=(people[0],))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runtime.recorder.close()  # joins the background flusher, then writes the rest

    assert failures == []
    assert _count_view_reads(runtime) == reads_per_thread * len(subjects)
    assert _verify(runtime).ok


def test_the_audit_includes_a_read_the_background_flusher_is_still_writing(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    """The audit flushes this process's buffered reads first, so every read answered before the
    audit call is listed, even one whose batch the background flusher has taken but not yet
    committed (here: it waits for the access chain, held by another writer for a moment)."""
    subject = Store(api, keys).consent({"personalize": "granted"})  # creates the access chain's head
    locked, release = threading.Event(), threading.Event()

    def hold_the_access_chain() -> None:
        with runtime.db.transaction() as session:
            # SQLite: the first statement takes the write lock (BEGIN IMMEDIATE); PostgreSQL: the row lock
            lock = "" if runtime.db.is_sqlite else " FOR UPDATE"
            session.execute(text(f"SELECT seq FROM chain_heads WHERE name = 'access'{lock}"))
            locked.set()
            release.wait(timeout=3)
            session.rollback()

    holder = threading.Thread(target=hold_the_access_chain)
    holder.start()
    try:
        assert locked.wait(timeout=10)
        view(api, keys, subject)
        time.sleep(3 * runtime.settings.views.audit_flush_seconds)  # the flusher has taken the read by now
        timer = threading.Timer(1.0, release.set)  # lets a flush that waits for the writer finish
        timer.start()
        entries = _audit(api, keys, subject)
    finally:
        release.set()
        holder.join()

    assert [e["action"] for e in entries].count("view.read") == 1
    runtime.recorder.close()
    assert [e["action"] for e in _audit(api, keys, subject)].count("view.read") == 1  # it was never lost


def _record_reads(runtime: Runtime, subjects: list[str]) -> None:
    for subject in subjects:
        runtime.recorder.record(
            client_id="cli_test", action="view.read", subject_id=subject, purpose=VIEW_PURPOSE, detail={"n": subject}
        )


def test_a_flush_larger_than_one_insert_keeps_every_read_in_order_on_one_chain(runtime: Runtime) -> None:
    quiet_runtime = _quiet_runtime(runtime)  # its recorder writes only when told to
    subjects = [f"sub_{i:022d}" for i in range(1201)]  # more than one INSERT's rows, and its max batch
    try:
        _record_reads(quiet_runtime, subjects)
        assert quiet_runtime.recorder.flush() == len(subjects)
    finally:
        quiet_runtime.close()

    reads = _view_reads(runtime)
    assert [r["subject_id"] for r in reads] == subjects
    assert [r["detail"] for r in reads] == [{"n": s} for s in subjects]
    verified = _verify(runtime)
    assert verified.ok and verified.records == len(subjects)


def test_a_failed_flush_keeps_its_reads_and_the_next_one_writes_them(runtime: Runtime) -> None:
    quiet_runtime = _quiet_runtime(runtime)
    subjects = [f"sub_{i:022d}" for i in range(3)]
    # A row squatting on the sequence number the flush will use makes its insert fail for real.
    squatter = text(
        "INSERT INTO access_log (entry_id, seq, at, action, detail, prev_hash, hash) "
        "VALUES ('acc_squatter', 1, '2026-01-01 00:00:00', 'x', '{}', '', '')"
    )
    try:
        with runtime.db.transaction() as session:
            session.execute(squatter)
        _record_reads(quiet_runtime, subjects)
        with pytest.raises(IntegrityError):
            quiet_runtime.recorder.flush()
        with runtime.db.transaction() as session:
            session.execute(text("DELETE FROM access_log WHERE entry_id = 'acc_squatter'"))
        assert quiet_runtime.recorder.flush() == len(subjects)
    finally:
        quiet_runtime.close()

    assert [r["subject_id"] for r in _view_reads(runtime)] == subjects
    assert _verify(runtime).ok
