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

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    development = "development"
    production = "production"


class EventSettings(BaseModel):
    """Behavioural event ingest (``PROFILESTORE_EVENTS__…``)."""

    max_batch_events: int = 1000
    max_event_bytes: int = 32_768  # Segment's limit per event
    max_batch_bytes: int = 4_194_304  # native /v1/events body
    segment_max_batch_bytes: int = 512_000  # Segment's limit per /v1/batch
    default_categories: dict[str, str] = Field(
        default_factory=lambda: {
            "page_viewed": "user.behavior.browsing_history",
            "screen_viewed": "user.behavior.browsing_history",
            "product_viewed": "user.behavior.browsing_history",
            "product_list_viewed": "user.behavior.browsing_history",
            "added_to_cart": "user.behavior.purchase_history",
            "removed_from_cart": "user.behavior.purchase_history",
            "checkout_started": "user.behavior.purchase_history",
            "purchase": "user.behavior.purchase_history",
            "order_completed": "user.behavior.purchase_history",
            "search": "user.behavior.search_history",
            "products_searched": "user.behavior.search_history",
            "email_opened": "user.behavior",
            "email_clicked": "user.behavior",
        }
    )
    fallback_category: str = "user.behavior"
    # Batches a serving process works on at once; more wait their turn, and their senders are
    # asked to reconnect, most likely to a process with a core to spare (kit/http.py,
    # BatchSpreadMiddleware). One batch writes while another is worked out; a third would only
    # compete for the same core.
    batches_in_flight_per_process: int = Field(default=2, ge=1)


class SignalSettings(BaseModel):
    """How events and declared preferences become signals (``PROFILESTORE_SIGNALS__…``)."""

    half_life_days: float = Field(default=14.0, gt=0)
    type_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "page_viewed": 1.0,
            "screen_viewed": 1.0,
            "product_viewed": 2.0,
            "search": 2.0,
            "products_searched": 2.0,
            "email_clicked": 2.0,
            "added_to_cart": 4.0,
            "checkout_started": 5.0,
            "purchase": 8.0,
            "order_completed": 8.0,
        }
    )
    default_weight: float = 1.0
    # dimension → event property paths tried in order (dotted paths reach into nested objects)
    event_dimensions: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "category": ["category", "product.category", "categories"],
            "brand": ["brand", "product.brand"],
            "channel": ["channel"],
            "price_band": ["price", "product.price", "value"],
        }
    )
    price_bands: list[float] = Field(default_factory=lambda: [25.0, 50.0, 100.0, 250.0])
    # declared preference key → dimension it speaks to
    preference_dimensions: dict[str, str] = Field(
        default_factory=lambda: {
            "interests": "category",
            "favourite_category": "category",
            "favourite_categories": "category",
            "favourite_brand": "brand",
            "brands": "brand",
            "preferred_channel": "channel",
            "channel": "channel",
            "price_band": "price_band",
        }
    )


class TraitTarget(BaseModel):
    key: str
    category: str


class SegmentSettings(BaseModel):
    """The Segment-compatible endpoints (``PROFILESTORE_SEGMENT__…``)."""

    # consent-manager category (context.consent.categoryPreferences) → purposes it speaks for;
    # OneTrust's C000n ids are what Segment's consent integrations send most often
    consent_categories: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "Advertising": ["marketing.advertising"],
            "Marketing": ["marketing"],
            "Analytics": ["analytics"],
            "Functional": ["functional"],
            "Personalization": ["personalize"],
            "Personalisation": ["personalize"],
            "DataSharing": ["third_party_sharing"],
            "C0002": ["analytics"],
            "C0003": ["functional", "personalize"],
            "C0004": ["marketing.advertising"],
        }
    )
    # identify trait → the declared preference it becomes
    trait_map: dict[str, TraitTarget] = Field(
        default_factory=lambda: {
            "interests": TraitTarget(key="interests", category="user.preferences.interests"),
            "favourite_category": TraitTarget(key="favourite_category", category="user.preferences.interests"),
            "favourite_brand": TraitTarget(key="favourite_brand", category="user.preferences.interests"),
            "preferred_channel": TraitTarget(key="preferred_channel", category="user.preferences.channel"),
            "newsletter_frequency": TraitTarget(key="newsletter_frequency", category="user.preferences.frequency"),
            "shoe_size": TraitTarget(key="shoe_size", category="user.preferences.size"),
        }
    )
    # identify traits that are identifiers of the person
    identifier_traits: dict[str, str] = Field(
        default_factory=lambda: {"email": "email", "phone": "phone", "loyalty_id": "loyalty_id"}
    )
    source: str = "segment"


class ViewSettings(BaseModel):
    """Purpose-bound views (``PROFILESTORE_VIEWS__…``)."""

    max_values_per_dimension: int = Field(default=20, ge=1)
    recent_events_default: int = Field(default=20, ge=1)
    recent_events_max: int = Field(default=100, ge=1)
    declared_weight: float = Field(default=1.0, ge=0)
    contradiction_min_evidence: int = Field(default=5, ge=1)
    # purpose → dimension → values a reader can render for people the store cannot classify
    defaults: dict[str, dict[str, list[str]]] = Field(default_factory=dict)
    audit_flush_seconds: float = Field(default=0.2, gt=0)

    @model_validator(mode="after")
    def _default_within_max(self) -> ViewSettings:
        if self.recent_events_default > self.recent_events_max:
            raise ValueError("recent_events_default must not exceed recent_events_max")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PROFILESTORE_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

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
    workers: int = Field(default=1, ge=1, description="Server processes `serve` starts")
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

    events: EventSettings = Field(default_factory=EventSettings)
    signals: SignalSettings = Field(default_factory=SignalSettings)
    segment: SegmentSettings = Field(default_factory=SegmentSettings)
    views: ViewSettings = Field(default_factory=ViewSettings)

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
