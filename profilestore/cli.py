"""The ``profilestore`` command: serve, migrate, and the operator's tools."""

from __future__ import annotations

import json
import logging
import os
import runpy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from profilestore.config import Settings
from profilestore.runtime import Runtime

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from profilestore.kit.chain import Verification

app = typer.Typer(help="profilestore: consent ledger and purpose-bound profile store.", no_args_is_help=True)
clients_app = typer.Typer(help="API clients and their keys.", no_args_is_help=True)
purposes_app = typer.Typer(help="Purposes, their legal basis, retention and policy.", no_args_is_help=True)
keys_app = typer.Typer(help="Master and data keys.", no_args_is_help=True)
ledger_app = typer.Typer(help="The consent ledger.", no_args_is_help=True)
audit_app = typer.Typer(help="The access log: who read or changed whose data.", no_args_is_help=True)
signals_app = typer.Typer(help="Signals, the scores views are made of.", no_args_is_help=True)
app.add_typer(clients_app, name="clients")
app.add_typer(purposes_app, name="purposes")
app.add_typer(keys_app, name="keys")
app.add_typer(ledger_app, name="ledger")
app.add_typer(audit_app, name="audit")
app.add_typer(signals_app, name="signals")

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Folder of the embedded databases and key")]


class _AlembicChatter(logging.Filter):
    """Drops what Alembic says at INFO each time it looks at a schema (which database driver, what
    it assumes of DDL): every command migrates first, and those lines buried each command's own
    output. What it changes ("Running upgrade …") is still said."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Context impl", "Will assume"))


def _runtime(data_dir: Path | None = None) -> Runtime:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    chatty = logging.getLogger("alembic.runtime.migration")
    if not any(isinstance(f, _AlembicChatter) for f in chatty.filters):
        chatty.addFilter(_AlembicChatter())
    if data_dir is not None:
        os.environ["PROFILESTORE_DATA_DIR"] = str(data_dir)
    try:
        settings = Settings()
    except ValueError as exc:
        first = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
        typer.echo(f"configuration error: {first}", err=True)
        raise typer.Exit(2) from exc
    return Runtime.from_settings(settings)


def _ready(data_dir: Path | None) -> Runtime:
    runtime = _runtime(data_dir)
    runtime.migrate()
    return runtime


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {getattr(exc, 'message', exc)}", err=True)
    return typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000)")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Server processes (default 1; about one per CPU core in production)")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Migrate both databases, then serve the API (OpenAPI docs at /docs)."""
    import uvicorn

    from profilestore.app import create_app

    runtime = _ready(data_dir)
    settings = runtime.settings
    workers = workers or settings.workers
    options = {
        "host": host or settings.host,
        "port": settings.port if port is None else port,  # 0 asks the system for a free port
        "log_level": settings.log_level,
        "proxy_headers": False,
        # uvicorn's access log prints client IP addresses and paths with subject ids: personal
        # data in logs. Requests are counted and timed in /metrics instead.
        "access_log": False,
    }
    if workers == 1:
        uvicorn.run(create_app(runtime=runtime, tune_gc=True), **options)  # type: ignore[arg-type]
        return
    # Each worker process builds its own runtime from the same settings (the environment, which
    # --data-dir has set): no process keeps state another one needs.
    runtime.close()
    uvicorn.run("profilestore.app:create_served_app", factory=True, workers=workers, **options)  # type: ignore[arg-type]


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Bring the data database and the key store to the latest schema; load the default taxonomy."""
    _ready(data_dir)
    typer.echo("migrated: data database and key store are at head")


# -- clients ---------------------------------------------------------------------------------------


@clients_app.command("create")
def clients_create(
    name: Annotated[str, typer.Option("--name", help="Who uses this key")],
    role: Annotated[str, typer.Option("--role", help="collector, reader, privacy or admin")],
    purpose: Annotated[list[str] | None, typer.Option("--purpose", help="A purpose a reader may read for")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"client_id", "key"}')] = False,
    data_dir: DataDir = None,
) -> None:
    """Create a client and print its key — once; only its hash is stored."""
    from pydantic import ValidationError

    from profilestore.auth import service
    from profilestore.auth.schemas import ClientIn
    from profilestore.kit.errors import DomainError

    runtime = _ready(data_dir)
    try:
        spec = ClientIn(name=name, role=role, purposes=purpose or [])  # type: ignore[arg-type]
        with runtime.db.transaction() as session:
            created = service.create_client(session, spec)
    except ValidationError as exc:
        typer.echo(f"error: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}", err=True)
        raise typer.Exit(1) from exc
    except DomainError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps({"client_id": created.client_id, "key": created.key}))
    else:
        typer.echo(f"client {created.client_id} ({created.role.value}) created. Its key, shown only now:")
        typer.echo(created.key)


@clients_app.command("list")
def clients_list(data_dir: DataDir = None) -> None:
    """List clients (never their keys)."""
    from profilestore.auth import service

    runtime = _ready(data_dir)
    with runtime.db.transaction(write=False) as session:
        for c in service.list_clients(session):
            state = "revoked" if c.revoked_at else "active"
            typer.echo(f"{c.client_id}  {c.role.value:9}  {state:7}  {c.key_prefix}…  {c.name}  {' '.join(c.purposes)}")


@clients_app.command("revoke")
def clients_revoke(client_id: str, data_dir: DataDir = None) -> None:
    """Revoke a client's key."""
    from profilestore.auth import service
    from profilestore.kit.errors import DomainError

    runtime = _ready(data_dir)
    try:
        with runtime.db.transaction() as session:
            service.revoke_client(session, client_id)
    except DomainError as exc:
        raise _fail(exc) from exc
    typer.echo(f"revoked {client_id}")


# -- purposes --------------------------------------------------------------------------------------


@purposes_app.command("load")
def purposes_load(data_dir: DataDir = None) -> None:
    """Load the default taxonomy (fideslang data uses and categories) where missing."""
    from profilestore.purposes import service

    runtime = _runtime(data_dir)
    runtime.migrate()
    with runtime.db.transaction() as session:
        categories, purposes = service.load_defaults(session, runtime.settings)
    typer.echo(f"loaded {categories} categories and {purposes} purposes (existing ones kept)")


@purposes_app.command("list")
def purposes_list(data_dir: DataDir = None) -> None:
    """List purposes with legal basis, retention, consent validity and policy."""
    from profilestore.purposes import service

    runtime = _ready(data_dir)
    with runtime.db.transaction(write=False) as session:
        for p in service.list_purposes(session):
            policy = ",".join(p.categories) or "-"
            basis = p.legal_basis.value
            typer.echo(f"{p.key:48} {basis:19} {p.retention_days:>5}d {p.consent_valid_days:>5}d  {policy}")


@purposes_app.command("set")
def purposes_set(
    key: str,
    name: Annotated[str | None, typer.Option(help="Display name (default: kept, or the key)")] = None,
    legal_basis: Annotated[
        str | None, typer.Option(help="consent, contract, legitimate_interest, legal_obligation")
    ] = None,
    retention_days: Annotated[int | None, typer.Option(help="Keep data collected for it this long")] = None,
    consent_valid_days: Annotated[int | None, typer.Option(help="A grant expires after this many days")] = None,
    category: Annotated[list[str] | None, typer.Option("--category", help="A data category it may use")] = None,
    data_dir: DataDir = None,
) -> None:
    """Create a custom purpose beneath an existing one, or change a purpose; unspecified options keep
    their current value."""
    from pydantic import ValidationError

    from profilestore.kit.errors import DomainError, NotFound
    from profilestore.purposes import service
    from profilestore.purposes.schemas import PurposeIn

    runtime = _ready(data_dir)
    try:
        with runtime.db.transaction() as session:
            try:
                existing = service.get_purpose(session, key).model_dump()
            except NotFound:
                existing = {"name": key, "categories": []}
            spec = PurposeIn(
                name=name or existing["name"],
                description=existing.get("description"),
                legal_basis=legal_basis or existing.get("legal_basis", "consent"),  # type: ignore[arg-type]
                retention_days=retention_days or existing.get("retention_days"),
                consent_valid_days=consent_valid_days or existing.get("consent_valid_days"),
                categories=category if category is not None else existing["categories"],
            )
            out = service.put_purpose(session, key, spec, runtime.settings)
    except ValidationError as exc:
        typer.echo(f"error: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}", err=True)
        raise typer.Exit(1) from exc
    except DomainError as exc:
        raise _fail(exc) from exc
    typer.echo(json.dumps(out.model_dump(mode="json"), indent=2))


# -- keys and ledger -------------------------------------------------------------------------------


@keys_app.command("rotate")
def keys_rotate(
    new_key_file: Annotated[Path | None, typer.Option(help="File mode: use this key instead of generating one")] = None,
    data_dir: DataDir = None,
) -> None:
    """Re-wrap every data key under a new master key, without touching data rows. Running services
    keep working throughout."""
    from profilestore.crypto.rotation import rotate_master_key

    runtime = _ready(data_dir)
    try:
        report = rotate_master_key(runtime, new_key_file)
    except ValueError as exc:
        raise _fail(exc) from exc
    typer.echo(f"re-wrapped {report.rewrapped} data keys under master key {report.master_key_id}")


def _verify(data_dir: Path | None, verify: Callable[[Session], Verification]) -> None:
    runtime = _ready(data_dir)
    with runtime.db.transaction(write=False) as session:
        result = verify(session)
    typer.echo(json.dumps({"ok": result.ok, "records": result.records, "first_bad": result.first_bad}))
    if not result.ok:
        raise typer.Exit(1)


@ledger_app.command("verify")
def ledger_verify(data_dir: DataDir = None) -> None:
    """Walk the consent ledger's hash chain; exit 1 and name the first broken link if any."""
    from profilestore.consent import service

    _verify(data_dir, service.verify)


@audit_app.command("verify")
def audit_verify(data_dir: DataDir = None) -> None:
    """Walk the access log's hash chain; exit 1 and name the first broken link if any."""
    from profilestore.audit import service

    _verify(data_dir, service.verify)


@app.command()
def purge(data_dir: DataDir = None) -> None:
    """Delete events past their purpose's retention and events whose allowing consent was withdrawn
    or expired, rebuilding the signals they fed. Safe while the service runs; prints counts."""
    from profilestore.events import retention
    from profilestore.kit.time import utcnow

    runtime = _ready(data_dir)
    with runtime.db.transaction(write=False) as session:
        subjects = retention.subjects_with_events(session)
    report = retention.purge(runtime.db.transaction, runtime.vault, runtime.settings, utcnow(), subjects)
    typer.echo(json.dumps(report.as_dict()))


@signals_app.command("rebuild")
def signals_rebuild(data_dir: DataDir = None) -> None:
    """Recompute every subject's signals from its stored events: after an upgrade whose notes ask
    for it, or after changing the SIGNALS__* mapping. Safe while serving (a subject at a time)."""
    from profilestore.events import retention
    from profilestore.events import service as events
    from profilestore.kit.time import utcnow

    runtime = _ready(data_dir)
    with runtime.db.transaction(write=False) as session:
        subjects = retention.subjects_with_events(session)
    now, buckets = utcnow(), 0
    for subject_id in subjects:
        with runtime.db.transaction() as session:
            buckets += events.rebuild_signals(session, runtime.vault, runtime.settings, subject_id, now)
    typer.echo(json.dumps({"subjects": len(subjects), "signal_buckets_rebuilt": buckets}))


BENCHMARKS = {"consent": "consent_bench.py", "events": "events_bench.py", "views": "views_bench.py"}


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    which: Annotated[str, typer.Argument(help="consent, events or views")] = "consent",
) -> None:
    """Run a benchmark of bench/ (see bench/README.md; add --help after the name for its options)."""
    if which not in BENCHMARKS:
        typer.echo(f"unknown benchmark '{which}'; choose one of {', '.join(BENCHMARKS)}", err=True)
        raise typer.Exit(2)
    script = Path(__file__).resolve().parent.parent / "bench" / BENCHMARKS[which]
    if not script.is_file():
        typer.echo("bench/ is part of the source tree: run from a checkout", err=True)
        raise typer.Exit(2)
    sys.argv = [str(script), *ctx.args]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    app()
