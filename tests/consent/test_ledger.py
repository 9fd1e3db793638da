"""The consent ledger is hash-chained: `GET /v1/ledger/verify` and `profilestore ledger verify` prove
an intact ledger and name the first broken link of one edited, cut or truncated behind the service's
back (raw SQL on the data database)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update
from typer.testing import CliRunner, Result

from profilestore.cli import app
from profilestore.consent.models import ConsentRecord
from profilestore.kit.chain import GENESIS, entry_hash
from profilestore.runtime import Runtime
from tests.conftest import Keys, consent_body

RECORDS = ConsentRecord.__table__


# -- helpers ---------------------------------------------------------------------------------------


def cli_verify(cli: CliRunner) -> tuple[int, dict[str, Any]]:
    result: Result = cli.invoke(app, ["ledger", "verify"])
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.output
    return result.exit_code, json.loads(lines[-1])


def api_verify(api: TestClient, keys: Keys) -> dict[str, Any]:
    answer = api.get("/v1/ledger/verify", headers=keys.header("privacy"))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


def post(api: TestClient, keys: Keys, purposes: dict[str, str], **extra: Any) -> dict[str, Any]:
    body = consent_body(purposes=purposes, collected_at=extra.pop("collected_at", ago(hours=1)), **extra)
    answer = api.post("/v1/consents", headers=keys.header("collector"), json=body)
    assert answer.status_code == 201, answer.text
    receipt: dict[str, Any] = answer.json()
    return receipt


def three_records(api: TestClient, keys: Keys, runtime: Runtime) -> list[dict[str, Any]]:
    """Three records, one per post; returns the ledger's rows in order."""
    post(api, keys, {"personalize": "granted"})
    post(api, keys, {"analytics": "granted"})
    post(api, keys, {"marketing": "denied"})
    return ledger_rows(runtime)


def ledger_rows(runtime: Runtime) -> list[dict[str, Any]]:
    with runtime.db.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(select(RECORDS).order_by(RECORDS.c.seq))]


def tamper(runtime: Runtime, statement: Any, **params: Any) -> None:
    """Change the data database behind the service's back."""
    with runtime.db.engine.begin() as conn:
        conn.execute(statement, params)


# -- intact ----------------------------------------------------------------------------------------


def test_an_intact_ledger_verifies_over_the_api_and_links_each_record_to_the_one_before(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    assert api_verify(api, keys) == {"ok": True, "records": 0, "first_bad": None}

    post(api, keys, {"personalize": "granted", "analytics": "denied"})
    post(api, keys, {"marketing": "granted"}, email="grace@example.com", **{"collected_at": ago(days=2)})
    answer = api.post(
        "/v1/consents",
        headers={**keys.header("collector"), "Sec-GPC": "1"},
        json=consent_body(email="alan@example.com", collected_at=ago(minutes=5)),
    )
    assert answer.status_code == 201

    rows = ledger_rows(runtime)
    assert len(rows) == 7  # 2 + 1 + 1 granted + 3 GPC withdrawals
    assert [r["seq"] for r in rows] == list(range(1, 8))
    assert rows[0]["prev_hash"] == GENESIS
    for before, after in pairwise(rows):
        assert after["prev_hash"] == before["hash"]
    assert api_verify(api, keys) == {"ok": True, "records": 7, "first_bad": None}
    assert api.get("/v1/ledger/verify", headers=keys.header("admin")).json()["ok"] is True


def test_ledger_verification_is_for_privacy_and_admin_clients(api: TestClient, keys: Keys) -> None:
    assert api.get("/v1/ledger/verify", headers=keys.header("collector")).status_code == 403
    assert api.get("/v1/ledger/verify", headers=keys.header("reader")).status_code == 403
    assert api.get("/v1/ledger/verify").status_code == 401
    assert api.get("/v1/ledger/verify", headers=keys.header("admin")).status_code == 200


def test_cli_ledger_verify_exits_0_on_an_intact_ledger(
    api: TestClient, keys: Keys, runtime: Runtime, cli: CliRunner
) -> None:
    three_records(api, keys, runtime)
    assert cli_verify(cli) == (0, {"ok": True, "records": 3, "first_bad": None})


def test_the_chain_survives_time_zone_offsets_and_fractional_seconds(api: TestClient, keys: Keys) -> None:
    """Hashes cover timestamps: what the database hands back must hash as what was written."""
    instant = datetime.now(UTC) - timedelta(days=3, microseconds=123457)
    for offset in (timedelta(hours=2), timedelta(hours=-5, minutes=-30), timedelta(0)):
        local = instant.astimezone(timezone(offset))
        post(api, keys, {"personalize": "granted", "analytics": "withdrawn"}, collected_at=local.isoformat())
    post(api, keys, {"marketing": "granted"}, collected_at=ago(seconds=1.5), evidence=None)
    assert api_verify(api, keys) == {"ok": True, "records": 7, "first_bad": None}


# -- tampering -------------------------------------------------------------------------------------


def test_changing_the_status_of_a_middle_record_is_named_by_api_and_cli(
    api: TestClient, keys: Keys, runtime: Runtime, cli: CliRunner
) -> None:
    rows = three_records(api, keys, runtime)
    victim = rows[1]
    tamper(runtime, text("UPDATE consent_records SET status = 'withdrawn' WHERE record_id = :r"), r=victim["record_id"])

    result = api_verify(api, keys)
    assert result["ok"] is False
    assert result["records"] == 1
    assert (result["first_bad"]["id"], result["first_bad"]["seq"]) == (victim["record_id"], victim["seq"])
    assert "altered" in result["first_bad"]["reason"]

    code, printed = cli_verify(cli)
    assert code == 1
    assert printed == result


def test_an_altered_record_with_its_own_hash_recomputed_is_caught_at_the_next_link(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    rows = three_records(api, keys, runtime)
    victim, after = rows[1], rows[2]
    content = {k: v for k, v in victim.items() if k not in ("seq", "prev_hash", "hash")} | {"status": "withdrawn"}
    forged = entry_hash(victim["prev_hash"], {"seq": victim["seq"], **content})
    tamper(
        runtime,
        text("UPDATE consent_records SET status = 'withdrawn', hash = :h WHERE record_id = :r"),
        h=forged,
        r=victim["record_id"],
    )
    result = api_verify(api, keys)
    assert result["ok"] is False
    assert (result["first_bad"]["id"], result["first_bad"]["seq"]) == (after["record_id"], after["seq"])


def test_altering_any_hashed_column_is_detected(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    rows = three_records(api, keys, runtime)
    victim = rows[1]
    changes: dict[str, Any] = {
        "purpose": "marketing",
        "source": "forged-form",
        "collected_at": victim["collected_at"] - timedelta(days=1),
        "recorded_at": victim["recorded_at"] + timedelta(microseconds=1),
        "expires_at": victim["expires_at"] + timedelta(days=365),
        "client_id": "cli_forged",
        "notice_version": 2,
        "receipt_id": "rcpt_forged",
        "evidence_ct": bytes(victim["evidence_ct"])[:-1] + b"\x00",
    }
    where = RECORDS.c.record_id == victim["record_id"]
    undetected = []
    for column, value in changes.items():
        tamper(runtime, update(RECORDS).where(where).values({column: value}))
        found = api_verify(api, keys)
        if found["ok"] or found["first_bad"]["id"] != victim["record_id"]:
            undetected.append((column, found))
        tamper(runtime, update(RECORDS).where(where).values({column: victim[column]}))
        assert api_verify(api, keys)["ok"] is True, f"restoring {column} should restore the chain"
    assert undetected == []


def test_deleting_a_middle_record_is_named(api: TestClient, keys: Keys, runtime: Runtime, cli: CliRunner) -> None:
    rows = three_records(api, keys, runtime)
    tamper(runtime, text("DELETE FROM consent_records WHERE record_id = :r"), r=rows[1]["record_id"])

    result = api_verify(api, keys)
    assert result["ok"] is False
    assert result["records"] == 1
    bad = result["first_bad"]
    # The gap shows at the record after the removed one; the reason names the missing seq.
    assert (bad["id"], bad["seq"]) == (rows[2]["record_id"], rows[2]["seq"])
    assert f"expected {rows[1]['seq']}" in bad["reason"]
    assert "removed" in bad["reason"]
    code, printed = cli_verify(cli)
    assert (code, printed) == (1, result)


def test_deleting_the_last_record_is_detected_at_the_chain_head(
    api: TestClient, keys: Keys, runtime: Runtime, cli: CliRunner
) -> None:
    rows = three_records(api, keys, runtime)
    tamper(runtime, text("DELETE FROM consent_records WHERE record_id = :r"), r=rows[2]["record_id"])

    result = api_verify(api, keys)
    assert result["ok"] is False
    assert result["records"] == 2
    assert result["first_bad"]["seq"] == rows[2]["seq"]
    assert "missing" in result["first_bad"]["reason"]
    code, printed = cli_verify(cli)
    assert (code, printed["ok"], printed["first_bad"]) == (1, False, result["first_bad"])


def test_a_record_past_the_chain_head_is_detected(
    api: TestClient, keys: Keys, runtime: Runtime, cli: CliRunner
) -> None:
    """A record added without moving the head (here: the head set back one record) is found,
    though the walk stops at the head."""
    rows = three_records(api, keys, runtime)
    tamper(
        runtime,
        text("UPDATE chain_heads SET seq = :seq, hash = :hash WHERE name = 'consent'"),
        seq=rows[1]["seq"],
        hash=rows[1]["hash"],
    )

    result = api_verify(api, keys)
    assert result["ok"] is False
    assert result["first_bad"]["seq"] == rows[2]["seq"]
    assert "past the chain's head" in result["first_bad"]["reason"]
    code, printed = cli_verify(cli)
    assert (code, printed["ok"], printed["first_bad"]) == (1, False, result["first_bad"])


def test_an_append_after_an_edit_does_not_heal_the_chain(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    rows = three_records(api, keys, runtime)
    tamper(runtime, text("UPDATE consent_records SET status = 'denied' WHERE record_id = :r"), r=rows[1]["record_id"])
    post(api, keys, {"third_party_sharing": "granted"})
    result = api_verify(api, keys)
    assert result["ok"] is False
    assert result["first_bad"]["id"] == rows[1]["record_id"]


def test_an_append_after_deleting_the_last_record_does_not_heal_the_chain(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    rows = three_records(api, keys, runtime)
    tamper(runtime, text("DELETE FROM consent_records WHERE record_id = :r"), r=rows[2]["record_id"])
    receipt = post(api, keys, {"third_party_sharing": "granted"})
    result = api_verify(api, keys)
    assert result["ok"] is False
    assert result["first_bad"]["id"] == receipt["records"][0]["record_id"]
    assert f"expected {rows[2]['seq']}" in result["first_bad"]["reason"]


# -- concurrency -----------------------------------------------------------------------------------


def concurrently(api: TestClient, requests: list[tuple[dict[str, str], dict[str, Any]]]) -> list[httpx.Response]:
    """Post all ``(headers, body)`` to /v1/consents at once, each from its own client and thread."""
    start = threading.Barrier(len(requests))

    def send(request: tuple[dict[str, str], dict[str, Any]]) -> httpx.Response:
        with TestClient(api.app) as client:
            start.wait()
            return client.post("/v1/consents", headers=request[0], json=request[1])

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def test_concurrent_first_posts_to_a_fresh_ledger_all_succeed_and_chain(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    """The very first appends race to create the chain's head: none of them may fail for it."""
    headers = keys.header("collector")
    answers = concurrently(api, [(headers, consent_body(email=f"p{i}@example.com")) for i in range(6)])
    assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers if a.status_code != 201]
    assert api_verify(api, keys) == {"ok": True, "records": 6, "first_bad": None}
    assert [r["seq"] for r in ledger_rows(runtime)] == list(range(1, 7))


def test_the_ledger_verifies_while_consents_are_being_recorded(api: TestClient, keys: Keys) -> None:
    """A decision that commits while the ledger is walked is past the head the walk started from:
    not a gap. (At READ COMMITTED each statement sees what committed before it; a head read after
    the walk would be ahead of the records walked.)"""
    stop, posted = threading.Event(), []

    def record() -> None:
        while not stop.is_set():
            body = consent_body(email=f"walker{len(posted)}@example.com")
            posted.append(api.post("/v1/consents", headers=keys.header("collector"), json=body).status_code)

    recorder = threading.Thread(target=record)
    recorder.start()
    verified: list[dict[str, Any]] = []
    try:
        while len(posted) < 40:
            answer = api.get("/v1/ledger/verify", headers=keys.header("privacy"))
            assert answer.status_code == 200, answer.text
            verified.append(answer.json())
    finally:
        stop.set()
        recorder.join()

    assert set(posted) == {201}
    assert [v for v in verified if not v["ok"]] == []
    assert verified[-1]["records"] > verified[0]["records"]  # it was walked while it grew
