"""Settings, read once from the environment (prefix ``PROFILESTORE_``) and passed in.

With nothing set, everything lives under ``./profilestore-data/``: the data SQLite file, a separate
key-store SQLite file and a generated development master key. ``environment=production`` refuses to
start unless a master key was given explicitly.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    development = "development"
    production = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROFILESTORE_", extra="ignore", frozen=True)

    environment: Environment = Environment.development
    data_dir: Path = Path("profilestore-data")
    database_url: str | None = Field(
        default=None, description="Data database; default: SQLite file profilestore.db in data_dir"
    )
    keystore_url: str | None = Field(
        default=None, description="Key-store database; default: SQLite file keystore.db in data_dir"
    )
    master_key: SecretStr | None = Field(
        default=None, description="Base64 of 32 random bytes; wraps every per-subject data key"
    )
    master_key_file: Path | None = Field(
        default=None, description="File holding the master key; default: data_dir/master.key (development)"
    )
    previous_master_keys: list[SecretStr] = Field(
        default_factory=list, description="Master keys still accepted for unwrapping during a rotation"
    )
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Requests
    max_body_bytes: int = 1_048_576
    clock_skew_seconds: int = 300
    default_phone_region: str | None = Field(
        default=None, description="ISO region for phone numbers written without +country code"
    )

    # Consent
    default_consent_valid_days: int = 395  # 13 months, the usual ceiling for consent validity
    default_retention_days: int = 730
    gpc_purposes: list[str] = Field(
        default_factory=lambda: [
            "third_party_sharing",
            "marketing.advertising.first_party.targeted",
            "marketing.advertising.third_party.targeted",
        ],
        description="Purposes a Sec-GPC: 1 header withdraws: sale/sharing and targeted advertising",
    )

    @model_validator(mode="after")
    def _refuse_development_key_in_production(self) -> Settings:
        if self.environment is Environment.production and self.master_key is None and self.master_key_file is None:
            raise ValueError(
                "production refuses to start without an explicit master key: "
                "set PROFILESTORE_MASTER_KEY or PROFILESTORE_MASTER_KEY_FILE"
            )
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'profilestore.db').resolve()}"

    @cached_property
    def resolved_keystore_url(self) -> str:
        return self.keystore_url or f"sqlite:///{(self.data_dir / 'keystore.db').resolve()}"

    @property
    def uses_generated_master_key(self) -> bool:
        return self.master_key is None and self.master_key_file is None

    @cached_property
    def resolved_master_key_file(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"
