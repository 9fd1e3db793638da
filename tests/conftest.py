"""Fixtures: every database test runs on SQLite (a real file) and, when
PROFILESTORE_TEST_DATABASE_URL is set, on PostgreSQL too. Migrations build the schema once per
backend; each test then starts from a wiped database with the default taxonomy loaded.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from profilestore.app import create_app
from profilestore.auth import service as clients
from profilestore.auth.schemas import ClientIn, Role
from profilestore.config import Settings
from profilestore.crypto.keyring import encode_master_key, generate_master_key
from profilestore.runtime import Runtime

PG_URL = os.environ.get("PROFILESTORE_TEST_DATABASE_URL")
BACKENDS = ["sqlite", *(["postgresql"] if PG_URL else [])]


def _pg_url(database: str) -> str:
    assert PG_URL is not None
    return (
        make_url(PG_URL).set(drivername="postgresql+psycopg", database=database).render_as_string(hide_password=False)
    )


def _admin(statements: list[str]) -> None:
    assert PG_URL is not None
    admin = create_engine(_pg_url(make_url(PG_URL).database or "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for statement in statements:
            conn.execute(text(statement))
    admin.dispose()


def _recreate_pg_database(name: str) -> None:
    _admin([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'])


def _drop_pg_database(name: str) -> None:
    _admin([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'])


@pytest.fixture(scope="session")
def master_key() -> str:
    return encode_master_key(generate_master_key())


# How long a grant stays in force in the tests: ten years, not the product's 395 days, because
# the tests give their consents fixed dates (January 2026, DEFAULT_COLLECTED_AT) and must keep
# passing as the calendar moves on. Tests of expiry set a short validity of their own, or collect
# further back than this.
CONSENT_VALID_DAYS = 3650


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def template(backend: str, tmp_path_factory: pytest.TempPathFactory, master_key: str) -> Iterator[dict[str, str]]:
    """A migrated database per backend; SQLite tests copy its files, PostgreSQL tests wipe it."""
    folder = tmp_path_factory.mktemp(f"template-{backend}")
    if backend == "sqlite":
        urls = {"db": f"sqlite:///{folder}/profilestore.db", "keystore": f"sqlite:///{folder}/keystore.db"}
    else:
        # One pair of databases per pytest process, so parallel runs never share one.
        name = f"ps_test_{os.getpid()}"
        _recreate_pg_database(name)
        _recreate_pg_database(f"{name}_keys")
        urls = {"db": _pg_url(name), "keystore": _pg_url(f"{name}_keys")}
    settings = Settings(
        data_dir=folder,
        database_url=urls["db"],
        keystore_url=urls["keystore"],
        master_key=master_key,
        default_consent_valid_days=CONSENT_VALID_DAYS,
    )
    runtime = Runtime.from_settings(settings)
    runtime.migrate()
    runtime.close()
    yield {**urls, "folder": str(folder)}
    if backend == "postgresql":
        _drop_pg_database(name)
        _drop_pg_database(f"{name}_keys")


def _wipe_pg(url: str, keep: tuple[str, ...]) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        tables = [
            row[0]
            for row in conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
            if row[0] not in keep
        ]
        if tables:
            conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def settings(backend: str, template: dict[str, str], tmp_path: Path, master_key: str) -> Settings:
    """Settings of a fresh, migrated store for one test."""
    if backend == "sqlite":
        src = Path(template["folder"])
        for name in ("profilestore.db", "keystore.db"):
            shutil.copyfile(src / name, tmp_path / name)
        db_url, ks_url = f"sqlite:///{tmp_path}/profilestore.db", f"sqlite:///{tmp_path}/keystore.db"
    else:
        db_url, ks_url = template["db"], template["keystore"]
        _wipe_pg(db_url, keep=("alembic_version",))
        _wipe_pg(ks_url, keep=("keystore_alembic_version",))
    return Settings(
        data_dir=tmp_path,
        database_url=db_url,
        keystore_url=ks_url,
        master_key=master_key,
        default_consent_valid_days=CONSENT_VALID_DAYS,
    )


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime.from_settings(settings)
    rt.migrate()  # cheap at head: re-creates the key-store metadata and taxonomy after a wipe
    yield rt
    rt.close()


# -- API fixtures ----------------------------------------------------------------------------------


READER_PURPOSES = ["personalize.content"]
DEFAULT_COLLECTED_AT = "2026-01-15T10:00:00Z"
NOTICE = {"key": "signup", "version": 1}
NOTICE_PURPOSES = ["personalize", "marketing", "analytics", "third_party_sharing"]


@dataclass
class Keys:
    collector: str
    reader: str
    privacy: str
    admin: str

    def header(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, role)}"}


@pytest.fixture(autouse=True)
def _value_sums_agree_afterwards(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test that has a store: the per-value signal sums that views read are what the
    signal buckets add up to (``tests.events.support.assert_value_sums_agree``)."""
    from tests.events.support import assert_value_sums_agree  # it imports this module

    # Asked for before the test runs, so that the store is still open when it ends.
    store = request.getfixturevalue("runtime") if "runtime" in request.fixturenames else None
    yield
    if store is not None:
        assert_value_sums_agree(store)


@pytest.fixture
def keys(runtime: Runtime) -> Keys:
    """One client per role, created through the service (as `profilestore clients create` does)."""
    made = {}
    with runtime.db.transaction() as session:
        for role in Role:
            spec = ClientIn(
                name=f"test-{role.value}", role=role, purposes=READER_PURPOSES if role is Role.reader else []
            )
            made[role.value] = clients.create_client(session, spec).key
    return Keys(**made)


def publish_notice(client: TestClient, keys: Keys) -> None:
    """The `signup` notice v1, which consent posts name (201; 200 if the same one is there)."""
    published = client.post(
        "/v1/notices",
        headers=keys.header("admin"),
        json={**NOTICE, "text": "We personalise what you see.", "purposes": NOTICE_PURPOSES},
    )
    assert published.status_code in (200, 201), published.text


@pytest.fixture
def api(runtime: Runtime, keys: Keys) -> Iterator[TestClient]:
    """The app over real HTTP semantics (ASGI), with the `signup` notice v1 published."""
    with TestClient(create_app(runtime=runtime)) as client:
        publish_notice(client, keys)
        yield client


@pytest.fixture
def cli(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CLI runner whose environment points at this test's store, and at nothing else of the
    caller's."""
    settings = runtime.settings
    for name in list(os.environ):
        if name.startswith("PROFILESTORE_"):
            monkeypatch.delenv(name)
    assert settings.master_key is not None
    return CliRunner(
        env={
            "PROFILESTORE_DATA_DIR": str(settings.data_dir),
            "PROFILESTORE_DATABASE_URL": settings.resolved_database_url,
            "PROFILESTORE_KEYSTORE_URL": settings.resolved_keystore_url,
            "PROFILESTORE_MASTER_KEY": settings.master_key.get_secret_value(),
        }
    )


def consent_body(
    *,
    email: str | None = "ada@example.com",
    purposes: dict[str, str] | None = None,
    collected_at: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A valid consent post; override any part."""
    identifiers = extra.pop("identifiers", {"email": email} if email else {"anonymous_id": "anon-1"})
    if collected_at is None:
        # A fixed day, so that a retried body is the same body and tests can place other decisions
        # before or after it (its grants stay in force: see CONSENT_VALID_DAYS).
        collected_at = DEFAULT_COLLECTED_AT
    body: dict[str, Any] = {
        "identifiers": identifiers,
        "consents": [
            {"purpose": p, "status": s} for p, s in (purposes or {"personalize.content.profiling": "granted"}).items()
        ],
        "notice": dict(NOTICE),
        "source": "signup-form",
        "collected_at": collected_at,
        "evidence": {"user_agent": "Mozilla/5.0 (X11)", "ip": "203.0.113.77", "locale": "en-GB"},
    }
    body.update(extra)
    return body


def row_counts(runtime: Runtime) -> dict[str, int]:
    """Rows per table of the data database: to prove that a refused request wrote nothing."""
    from profilestore.models import Base

    with runtime.db.engine.connect() as conn:
        return {
            name: conn.execute(text(f'SELECT COUNT(*) FROM "{name}"')).scalar_one()
            for name in sorted(Base.metadata.tables)
        }
