"""Run the Alembic migrations of the data database and the key store from code."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config

TARGETS = {"data": "alembic", "keystore": "keystore"}


def alembic_ini() -> Path:
    """``alembic.ini`` of this installation: $PROFILESTORE_ALEMBIC_INI, the source tree, or the CWD."""
    candidates = [
        os.environ.get("PROFILESTORE_ALEMBIC_INI"),
        Path(__file__).resolve().parent.parent / "alembic.ini",
        Path.cwd() / "alembic.ini",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError("alembic.ini not found: run from the project folder or set PROFILESTORE_ALEMBIC_INI")


def alembic_config(target: str, url: str) -> Config:
    config = Config(str(alembic_ini()), ini_section=TARGETS[target])
    config.attributes["url"] = url
    return config


def upgrade(target: str, url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(target, url), revision)


def downgrade(target: str, url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(target, url), revision)
