"""Every table of the data database, imported in one place for Alembic and the schema tests."""

from profilestore.audit import models as audit_models
from profilestore.auth import models as auth_models
from profilestore.consent import models as consent_models
from profilestore.db import Base
from profilestore.events import models as event_models
from profilestore.identity import models as identity_models
from profilestore.kit import chain, idempotency
from profilestore.preferences import models as preference_models
from profilestore.purposes import models as purpose_models
from profilestore.signals import models as signal_models

__all__ = [
    "Base",
    "audit_models",
    "auth_models",
    "chain",
    "consent_models",
    "event_models",
    "idempotency",
    "identity_models",
    "preference_models",
    "purpose_models",
    "signal_models",
]
