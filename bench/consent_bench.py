"""Consent posts per second, over HTTP, against the bare SQL insert of the same rows.

1. **http consent posts**: a fresh store (embedded default: SQLite data file + separate SQLite key
   store + generated master key, in a temporary folder; or the data database at ``--database-url``)
   served by the real CLI, ``profilestore serve --workers N``, in its own process tree on a free
   localhost port. ``--concurrency`` threads, each with its own ``httpx.Client``, send the
   workload's consent posts (``bench/workload.py``) and time each request. Every answer must be
   201. The server's CPU (parent and workers) is measured over the timed posts.
2. **bare SQL insert**: the rows the same posts write to the ledger (a subject per new person, its
   identifiers with a 32-byte blind index and a ciphertext-sized blob, one consent record per
   decision, the consent state per purpose) inserted with SQLAlchemy Core into a fresh migrated
   database of the same kind, one transaction per post, with the same concurrency, in this
   process: no HTTP, no crypto, no validation, no reads. The floor the product's write path
   stands on.

Run: ``.venv/bin/profilestore bench consent --posts 2000`` or ``python bench/consent_bench.py --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/consent_bench.py` and `profilestore bench` alike
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import Connection, text  # noqa: E402
from sqlalchemy.dialects.postgresql import insert as pg_insert  # noqa: E402
from sqlalchemy.dialects.sqlite import insert as sqlite_insert  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.common import (  # noqa: E402
    Failed,
    Phase,
    Store,
    add_run_options,
    begin,
    check_run_options,
    machine_info,
    open_store,
    row_counts,
    run_concurrently,
)
from bench.workload import GPC_PURPOSES, ConsentPost, Workload, generate  # noqa: E402
from profilestore import migrate  # noqa: E402
from profilestore.config import Settings  # noqa: E402
from profilestore.db import Database  # noqa: E402
from profilestore.kit.ids import new_id  # noqa: E402
from profilestore.models import Base  # noqa: E402

HTTP = "http consent posts"
BASELINE = "bare SQL insert"
SERIAL = "bare SQL, 1 writer"
LEDGER_TABLES = ("subjects", "identifiers", "consent_records", "consent_state")
OTHER_TABLES = ("subject_merges", "access_log", "idempotency_keys", "chain_heads")
CONSENT_VALID_DAYS: int = Settings.model_fields["default_consent_valid_days"].default
STATE_COLUMNS = ("status", "record_id", "collected_at", "expires_at", "grant_started_at", "grant_epoch", "updated_at")


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


def run_http(
    store: Store, workload: Workload, warmup: int, concurrency: int, workers: int, deadline: float
) -> tuple[Phase, dict[str, Any]]:
    """Serve ``store`` with ``profilestore serve --workers N``; publish the workload's notices,
    send the warm-up posts untimed, then time the rest from ``concurrency`` clients (the server's
    CPU measured over them), and verify the ledger. Row counts are read once the server stopped."""
    admin, collector = store.keys["admin"], store.keys["collector"]
    with store.served(workers) as server:
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
                raise Failed(f"{answer.status_code} {answer.text[:300]}")

        bodies = encode(workload.consents)
        warm = run_concurrently("warm-up", bodies[:warmup], concurrency, open_client, send, deadline)
        if warm.errors:
            print(f"warm-up: {warm.errors} errors, e.g. {warm.error_samples[0]}", file=sys.stderr)
        server_cpu = server.cpu_seconds()
        phase = run_concurrently(HTTP, bodies[warmup:], concurrency, open_client, send, deadline)
        phase.server_cpu_seconds = server.cpu_seconds() - server_cpu

        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}, timeout=300) as client:
            ledger = client.get("/v1/ledger/verify").json()
    runtime = store.runtime
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


def summary(phase: Phase, reference: Phase | None) -> dict[str, Any]:
    """One phase as the report shows it. ``cpu_ms_per_post`` is this process's CPU (the clients
    for the HTTP phase, the inserting writers for a baseline); ``server_cpu_ms_per_post`` is the
    served process tree's, for the HTTP phase."""
    ratio = phase.rate / reference.rate if reference is not None and reference.rate else None
    server_cpu = phase.server_cpu_seconds
    return {
        "name": phase.name,
        "posts": phase.completed,
        "seconds": round(phase.seconds, 3),
        "posts_per_s": round(phase.rate, 1),
        **phase.latency_summary(),
        "errors": phase.errors,
        "not_sent": phase.not_sent,
        "error_samples": phase.error_samples,
        "process_cpu_s": round(phase.cpu_seconds, 3),
        "cpu_ms_per_post": round(phase.cpu_seconds / phase.completed * 1000, 3) if phase.completed else None,
        "server_cpu_s": round(server_cpu, 3) if server_cpu is not None else None,
        "server_cpu_ms_per_post": round(server_cpu / phase.completed * 1000, 3)
        if server_cpu is not None and phase.completed
        else None,
        "ratio_to_baseline": round(ratio, 4) if ratio is not None else None,
    }


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
        description="Consent posts per second and latency over HTTP to `profilestore serve`, against the bare SQL "
        "insert of the same rows.",
    )
    parser.add_argument("--posts", type=int, default=2000, help="consent posts to time (default 2000)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--workers", type=int, default=1, help="server processes of `profilestore serve` (default 1)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed posts sent first (default 100)")
    parser.add_argument(
        "--no-idempotency-keys",
        action="store_true",
        help="strip the Idempotency-Key header the workload's server-side forms send (to measure what it costs)",
    )
    add_run_options(
        parser,
        database_help="bench PostgreSQL: the data database (postgresql+psycopg://…/[name]), missing or empty, "
        "default name bench_consent_<pid>; the key store stays SQLite; the baseline uses scratch databases "
        "<name>_baseline_<pid> and <name>_serial_<pid>",
        max_seconds=1800,
        max_seconds_help="stop sending after this long per run (default 1800)",
    )
    args = parser.parse_args(argv)
    if args.posts < 1 or args.concurrency < 1 or args.workers < 1 or args.warmup < 0:
        parser.error("--posts, --concurrency and --workers must be at least 1, --warmup at least 0")
    check_run_options(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = begin(note_above=1.0)
    total = args.warmup + args.posts
    started = datetime.now(UTC)
    workload = generate(args.seed, total)
    if args.no_idempotency_keys:
        workload.strip_idempotency_keys()
    measured = workload.consents[args.warmup :]

    with open_store(args.database_url, args.tmp_dir, f"bench_consent_{os.getpid()}") as store:
        backend = store.backend
        print(
            f"profilestore consent bench: {backend}, {args.posts} posts (+{args.warmup} warm-up), "
            f"concurrency {args.concurrency}, {args.workers} server worker(s), seed {args.seed}",
            file=sys.stderr,
        )
        http, http_extra = run_http(
            store, workload, args.warmup, args.concurrency, args.workers, time.monotonic() + args.max_seconds
        )
        print(f"  http: {http.rate:.1f} posts/s; now the bare SQL insert of the same rows", file=sys.stderr)
        base, base_extra = run_baseline(
            BASELINE,
            store.scratch_url("baseline"),
            workload.consents,
            args.warmup,
            args.concurrency,
            args.seed,
            time.monotonic() + args.max_seconds,
        )
        phases = [http, base]
        if args.concurrency > 1:  # the same inserts from one writer: what lock contention costs
            serial, _ = run_baseline(
                SERIAL,
                store.scratch_url("serial"),
                workload.consents,
                args.warmup,
                1,
                args.seed,
                time.monotonic() + args.max_seconds,
            )
            phases.append(serial)
        machine = machine_info(backend, store.tmp, store.postgres)
        machine["load_average_before"] = load_before

    results = [summary(phase, base) for phase in phases]
    report = {
        "benchmark": "consent_posts",
        "started_at": started.isoformat(),
        "params": {
            "posts": args.posts,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "workers": args.workers,
            "server": "profilestore serve --workers N (separate process tree)",
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
    print(
        f"consent posts — {backend}, concurrency {args.concurrency}, {args.workers} server worker(s), "
        f"seed {args.seed}, {machine['cpu_count']} CPUs"
    )
    print(table(results))
    print()
    print(json.dumps(report, indent=2, default=str))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    failed = any(p.errors or p.not_sent for p in phases) or not http_extra["ledger_verify"].get("ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
