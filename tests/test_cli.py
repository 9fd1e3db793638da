"""The ``profilestore`` command, run in-process against the test databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner, Result

from profilestore.app import create_app
from profilestore.cli import app
from profilestore.runtime import Runtime
from tests.conftest import Keys, row_counts
from tests.events.support import event, grant, ingest


def run(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(app, list(args))


def test_clients_create_json_prints_exactly_the_id_and_a_working_key(cli: CliRunner, runtime: Runtime) -> None:
    result = run(
        cli, "clients", "create", "--name", "engine", "--role", "reader", "--purpose", "personalize.content", "--json"
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert set(printed) == {"client_id", "key"}
    assert printed["client_id"].startswith("cli_") and printed["key"].startswith("psk_")

    with TestClient(create_app(runtime=runtime)) as client:
        headers = {"Authorization": f"Bearer {printed['key']}"}
        assert client.get("/v1/purposes", headers=headers).status_code == 200
        assert client.get("/v1/clients", headers=headers).status_code == 403, "the key is a reader's"
        admin = run(cli, "clients", "create", "--name", "ops", "--role", "admin", "--json")
        listed = client.get("/v1/clients", headers={"Authorization": f"Bearer {json.loads(admin.stdout)['key']}"})
    mine = [c for c in listed.json() if c["client_id"] == printed["client_id"]]
    assert mine and mine[0]["role"] == "reader" and mine[0]["purposes"] == ["personalize.content"]


def test_clients_create_without_json_prints_the_key(cli: CliRunner, runtime: Runtime) -> None:
    result = run(cli, "clients", "create", "--name", "tracker", "--role", "collector")
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("psk_")
    with TestClient(create_app(runtime=runtime)) as client:
        assert client.get("/v1/purposes", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_clients_create_refuses_an_unknown_role(cli: CliRunner, runtime: Runtime) -> None:
    before = row_counts(runtime)
    result = run(cli, "clients", "create", "--name", "x", "--role", "superuser")
    assert result.exit_code != 0
    assert "role" in result.stderr
    assert "psk_" not in result.output
    assert row_counts(runtime) == before


def test_clients_create_refuses_a_reader_without_purpose(cli: CliRunner, runtime: Runtime) -> None:
    before = row_counts(runtime)
    result = run(cli, "clients", "create", "--name", "engine", "--role", "reader")
    assert result.exit_code != 0
    assert "purpose" in result.stderr
    assert row_counts(runtime) == before


def test_clients_list_never_prints_keys(cli: CliRunner) -> None:
    created = json.loads(run(cli, "clients", "create", "--name", "tracker-7", "--role", "collector", "--json").stdout)
    result = run(cli, "clients", "list")
    assert result.exit_code == 0, result.output
    assert created["client_id"] in result.stdout and "tracker-7" in result.stdout
    assert created["key"] not in result.output
    assert created["key"][12:] not in result.output


def test_clients_revoke_ends_a_key(cli: CliRunner, runtime: Runtime) -> None:
    created = json.loads(run(cli, "clients", "create", "--name", "tracker", "--role", "collector", "--json").stdout)
    assert run(cli, "clients", "revoke", created["client_id"]).exit_code == 0
    with TestClient(create_app(runtime=runtime)) as client:
        assert client.get("/v1/purposes", headers={"Authorization": f"Bearer {created['key']}"}).status_code == 401
    assert "revoked" in run(cli, "clients", "list").stdout
    assert run(cli, "clients", "revoke", "cli_nobody").exit_code != 0


def test_purposes_set_creates_a_custom_purpose_under_its_parent(cli: CliRunner, runtime: Runtime) -> None:
    result = run(
        cli, "purposes", "set", "personalize.newsletter", "--name", "Newsletter", "--category", "user.behavior"
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["key"] == "personalize.newsletter"
    assert printed["parent"] == "personalize"
    assert printed["categories"] == ["user.behavior"]
    assert printed["is_default"] is False
    with runtime.db.engine.connect() as conn:
        stored = conn.execute(text("SELECT parent, name FROM purposes WHERE key = 'personalize.newsletter'")).one()
    assert tuple(stored) == ("personalize", "Newsletter")


def test_purposes_set_keeps_unspecified_options(cli: CliRunner) -> None:
    run(cli, "purposes", "set", "personalize.newsletter", "--name", "Newsletter", "--category", "user.behavior")
    result = run(cli, "purposes", "set", "personalize.newsletter", "--retention-days", "30")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert (printed["name"], printed["categories"], printed["retention_days"]) == ("Newsletter", ["user.behavior"], 30)


def test_purposes_set_refuses_an_unknown_parent(cli: CliRunner, runtime: Runtime) -> None:
    before = row_counts(runtime)
    result = run(cli, "purposes", "set", "nope.child", "--name", "Child")
    assert result.exit_code != 0
    assert "nope" in result.stderr and "parent" in result.stderr
    assert row_counts(runtime) == before


def test_purposes_set_refuses_an_unknown_category(cli: CliRunner, runtime: Runtime) -> None:
    before = row_counts(runtime)
    result = run(cli, "purposes", "set", "personalize.newsletter", "--category", "user.nope")
    assert result.exit_code != 0
    assert "user.nope" in result.stderr
    assert row_counts(runtime) == before


def test_purposes_list_includes_the_fideslang_defaults(cli: CliRunner) -> None:
    result = run(cli, "purposes", "list")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    assert "marketing.communications.email" in lines
    assert lines["essential.legal_obligation"][1] == "legal_obligation"
    assert lines["personalize.content.profiling"][1] == "consent"


def test_migrate_is_idempotent(cli: CliRunner, runtime: Runtime) -> None:
    before = row_counts(runtime)
    for _ in range(2):
        result = run(cli, "migrate")
        assert result.exit_code == 0, result.output
        assert "migrated" in result.stdout
    assert row_counts(runtime) == before


def test_ledger_verify_passes_on_an_empty_ledger(cli: CliRunner) -> None:
    result = run(cli, "ledger", "verify")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"ok": True, "records": 0, "first_bad": None}


def test_signals_rebuild_recomputes_cleared_signals_from_the_stored_events(
    cli: CliRunner, runtime: Runtime, api: TestClient, keys: Keys
) -> None:
    ada = {"email": "ada@example.com"}
    grant(api, keys, ada)
    ingest(api, keys, [event(ada, f"m-{i}", properties={"category": c, "brand": "Acme"}) for i, c in enumerate("aab")])
    subject = api.post("/v1/subjects/resolve", headers=keys.header("privacy"), json={"identifiers": ada}).json()
    path = f"/v1/subjects/{subject['subject_id']}/view?purpose=personalize.content"
    before = api.get(path, headers=keys.header("reader")).json()["signals"]
    assert {s["value"] for s in before["category"]} == {"a", "b"}
    with runtime.db.engine.begin() as conn:  # what the 0003 migration did, to every signal table
        for table in ("signals", "signal_values", "signal_buckets"):
            conn.execute(text(f"DELETE FROM {table}"))
    assert api.get(path, headers=keys.header("reader")).json()["signals"] == {}

    result = run(cli, "signals", "rebuild")

    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1]) == {"subjects": 1, "signal_buckets_rebuilt": 1}
    after = api.get(path, headers=keys.header("reader")).json()["signals"]
    assert {d: [(s["value"], s["evidence"]) for s in v] for d, v in after.items()} == {
        d: [(s["value"], s["evidence"]) for s in v] for d, v in before.items()
    }


def test_commands_say_what_migrations_ran_and_nothing_else_of_alembic(tmp_path: Path) -> None:
    """In a process of its own, as an operator runs it: logging is set up by the command."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROFILESTORE_")}

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        code = "from profilestore.cli import app; app()"
        done = subprocess.run(
            [sys.executable, "-c", code, *args, "--data-dir", str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done

    first = command("migrate")
    assert "Running upgrade" in first.stderr
    assert "Context impl" not in first.stderr and "Will assume" not in first.stderr

    again = command("clients", "list")
    assert "alembic" not in again.stderr, again.stderr
