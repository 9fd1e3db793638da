"""Alembic environment of the key store (a separate database by default)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

from env_common import run

from profilestore.crypto.models import KeystoreBase

# Its own version table, so the key store may share a database with the data when an operator wants.
run(KeystoreBase.metadata, url_setting="resolved_keystore_url", version_table="keystore_alembic_version")
