"""Shared body of both Alembic environments (data database and key store)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData

from profilestore.config import Settings
from profilestore.db import create_db_engine


def run(metadata: MetaData, *, url_setting: str, version_table: str) -> None:
    config = context.config
    connection = config.attributes.get("connection")
    options = {
        "target_metadata": metadata,
        "version_table": version_table,
        "render_as_batch": True,  # SQLite can only ALTER by copying the table
        "compare_type": True,
    }
    if connection is not None:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
        return

    url = config.attributes.get("url") or getattr(Settings(), url_setting)
    if context.is_offline_mode():
        context.configure(url=url, literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return

    # Migrations write: on SQLite take the write lock at BEGIN. A deferred transaction that first
    # read the version table failed at its first write (SQLITE_BUSY_SNAPSHOT, at once, no waiting)
    # whenever another connection, such as a serving process's access-log writer, committed between.
    engine = create_db_engine(url, immediate=True)
    try:
        with engine.connect() as conn:
            context.configure(connection=conn, **options)
            with context.begin_transaction():
                context.run_migrations()
            conn.commit()
    finally:
        engine.dispose()
