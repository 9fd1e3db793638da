"""The ``profilestore`` command: serve, migrate, and the operator's tools."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from profilestore.config import Settings
from profilestore.runtime import Runtime

app = typer.Typer(help="profilestore: consent ledger and purpose-bound profile store.", no_args_is_help=True)


def _settings(data_dir: Path | None = None) -> Settings:
    if data_dir is not None:
        os.environ["PROFILESTORE_DATA_DIR"] = str(data_dir)
    try:
        return Settings()
    except ValueError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _runtime(data_dir: Path | None = None) -> Runtime:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return Runtime.from_settings(_settings(data_dir))


DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Folder of the embedded databases and key")]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Migrate both databases, then serve the API (OpenAPI docs at /docs)."""
    import uvicorn

    from profilestore.app import create_app

    runtime = _runtime(data_dir)
    runtime.migrate()
    settings = runtime.settings
    uvicorn.run(
        create_app(runtime=runtime),
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level,
        proxy_headers=False,
    )


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Bring the data database and the key store to the latest schema; load the default taxonomy."""
    runtime = _runtime(data_dir)
    runtime.migrate()
    typer.echo("migrated: data database and key store are at head")


if __name__ == "__main__":
    app()
