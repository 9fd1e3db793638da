"""Fixtures: every database test runs on SQLite (a real file) and, when
PROFILESTORE_TEST_DATABASE_URL is set, on PostgreSQL too. Migrations build the schema once per
backend; each test then starts from a wiped database with the default taxonomy loaded.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from profilestore.config import Settings
from profilestore.crypto.keyring import encode_master_key, generate_master_key
from profilestore.runtime import Runtime

PG_URL = os.environ.get("PROFILESTORE_TEST_DATABASE_URL")
BACKENDS = ["sqlite", *(["postgresql"] if PG_URL else [])]


def _pg_url(database: str) -> str:
    return (
        make_url(PG_URL).set(drivername="postgresql+psycopg", database=database).render_as_string(hide_password=False)
    )


def _recreate_pg_database(name: str) -> None:
    admin = create_engine(_pg_url(make_url(PG_URL).database or "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def master_key() -> str:
    return encode_master_key(generate_master_key())


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def template(backend: str, tmp_path_factory: pytest.TempPathFactory, master_key: str) -> dict[str, str]:
    """A migrated database per backend; SQLite tests copy its files, PostgreSQL tests wipe it."""
    folder = tmp_path_factory.mktemp(f"template-{backend}")
    if backend == "sqlite":
        urls = {"db": f"sqlite:///{folder}/profilestore.db", "keystore": f"sqlite:///{folder}/keystore.db"}
    else:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        _recreate_pg_database(f"ps_test_{worker}")
        _recreate_pg_database(f"ps_test_{worker}_keys")
        urls = {"db": _pg_url(f"ps_test_{worker}"), "keystore": _pg_url(f"ps_test_{worker}_keys")}
    settings = Settings(data_dir=folder, database_url=urls["db"], keystore_url=urls["keystore"], master_key=master_key)
    runtime = Runtime.from_settings(settings)
    runtime.migrate()
    runtime.close()
    return {**urls, "folder": str(folder)}


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
    return Settings(data_dir=tmp_path, database_url=db_url, keystore_url=ks_url, master_key=master_key)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime.from_settings(settings)
    rt.migrate()  # cheap at head: re-creates the key-store metadata and taxonomy after a wipe
    yield rt
    rt.close()
