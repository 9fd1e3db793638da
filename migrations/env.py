"""Alembic environment of the data database."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from env_common import run

from profilestore.models import Base

run(Base.metadata, url_setting="resolved_database_url", version_table="alembic_version")
