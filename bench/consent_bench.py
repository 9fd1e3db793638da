"""Consent posts per second, over HTTP, against the bare SQL insert of the same rows.

1. **http consent posts**: a fresh store (embedded default: SQLite data file + separate SQLite key
   store + generated master key, in a temporary folder; or the data database at ``--database-url``)
   behind a real uvicorn server on a free localhost port. ``--concurrency`` threads, each with its
   own ``httpx.Client``, send the workload's consent posts (``bench/workload.py``) and time each
   request. Every answer must be 201.
2. **bare SQL insert**: the rows the same posts write to the ledger (a subject per new person, its
   identifiers with a 32-byte blind index and a ciphertext-sized blob, one consent record per
   decision, the consent state per purpose) inserted with SQLAlchemy Core into a fresh migrated
   database of the same kind, one transaction per post, with the same concurrency: no HTTP, no
   crypto, no validation, no reads. The floor the product's write path stands on.

Run: ``.venv/bin/profilestore bench consent --posts 2000`` or ``python bench/consent_bench.py --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import random
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/consent_bench.py` and `profilestore bench` alike
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from sqlalchemy import Connection, create_engine, func, inspect, select, text  # noqa: E402
from sqlalchemy.dialects.postgresql import insert as pg_insert  # noqa: E402
from sqlalchemy.dialects.sqlite import insert as sqlite_insert  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.workload import GPC_PURPOSES, ConsentPost, Workload, generate  # noqa: E402
from profilestore import migrate  # noqa: E402
from profilestore.app import create_app  # noqa: E402
from profilestore.auth.schemas import ClientIn, Role  # noqa: E402
from profilestore.auth.service import create_client  # noqa: E402
from profilestore.config import Environment, Settings  # noqa: E402
from profilestore.db import Database  # noqa: E402
from profilestore.kit.ids import new_id  # noqa: E402
from profilestore.models import Base  # noqa: E402
from profilestore.runtime import Runtime  # noqa: E402

T = TypeVar("T")
S = TypeVar("S")

HTTP = "http consent posts"
BASELINE = "bare SQL insert"
SERIAL = "bare SQL, 1 writer"
LEDGER_TABLES = ("subjects", "identifiers", "consent_records", "consent_state")
OTHER_TABLES = ("subject_merges", "access_log", "idempotency_keys", "chain_heads")
CONSENT_VALID_DAYS: int = Settings.model_fields["default_consent_valid_days"].default
STATE_COLUMNS = ("status", "record_id", "collected_at", "expires_at", "grant_started_at", "grant_epoch", "updated_at")


# -- measuring ---------------------------------------------------------------------------------------


@dataclass
class Phase:
    """What one timed run of posts produced."""

    name: str
    posts: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    not_sent: int = 0
    error_samples: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.posts / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile of the request latencies, in milliseconds."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1] * 1000

    def summary(self, reference: Phase | None) -> dict[str, Any]:
        ratio = self.rate / reference.rate if reference is not None and reference.rate else None
        return {
            "name": self.name,
            "posts": self.posts,
            "seconds": round(self.seconds, 3),
            "posts_per_s": round(self.rate, 1),
            "p50_ms": round(self.percentile_ms(50), 2),
            "p90_ms": round(self.percentile_ms(90), 2),
            "p99_ms": round(self.percentile_ms(99), 2),
            "max_ms": round(self.percentile_ms(100), 2),
            "mean_ms": round(sum(self.latencies) / len(self.latencies) * 1000, 2) if self.latencies else None,
            "errors": self.errors,
            "not_sent": self.not_sent,
            "error_samples": self.error_samples,
            "process_cpu_s": round(self.cpu_seconds, 3),
            "cpu_ms_per_post": round(self.cpu_seconds / self.posts * 1000, 3) if self.posts else None,
            "ratio_to_baseline": round(ratio, 4) if ratio is not None else None,
        }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Failed(Exception):
    """A post that did not get the answer it should have."""


def run_concurrently(
    name: str,
    items: Sequence[T],
    concurrency: int,
    open_worker: Callable[[], contextlib.AbstractContextManager[S]],
    send: Callable[[S, T], None],
    deadline: float,
) -> Phase:
    """Send ``items`` from ``concurrency`` threads, each with its own state (a client, a connection)
    and time each one. The threads take the next item from a shared cursor, so the order of
    submission is the workload's order. Items not started by ``deadline`` are counted as not sent.
    An interrupt (Ctrl-C, SIGTERM) stops the threads before it propagates."""
    phase = Phase(name)
    lock = threading.Lock()
    cursor = iter(range(len(items)))
    ready = threading.Barrier(concurrency + 1)
    stop = threading.Event()
    broken: list[str] = []

    def run(state: S) -> None:
        while not stop.is_set():
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            if time.monotonic() > deadline:
                with lock:
                    phase.not_sent += 1
                continue
            started = time.perf_counter()
            try:
                send(state, items[index])
            except Exception as exc:  # every failure is counted and reported, none stops the run
                elapsed = time.perf_counter() - started
                with lock:
                    phase.errors += 1
                    phase.latencies.append(elapsed)
                    if len(phase.error_samples) < 5:
                        phase.error_samples.append(f"post {index}: {type(exc).__name__}: {exc}"[:400])
                continue
            elapsed = time.perf_counter() - started
            with lock:
                phase.posts += 1
                phase.latencies.append(elapsed)

    def worker() -> None:
        try:
            with open_worker() as state:
                ready.wait(timeout=120)
                run(state)
        except threading.BrokenBarrierError:
            return
        except Exception as exc:  # a worker that cannot start (no connection): stop them all
            broken.append(f"{type(exc).__name__}: {exc}")
            ready.abort()

    threads = [threading.Thread(target=worker, name=f"{name}-{i}", daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    try:
        ready.wait(timeout=120)
        cpu, wall = _cpu_seconds(), time.perf_counter()
        for thread in threads:
            thread.join()
    except threading.BrokenBarrierError:
        raise RuntimeError(f"{name}: a worker could not start: {broken[0] if broken else 'timed out'}") from None
    finally:
        stop.set()
        ready.abort()
        for thread in threads:
            thread.join(timeout=30)
    phase.seconds = time.perf_counter() - wall
    phase.cpu_seconds = _cpu_seconds() - cpu
    return phase


# -- the server --------------------------------------------------------------------------------------


class Server:
    """uvicorn serving the app in a background thread, on a socket bound to a free local port."""

    def __init__(self, runtime: Runtime) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(runtime=runtime), log_level="warning", access_log=False, timeout_graceful_shutdown=5
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="uvicorn", daemon=True
        )

    def start(self, timeout: float = 20.0) -> None:
        self._thread.start()
        stop = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while time.monotonic() < stop:
                if not self._thread.is_alive():
                    raise RuntimeError("the server thread exited during startup")
                with contextlib.suppress(httpx.HTTPError):
                    if self._server.started and client.get("/healthz").status_code == 200:
                        return
                time.sleep(0.05)
        raise RuntimeError(f"the server did not answer /healthz within {timeout:.0f}s")

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        with contextlib.suppress(OSError):
            self._socket.close()


# -- PostgreSQL scratch databases --------------------------------------------------------------------


class Postgres:
    """Creates (and drops again) the scratch databases the bench needs on one server."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        if not self.url.database:
            raise SystemExit("--database-url must name a database")
        self.maintenance = self.url.set(database="postgres").render_as_string(hide_password=False)
        self.created: list[str] = []

    def _admin(self, *statements: str) -> list[Any]:
        engine = create_engine(self.maintenance, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                rows = []
                for statement in statements:
                    result = conn.execute(text(statement))
                    rows.append(result.all() if result.returns_rows else [])
                return rows
        finally:
            engine.dispose()

    def exists(self, name: str) -> bool:
        rows = self._admin(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        return bool(rows[0])

    def create(self, name: str) -> str:
        self._admin(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.url.set(database=name).render_as_string(hide_password=False)

    def prepare_main(self) -> str:
        """The database named by --database-url: created when missing (and then dropped at the end);
        an existing one must be empty, so the figures are those of a fresh store."""
        name = str(self.url.database)
        if not self.exists(name):
            return self.create(name)
        url = self.url.render_as_string(hide_password=False)
        engine = create_engine(url)
        try:
            tables = inspect(engine).get_table_names()
        finally:
            engine.dispose()
        if tables:
            raise SystemExit(f"database '{name}' is not empty ({len(tables)} tables): give the bench a fresh one")
        return url

    def scratch(self, label: str) -> str:
        """A new database ``<name>_<label>_<pid>``, dropped at the end."""
        name = f"{self.url.database}_{label}_{os.getpid()}"
        if self.exists(name):
            raise SystemExit(f"database '{name}' already exists; drop it first")
        return self.create(name)

    def server_info(self) -> dict[str, str]:
        rows = self._admin("SHOW server_version", "SHOW synchronous_commit", "SHOW fsync")
        return {"server_version": rows[0][0][0], "synchronous_commit": rows[1][0][0], "fsync": rows[2][0][0]}

    def drop_created(self) -> None:
        for name in reversed(self.created):
            with contextlib.suppress(Exception):
                self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


# -- the HTTP run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """A consent post as bytes on the wire, encoded before the clock starts."""

    content: bytes
    headers: dict[str, str]


def encode(posts: Sequence[ConsentPost]) -> list[Encoded]:
    return [
        Encoded(json.dumps(p.body, separators=(",", ":")).encode(), {"content-type": "application/json", **p.headers})
        for p in posts
    ]


def row_counts(connection: Connection, tables: Sequence[str]) -> dict[str, int]:
    metadata_tables = Base.metadata.tables
    return {
        name: int(connection.execute(select(func.count()).select_from(metadata_tables[name])).scalar_one())
        for name in tables
    }


def run_http(
    runtime: Runtime, workload: Workload, warmup: int, concurrency: int, deadline: float
) -> tuple[Phase, dict[str, Any]]:
    with runtime.db.transaction() as session:
        admin = create_client(session, ClientIn(name="bench-admin", role=Role.admin)).key
        collector = create_client(session, ClientIn(name="bench-collector", role=Role.collector)).key
    server = Server(runtime)
    server.start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}, timeout=30) as client:
            for notice in workload.notices:
                answer = client.post("/v1/notices", json=notice.body())
                if answer.status_code not in (200, 201):
                    raise RuntimeError(f"publishing notice {notice.key} failed: {answer.status_code} {answer.text}")

        @contextlib.contextmanager
        def open_client() -> Iterator[httpx.Client]:
            headers = {"Authorization": f"Bearer {collector}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
                yield client

        def send(client: httpx.Client, post: Encoded) -> None:
            answer = client.post("/v1/consents", content=post.content, headers=post.headers)
            if answer.status_code != 201:
                raise _Failed(f"{answer.status_code} {answer.text[:300]}")

        bodies = encode(workload.consents)
        warm = run_concurrently("warm-up", bodies[:warmup], concurrency, open_client, send, deadline)
        if warm.errors:
            print(f"warm-up: {warm.errors} errors, e.g. {warm.error_samples[0]}", file=sys.stderr)
        phase = run_concurrently(HTTP, bodies[warmup:], concurrency, open_client, send, deadline)

        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}, timeout=300) as client:
            ledger = client.get("/v1/ledger/verify").json()
    finally:
        server.stop()
    with runtime.db.engine.connect() as conn:
        rows = row_counts(conn, (*LEDGER_TABLES, *OTHER_TABLES))
    with runtime.keystore.engine.connect() as conn:
        rows["keystore.data_keys"] = int(conn.execute(text("SELECT COUNT(*) FROM data_keys")).scalar_one())
    return phase, {"ledger_verify": ledger, "warmup_errors": warm.errors, "rows": rows}


# -- the baseline ------------------------------------------------------------------------------------


@dataclass
class BaselinePost:
    """The rows one post writes to the ledger tables, ready to insert."""

    subject: dict[str, Any] | None
    identifiers: list[dict[str, Any]]
    records: list[dict[str, Any]]
    states: list[dict[str, Any]]


def baseline_rows(posts: Sequence[ConsentPost], seed: int, client_id: str) -> list[BaselinePost]:
    """Mirror, in plain Python, what the service writes for each post: a subject for identifiers
    never seen (the oldest owner when they name several), rows for new identifiers, one record per
    decision (plus the ``Sec-GPC: 1`` withdrawals) and the state of each purpose touched. Blind
    indexes, ciphertexts and hashes are stand-ins of the right size."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    owner: dict[tuple[str, str], str] = {}
    born: dict[str, int] = {}
    status: dict[tuple[str, str], str] = {}
    seq = 0
    result = []
    for post in posts:
        known = {owner[item] for item in post.canonical.items() if item in owner}
        subject = None
        if known:
            subject_id = min(known, key=born.__getitem__)
        else:
            subject_id = new_id("sub")
            born[subject_id] = len(born)
            subject = {"id": subject_id, "status": "active", "merged_into": None, "created_at": now, "updated_at": now}
        identifiers = []
        for kind, value in post.canonical.items():
            if (kind, value) in owner:
                continue
            owner[(kind, value)] = subject_id
            identifiers.append(
                {
                    "blind_index": hashlib.blake2b(f"{kind}\x00{value}".encode(), digest_size=32).digest(),
                    "kind": kind,
                    "subject_id": subject_id,
                    "value_ct": rng.randbytes(45 + len(value.encode())),  # version, key id, nonce, tag
                    "created_at": now,
                }
            )
        decisions = [(c["purpose"], c["status"], post.body["source"]) for c in post.body["consents"]]
        if post.gpc:
            for purpose in GPC_PURPOSES:
                out = status.get((subject_id, purpose), "granted") != "granted"
                if not (out and (purpose, "granted", post.body["source"]) not in decisions):
                    decisions.append((purpose, "withdrawn", "gpc"))
        evidence_size = 45 + len(json.dumps(post.body["evidence"], sort_keys=True))
        receipt_id = new_id("rcpt")
        records, states = [], {}
        for purpose, decision, source in decisions:
            seq += 1
            granted = decision == "granted"
            record = {
                "subject_id": subject_id,
                "record_id": new_id("rec"),
                "seq": seq,
                "receipt_id": receipt_id,
                "purpose": purpose,
                "status": decision,
                "notice_key": post.body["notice"]["key"],
                "notice_version": post.body["notice"]["version"],
                "source": source,
                "collected_at": post.collected_at,
                "recorded_at": now,
                "expires_at": post.collected_at + timedelta(days=CONSENT_VALID_DAYS) if granted else None,
                "client_id": client_id,
                "evidence_ct": rng.randbytes(evidence_size),
                "prev_hash": rng.randbytes(32).hex(),
                "hash": rng.randbytes(32).hex(),
            }
            records.append(record)
            status[(subject_id, purpose)] = decision
            states[purpose] = {
                "subject_id": subject_id,
                "purpose": purpose,
                "status": decision,
                "record_id": record["record_id"],
                "collected_at": post.collected_at,
                "expires_at": record["expires_at"],
                "grant_started_at": post.collected_at if granted else None,
                "grant_epoch": now if granted else None,
                "updated_at": now,
            }
        result.append(BaselinePost(subject, identifiers, records, list(states.values())))
    return result


def run_baseline(
    name: str, url: str, posts: Sequence[ConsentPost], warmup: int, concurrency: int, seed: int, deadline: float
) -> tuple[Phase, dict[str, Any]]:
    migrate.upgrade("data", url)
    database = Database(url, pool_size=max(5, concurrency))
    try:
        tables = Base.metadata.tables
        subjects, identifiers, records, state = (tables[name] for name in LEDGER_TABLES)
        dialect_insert = pg_insert if database.engine.dialect.name == "postgresql" else sqlite_insert
        upsert = dialect_insert(state)
        upsert = upsert.on_conflict_do_update(
            index_elements=[state.c.subject_id, state.c.purpose],
            set_={c: upsert.excluded[c] for c in STATE_COLUMNS},
        )
        insert_subject, insert_identifiers, insert_records = subjects.insert(), identifiers.insert(), records.insert()
        rows = baseline_rows(posts, seed, client_id=new_id("cli"))

        @contextlib.contextmanager
        def open_connection() -> Iterator[Connection]:
            with database.engine.connect() as conn:
                yield conn

        # The product's writers take their process's turn first (a lock on SQLite, nothing on PostgreSQL).
        writer: Callable[[], contextlib.AbstractContextManager[None]] = getattr(
            database, "writer", contextlib.nullcontext
        )

        def send(conn: Connection, post: BaselinePost) -> None:
            with writer(), conn.begin():  # one transaction, one commit per post, like the service
                if post.subject is not None:
                    conn.execute(insert_subject, post.subject)
                if post.identifiers:
                    conn.execute(insert_identifiers, post.identifiers)
                conn.execute(insert_records, post.records)
                conn.execute(upsert, post.states)

        run_concurrently("baseline warm-up", rows[:warmup], concurrency, open_connection, send, deadline)
        phase = run_concurrently(name, rows[warmup:], concurrency, open_connection, send, deadline)
        with database.engine.connect() as conn:
            counts = row_counts(conn, LEDGER_TABLES)
    finally:
        database.dispose()
    return phase, {"rows": counts}


# -- report ------------------------------------------------------------------------------------------


def machine_info(backend: str, data_dir: Path, postgres: Postgres | None) -> dict[str, Any]:
    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "backend": backend,
        "data_dir_filesystem": _filesystem(data_dir),
        "uvicorn_http": "httptools" if find_spec("httptools") else "h11",
        "uvicorn_loop": "uvloop" if find_spec("uvloop") else "asyncio",
        "checkout": _checkout(),
        "packages": {
            p: version(p)
            for p in (
                "profilestore",
                "fastapi",
                "starlette",
                "pydantic",
                "sqlalchemy",
                "uvicorn",
                "httpx",
                "cryptography",
            )
        },
    }
    if postgres is not None:
        info["postgresql"] = postgres.server_info()
        info["psycopg"] = version("psycopg")
    return info


def _checkout() -> str | None:
    """The commit of the source tree benchmarked, with ``+dirty`` when profilestore/ has local changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "profilestore", "migrations"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def _filesystem(path: Path) -> str | None:
    """The type of the filesystem holding ``path`` (Linux), e.g. ext4 or tmpfs: it decides fsync cost."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return None
    best, kind = "", None
    resolved = str(path.resolve())
    for fields in mounts:
        if len(fields) < 3 or len(fields[1]) < len(best):
            continue
        if resolved == fields[1] or resolved.startswith(fields[1].rstrip("/") + "/"):
            best, kind = fields[1], fields[2]
    return kind


def table(results: list[dict[str, Any]]) -> str:
    """The results as a fixed-width table; the last column is each row's posts/s over the baseline's."""
    columns = ("posts", 7), ("seconds", 9), ("posts/s", 9), ("p50 ms", 8), ("p99 ms", 8), ("errors", 7)
    header = " ".join([f"{'':20}", *(f"{name:>{width}}" for name, width in columns), f"{'÷ baseline':>11}"])
    lines = [header]
    for r in results:
        ratio = f"{r['ratio_to_baseline']:.3f}" if r["ratio_to_baseline"] is not None else "-"
        lines.append(
            f"{r['name']:20} {r['posts']:>7} {r['seconds']:>9.2f} {r['posts_per_s']:>9.1f} "
            f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>7} {ratio:>11}"
        )
    http = next((r for r in results if r["name"] == HTTP), None)
    if http and http["ratio_to_baseline"]:
        ratio = http["ratio_to_baseline"]
        lines.append(f"http/baseline = {ratio:.3f}: the bare insert of the same rows is {1 / ratio:.1f}x faster")
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="profilestore bench consent",
        description="Consent posts per second and latency over HTTP, against the bare SQL insert of the same rows.",
    )
    parser.add_argument("--posts", type=int, default=2000, help="consent posts to time (default 2000)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed posts sent first (default 100)")
    parser.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON result to this file")
    parser.add_argument(
        "--database-url",
        help="bench PostgreSQL: the data database (postgresql+psycopg://…/name), missing or empty; "
        "the key store stays SQLite; the baseline uses a scratch database <name>_baseline_<pid>",
    )
    parser.add_argument(
        "--no-idempotency-keys",
        action="store_true",
        help="strip the Idempotency-Key header the workload's server-side forms send (to measure what it costs)",
    )
    parser.add_argument("--tmp-dir", type=Path, help="where the temporary data folder goes (default: system temp)")
    parser.add_argument(
        "--max-seconds", type=float, default=1800, help="stop sending after this long per run (default 1800)"
    )
    args = parser.parse_args(argv)
    if args.posts < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--posts and --concurrency must be at least 1, --warmup at least 0")
    if args.database_url and not args.database_url.startswith("postgresql"):
        parser.error("--database-url must be a postgresql:// URL (the default is the embedded SQLite store)")
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)  # clean up (server, temp folder, scratch databases) on kill
    # The embedded default generates a development master key and says so: expected here.
    logging.getLogger("profilestore.crypto").setLevel(logging.ERROR)

    load_before = [round(x, 2) for x in os.getloadavg()]
    if load_before[0] > 1.0:
        print(f"note: the machine is busy (load average {load_before[0]}): figures will be low", file=sys.stderr)
    total = args.warmup + args.posts
    started = datetime.now(UTC)
    workload = generate(args.seed, total)
    if args.no_idempotency_keys:
        workload.strip_idempotency_keys()
    measured = workload.consents[args.warmup :]
    postgres = Postgres(args.database_url) if args.database_url else None
    backend = "postgresql" if postgres else "sqlite"

    with contextlib.ExitStack() as cleanup:
        tmp = Path(tempfile.mkdtemp(prefix="profilestore-bench-", dir=args.tmp_dir))
        cleanup.callback(shutil.rmtree, tmp, True)
        if postgres is not None:
            cleanup.callback(postgres.drop_created)
            database_url = postgres.prepare_main()
            baseline_url = postgres.scratch("baseline")
            serial_url = postgres.scratch("serial") if args.concurrency > 1 else ""
        else:
            database_url = None
            baseline_url = f"sqlite:///{tmp / 'baseline' / 'profilestore.db'}"
            serial_url = f"sqlite:///{tmp / 'serial' / 'profilestore.db'}"

        settings = Settings(
            environment=Environment.development,
            data_dir=tmp / "store",
            database_url=database_url,
            keystore_url=None,
            master_key=None,
            master_key_file=None,
        )
        runtime = Runtime.from_settings(settings)
        cleanup.callback(runtime.close)
        runtime.migrate()

        print(
            f"profilestore consent bench: {backend}, {args.posts} posts (+{args.warmup} warm-up), "
            f"concurrency {args.concurrency}, seed {args.seed}",
            file=sys.stderr,
        )
        http, http_extra = run_http(
            runtime, workload, args.warmup, args.concurrency, time.monotonic() + args.max_seconds
        )
        print(f"  http: {http.rate:.1f} posts/s; now the bare SQL insert of the same rows", file=sys.stderr)
        base, base_extra = run_baseline(
            BASELINE,
            baseline_url,
            workload.consents,
            args.warmup,
            args.concurrency,
            args.seed,
            time.monotonic() + args.max_seconds,
        )
        phases = [http, base]
        if args.concurrency > 1:  # the same inserts from one writer: what lock contention costs
            serial, _ = run_baseline(
                SERIAL, serial_url, workload.consents, args.warmup, 1, args.seed, time.monotonic() + args.max_seconds
            )
            phases.append(serial)
        machine = machine_info(backend, tmp, postgres)
        machine["load_average_before"] = load_before

    results = [phase.summary(base) for phase in phases]
    report = {
        "benchmark": "consent_posts",
        "started_at": started.isoformat(),
        "params": {
            "posts": args.posts,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "seed": args.seed,
            "backend": backend,
            "idempotency_keys": not args.no_idempotency_keys,
            "database_url": make_url(args.database_url).render_as_string(hide_password=True)
            if args.database_url
            else None,
        },
        "machine": machine,
        "workload": workload.stats(measured),
        "results": results,
        "http": http_extra,
        "baseline": base_extra,
    }
    print()
    print(f"consent posts — {backend}, concurrency {args.concurrency}, seed {args.seed}, {machine['cpu_count']} CPUs")
    print(table(results))
    print()
    print(json.dumps(report, indent=2, default=str))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    failed = any(p.errors or p.not_sent for p in phases) or not http_extra["ledger_verify"].get("ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
