"""The process-wide pieces a request needs, built once from Settings and held by the app."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from profilestore import migrate
from profilestore.audit.service import AccessRecorder
from profilestore.config import Settings
from profilestore.crypto.keyring import MasterKeyring
from profilestore.crypto.service import Vault
from profilestore.db import Database

log = logging.getLogger("profilestore")


@dataclass
class Runtime:
    settings: Settings
    db: Database
    keystore: Database
    vault: Vault
    recorder: AccessRecorder

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        db = Database(settings.resolved_database_url)
        keystore = Database(settings.resolved_keystore_url)
        vault = Vault(keystore, MasterKeyring(settings))
        recorder = AccessRecorder(db, interval=settings.views.audit_flush_seconds)
        return cls(settings=settings, db=db, keystore=keystore, vault=vault, recorder=recorder)

    def migrate(self) -> None:
        """Bring both databases to head, create the key-store metadata, load the default taxonomy."""
        from profilestore.purposes import service as purposes

        migrate.upgrade("data", self.settings.resolved_database_url)
        migrate.upgrade("keystore", self.settings.resolved_keystore_url)
        self.vault.initialise()
        with self.db.transaction() as session:
            purposes.load_defaults(session, self.settings)

    def close(self) -> None:
        self.recorder.close()
        self.db.dispose()
        self.keystore.dispose()
