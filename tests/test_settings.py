"""Settings and the embedded default: one data directory, two SQLite files and a development key;
production refuses to start without an explicit master key."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine, inspect
from typer.testing import CliRunner

from profilestore.cli import app
from profilestore.config import Environment, Settings
from profilestore.crypto.keyring import encode_master_key, generate_master_key
from profilestore.crypto.models import KeystoreBase
from profilestore.models import Base
from profilestore.runtime import Runtime


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No PROFILESTORE_ variable but the data directory: the out-of-the-box configuration."""
    for name in list(os.environ):
        if name.startswith("PROFILESTORE_"):
            monkeypatch.delenv(name)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("PROFILESTORE_DATA_DIR", str(data_dir))
    return data_dir


@pytest.fixture
def embedded(clean_env: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Runtime]:
    with caplog.at_level(logging.WARNING):
        runtime = Runtime.from_settings(Settings())
        runtime.migrate()
    yield runtime
    runtime.close()


def _tables(path: Path) -> set[str]:
    engine = create_engine(f"sqlite:///{path}")
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_embedded_default_keeps_data_and_keys_in_two_files_under_the_data_dir(
    embedded: Runtime, clean_env: Path
) -> None:
    data, keystore = clean_env / "profilestore.db", clean_env / "keystore.db"
    assert data.is_file() and keystore.is_file()
    assert embedded.settings.resolved_database_url == f"sqlite:///{data.resolve()}"
    assert embedded.settings.resolved_keystore_url == f"sqlite:///{keystore.resolve()}"
    assert set(Base.metadata.tables) <= _tables(data)
    assert set(KeystoreBase.metadata.tables) <= _tables(keystore)
    assert not set(KeystoreBase.metadata.tables) & _tables(data), "data keys must not live beside the data"


def test_the_default_purposes_keep_a_grant_13_months_and_data_two_years(embedded: Runtime) -> None:
    # The product's defaults (README); the other tests run with a longer validity (conftest).
    from profilestore.purposes import service as purposes

    with embedded.db.read_session() as session:
        rules = purposes.rules(session)
    assert {(r.consent_valid_days, r.retention_days) for r in rules.values()} == {(395, 730)}


def test_the_embedded_default_generates_a_master_key_readable_by_its_owner_only(
    embedded: Runtime, clean_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_file = clean_env / "master.key"
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert embedded.settings.uses_generated_master_key
    warnings = [r.getMessage() for r in caplog.get_records("setup") if r.levelno >= logging.WARNING]
    assert any("development" in message for message in warnings), warnings


def test_the_generated_master_key_is_reused_by_the_next_start(embedded: Runtime, clean_env: Path) -> None:
    first = (clean_env / "master.key").read_text()
    again = Runtime.from_settings(Settings())
    try:
        again.migrate()  # would fail if the key no longer fitted the key store
    finally:
        again.close()
    assert (clean_env / "master.key").read_text() == first


def test_the_data_database_runs_in_wal_mode_with_full_sync(embedded: Runtime) -> None:
    for engine in (embedded.db.engine, embedded.db.read_engine, embedded.keystore.engine):
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_production_refuses_to_start_without_a_master_key(clean_env: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(environment="production")  # type: ignore[arg-type]
    assert "PROFILESTORE_MASTER_KEY" in str(refused.value)


def test_production_set_in_the_environment_refuses_to_start_without_a_master_key(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROFILESTORE_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="PROFILESTORE_MASTER_KEY"):
        Settings()


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("PROFILESTORE_VIEWS__MAX_VALUES_PER_DIMENSION", "0", "max_values_per_dimension"),
        ("PROFILESTORE_VIEWS__RECENT_EVENTS_DEFAULT", "200", "must not exceed recent_events_max"),
        ("PROFILESTORE_VIEWS__AUDIT_FLUSH_SECONDS", "0", "audit_flush_seconds"),
        ("PROFILESTORE_VIEWS__DECLARED_WEIGHT", "-1", "declared_weight"),
    ],
)
def test_view_settings_out_of_range_refuse_to_start_naming_the_setting(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, words: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=words):
        Settings()


def test_view_settings_are_read_from_the_environment(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFILESTORE_VIEWS__MAX_VALUES_PER_DIMENSION", "5")
    monkeypatch.setenv("PROFILESTORE_VIEWS__DEFAULTS", '{"personalize.content": {"category": ["bestsellers"]}}')
    views = Settings().views
    assert views.max_values_per_dimension == 5
    assert views.defaults == {"personalize.content": {"category": ["bestsellers"]}}


def test_production_starts_with_an_explicit_master_key(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = encode_master_key(generate_master_key())
    assert Settings(environment="production", master_key=key).environment is Environment.production  # type: ignore[arg-type]
    monkeypatch.setenv("PROFILESTORE_ENVIRONMENT", "production")
    monkeypatch.setenv("PROFILESTORE_MASTER_KEY", key)
    settings = Settings()
    assert settings.master_key is not None and settings.master_key.get_secret_value() == key
    assert not settings.uses_generated_master_key
    assert key not in repr(settings), "the master key must not show in a repr or a log line"


def test_production_starts_with_a_master_key_file(clean_env: Path, tmp_path: Path) -> None:
    settings = Settings(environment="production", master_key_file=tmp_path / "prod.key")  # type: ignore[arg-type]
    assert settings.resolved_master_key_file == tmp_path / "prod.key"
    assert not settings.uses_generated_master_key


def test_a_production_runtime_never_generates_a_key_file(clean_env: Path, tmp_path: Path) -> None:
    settings = Settings(environment="production", master_key_file=tmp_path / "missing.key")  # type: ignore[arg-type]
    with pytest.raises(Exception, match="does not exist"):
        Runtime.from_settings(settings)
    assert not (tmp_path / "missing.key").exists()


def test_cli_migrate_in_production_without_a_key_fails_naming_the_variable(clean_env: Path) -> None:
    result = CliRunner().invoke(app, ["migrate"], env={"PROFILESTORE_ENVIRONMENT": "production"})
    assert result.exit_code != 0
    assert "PROFILESTORE_MASTER_KEY" in result.output
    assert not (clean_env / "profilestore.db").exists(), "nothing is created before the configuration is valid"
    assert not (clean_env / "master.key").exists()


def test_cli_migrate_creates_the_embedded_store(clean_env: Path) -> None:
    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in clean_env.iterdir()} >= {"profilestore.db", "keystore.db", "master.key"}
