"""Purpose-bound view latency and throughput, in-process and over HTTP, beside a bare FastAPI
endpoint doing the same primary-key lookup of the subject row.

Setup: a fresh store (embedded default, or PostgreSQL with ``--database-url``) served by the real
CLI, ``profilestore serve --workers N``, in its own process tree; three visitors give consent to
``personalize`` (cookie banner), declare one preference (interests) and send 10, 1,000 and 10,000
realistic shop events (``bench/events_bench.py``'s stream: ~30 categories, ~50 brands, prices)
through ``POST /v1/events`` in 1,000-event batches.

The bare FastAPI lookup (``bench/baseline_app.py``: one sync endpoint doing the same
primary-key lookup, ``SELECT id, status FROM subjects WHERE id = ?``, through the product's
``Database``) is served beside the service by uvicorn as the service is (its own process tree,
the same number of workers, httptools, uvloop). This machine's speed drifts by half within
minutes, so every phase is measured in turn with the others, never in a block of its own:

1. **http, sequential**: ``GET /v1/subjects/{id}/view?purpose=personalize.content`` with a reader
   key, one client (in a client process), ``--requests`` per subject and for the bare lookup, in
   ``--rounds`` slices taken in turn: p50/p99.
2. **http, concurrent**: ``--concurrency`` keep-alive clients, spread over ``--client-processes``
   processes, for ``--seconds`` per subject and for the bare lookup, in ``--rounds`` slices taken
   in turn: views/s and p50/p99. The clients are minimal socket clients by default (``--client
   httpx`` for httpx), so that on two cores the load generator does not take the CPU the server
   needs. The server's CPU (parent and workers) is measured.
3. **in-process**, once the servers have stopped: ``views.service.build`` called directly for
   ``personalize.content``, as the router does (a read session per call, the runtime's access
   recorder, its thread writing the access log, the garbage collector settled as in a served
   process), and the bare primary-key lookup of the subject row through the same sessionmaker,
   call by call in turn, ``--iterations`` rounds: p50/p99.

Run: ``.venv/bin/python bench/views_bench.py --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import multiprocessing
import os
import random
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/views_bench.py` from anywhere (and its client processes)
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.baseline_app import DATABASE_URL_ENV  # noqa: E402
from bench.common import (  # noqa: E402
    Phase,
    ServedProcess,
    Store,
    add_run_options,
    begin,
    check_run_options,
    machine_info,
    merge_stacks,
    open_store,
    process_cpu_seconds,
    py_spy,
    row_counts,
)
from bench.events_bench import EventStream, grant_consent, post_batches, publish_notice  # noqa: E402
from bench.workload import iso  # noqa: E402
from profilestore.auth.service import Caller, authenticate  # noqa: E402
from profilestore.db import Database  # noqa: E402
from profilestore.identity.models import Subject  # noqa: E402
from profilestore.kit import memory  # noqa: E402
from profilestore.kit.time import utcnow  # noqa: E402
from profilestore.runtime import Runtime  # noqa: E402
from profilestore.signals.models import Signal, SignalValue  # noqa: E402
from profilestore.views import service as views  # noqa: E402
from profilestore.views.schemas import ViewOut  # noqa: E402

VIEW_PURPOSE = "personalize.content"
TARGET_INPROC_P99_MS = 2.0
TARGET_HTTP_P99_MS = 10.0
TARGET_GROWTH = 1.5  # the 10,000-event subject's latency over the 10-event subject's
TARGET_VIEWS_PER_S = 2000
BATCH = 1000


# -- measuring ---------------------------------------------------------------------------------------


@dataclass
class Measured(Phase):
    """A phase of views (or baseline lookups): ``completed`` answers, their latencies, and the CPU
    of the server (this process for in-process phases) and of the client processes."""

    kind: str = "inproc"  # inproc | http | http-concurrent
    subject_events: int | None = None  # None for the baseline
    client_cpu_seconds: float | None = None

    def summary(self, baseline: Measured | None) -> dict[str, Any]:
        """The phase as the report shows it, with its latencies and rate over the baseline's."""

        def ratio(a: float, b: float) -> float | None:
            return round(a / b, 2) if b else None

        p50, p99 = self.percentile_ms(50), self.percentile_ms(99)
        n = self.completed
        server_cpu, client_cpu = self.server_cpu_seconds, self.client_cpu_seconds
        latencies = self.latency_summary(digits=3)
        latencies.pop("mean_ms")
        return {
            "name": self.name,
            "kind": self.kind,
            "subject_events": self.subject_events,
            "requests": n,
            "seconds": round(self.seconds, 3),
            "per_s": round(self.rate, 1),
            **latencies,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "server_cpu_ms_per_request": round(server_cpu / n * 1000, 3) if server_cpu and n else None,
            "client_cpu_ms_per_request": round(client_cpu / n * 1000, 3) if client_cpu and n else None,
            "p50_over_baseline": ratio(p50, baseline.percentile_ms(50)) if baseline else None,
            "p99_over_baseline": ratio(p99, baseline.percentile_ms(99)) if baseline else None,
            "rate_over_baseline": ratio(self.rate, baseline.rate) if baseline and self.kind != "inproc" else None,
        }


def run_inprocess(
    phases: Sequence[tuple[Measured, Callable[[], object]]], iterations: int, warmup: int, deadline: float
) -> None:
    """Each phase's call ``warmup`` times untimed, then ``iterations`` rounds in which every call
    runs once, each timed, so that a machine whose speed drifts (this one's moves by half within
    minutes) slows every phase alike and their ratios hold. A phase's seconds are those of its own
    calls, and its CPU is this process's during them: it is the server's here."""
    for _ in range(warmup):
        for _, call in phases:
            call()
    for _ in range(iterations):
        if time.monotonic() > deadline:
            break
        for phase, call in phases:
            cpu, started = process_cpu_seconds(), time.perf_counter()
            try:
                call()
            except Exception as exc:  # counted and reported, never stops the run
                phase.errors += 1
                if len(phase.error_samples) < 5:
                    phase.error_samples.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            elapsed = time.perf_counter() - started
            phase.latencies.append(elapsed)
            phase.seconds += elapsed
            phase.server_cpu_seconds = (phase.server_cpu_seconds or 0.0) + process_cpu_seconds() - cpu
    for phase, _ in phases:
        phase.completed = len(phase.latencies)


def merged(parts: Sequence[Measured]) -> Measured:
    """One phase from the rounds it was measured in."""
    first = parts[0]
    whole = Measured(first.name, kind=first.kind, subject_events=first.subject_events)
    for part in parts:
        whole.latencies.extend(part.latencies)
        whole.completed += part.completed
        whole.seconds += part.seconds
        whole.errors += part.errors
        whole.error_samples.extend(part.error_samples[: 5 - len(whole.error_samples)])
        for attribute in ("server_cpu_seconds", "client_cpu_seconds"):
            mine, theirs = getattr(whole, attribute), getattr(part, attribute)
            if theirs is not None:
                setattr(whole, attribute, (mine or 0.0) + theirs)
    return whole


# -- HTTP clients, in their own processes ------------------------------------------------------------


class RawClient:
    """A minimal HTTP/1.1 keep-alive GET client on a plain socket: the request bytes are built once,
    the answer is read by Content-Length. A load generator this cheap (~0.1 ms of CPU per request,
    against ~1 ms for httpx) leaves a 2-core machine to the server under test."""

    def __init__(self, url: str, path: str, headers: dict[str, str], timeout: float = 30.0) -> None:
        parsed = urlsplit(url)
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
        self._request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    def get(self) -> tuple[int, bytes]:
        self._sock.sendall(self._request)
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        status = int(head[9:12])
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding":
                raise RuntimeError("chunked answers are not supported by this client")
        if length is None:
            raise RuntimeError("answer without Content-Length")
        while len(self._buffer) < length:
            self._fill()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return status, body

    def _fill(self) -> None:
        chunk = self._sock.recv(262_144)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self._buffer += chunk

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


class HttpxClient:
    """The same interface over ``httpx.Client`` (keep-alive), for comparison."""

    def __init__(self, url: str, path: str, headers: dict[str, str]) -> None:
        self._client = httpx.Client(base_url=url, headers=headers, timeout=30)
        self._path = path

    def get(self) -> tuple[int, bytes]:
        answer = self._client.get(self._path)
        return answer.status_code, answer.content

    def close(self) -> None:
        self._client.close()


def _client_process(
    url: str,
    path: str,
    headers: dict[str, str],
    threads: int,
    start_at: float,
    seconds: float | None,
    count: int | None,
    warmup: int,
    kind: str,
) -> dict[str, Any]:
    """Runs in a client process: ``threads`` keep-alive clients GET ``path``: ``warmup`` untimed
    requests each, then from ``start_at`` (wall clock) either ``count`` requests each or as many as
    fit in ``seconds``. Every answer must be 200."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []
    ended: list[float] = []
    lock = threading.Lock()
    factory = RawClient if kind == "raw" else HttpxClient

    def run(index: int) -> None:
        mine = latencies[index]
        client = factory(url, path, headers)
        try:
            for _ in range(warmup):
                client.get()
            time.sleep(max(0.0, start_at - time.time()))
            stop = start_at + seconds if seconds is not None else float("inf")
            done = 0
            while (count is None or done < count) and time.time() < stop:
                done += 1
                started = time.perf_counter()
                try:
                    status, body = client.get()
                    if status != 200:
                        raise RuntimeError(f"{status} {body[:200]!r}")
                except Exception as exc:  # counted and reported, never stops the run
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}"[:300])
                    client.close()
                    client = factory(url, path, headers)
                    continue
                mine.append(time.perf_counter() - started)
        finally:
            client.close()
            with lock:
                ended.append(time.time())

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    # The CPU of the timed requests only: connecting and the warm-up happen before start_at.
    time.sleep(max(0.0, start_at - time.time()))
    cpu = process_cpu_seconds()
    for w in workers:
        w.join()
    return {
        "latencies": [x for one in latencies for x in one],
        "errors": len(errors),
        "error_samples": errors[:5],
        "ended": max(ended, default=time.time()),
        "cpu_s": process_cpu_seconds() - cpu,
    }


def _ready() -> int:
    return os.getpid()


class Clients:
    """A pool of client processes (spawned, so they share nothing with the bench or the server)."""

    def __init__(self, processes: int, kind: str = "raw") -> None:
        self.processes = processes
        self.kind = kind
        self._pool = ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn"))
        pids = set()
        for _ in range(3):  # start every worker process now, not during a timed phase
            pids |= {f.result(timeout=120) for f in [self._pool.submit(_ready) for _ in range(processes * 2)]}
            if len(pids) >= processes:
                break

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def run(
        self,
        name: str,
        kind: str,
        subject_events: int | None,
        server: ServedProcess,
        path: str,
        headers: dict[str, str],
        *,
        concurrency: int,
        seconds: float | None = None,
        count: int | None = None,
        warmup: int = 20,
    ) -> Measured:
        """``concurrency`` clients of ``server`` over min(processes, concurrency) processes, timed
        from a common start once every client has warmed up; the CPU of the server's process tree
        is measured from that start to the last answer."""
        processes = min(self.processes, concurrency)
        shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
        start_at = time.time() + 1.5 + 0.02 * warmup * max(shares)  # after every client's warm-up
        # The server's CPU from start_at, when the clients' warm-up is over, to the last answer.
        at_start: list[float] = []
        sampler = threading.Timer(max(0.0, start_at - time.time()), lambda: at_start.append(server.cpu_seconds()))
        sampler.daemon = True
        sampler.start()
        try:
            futures = [
                self._pool.submit(
                    _client_process, server.url, path, headers, n, start_at, seconds, count, warmup, self.kind
                )
                for n in shares
            ]
            timeout = (seconds or 0) + (count or 0) * concurrency * 0.5 + 300
            results = [f.result(timeout=timeout) for f in futures]
            sampler.join()
        finally:
            sampler.cancel()
        phase = Measured(name, kind=kind, subject_events=subject_events)
        phase.server_cpu_seconds = server.cpu_seconds() - at_start[0] if at_start else None
        phase.client_cpu_seconds = sum(r["cpu_s"] for r in results)
        for r in results:
            phase.latencies.extend(r["latencies"])
            phase.errors += r["errors"]
            phase.error_samples.extend(r["error_samples"][: 5 - len(phase.error_samples)])
        phase.completed = len(phase.latencies)
        phase.seconds = max(r["ended"] for r in results) - start_at
        return phase


# -- setup -------------------------------------------------------------------------------------------


@dataclass
class Profile:
    """One benchmarked subject."""

    events: int
    anonymous_id: str
    subject_id: str = ""
    signal_rows: int = 0
    signal_values: int = 0
    view_values: dict[str, int] = field(default_factory=dict)
    view_bytes: int = 0

    @property
    def view_path(self) -> str:
        return f"/v1/subjects/{self.subject_id}/view?purpose={VIEW_PURPOSE}"


def populate(store: Store, url: str, sizes: Sequence[int], seed: int, deadline: float) -> list[Profile]:
    """Consent, one declared preference and ``size`` events for one visitor per size, over HTTP."""
    rng = random.Random(f"profilestore-views:{seed}")
    profiles = [Profile(size, str(uuid.UUID(int=rng.getrandbits(128), version=4))) for size in sizes]
    publish_notice(url, store.keys["admin"])
    subjects = grant_consent(url, store.keys["collector"], [p.anonymous_id for p in profiles], 1, deadline, seed)
    now = datetime.now(UTC)
    # Two months of history: a heavy user's 10,000 events, a light one's 10.
    stream = EventStream(seed, [p.anonymous_id for p in profiles], now=now, unknown_share=0.0, hours=24 * 60)
    headers = {"Authorization": f"Bearer {store.keys['collector']}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for p in profiles:
            p.subject_id = subjects[p.anonymous_id]
            body = {
                "identifiers": {"anonymous_id": p.anonymous_id},
                "preferences": [
                    {
                        "key": "interests",
                        "value": sorted(rng.sample(["running", "hiking", "yoga", "cycling", "sneakers"], 2)),
                        "category": "user.preferences.interests",
                    }
                ],
                "source": "preference-center",
                "declared_at": iso(now - timedelta(hours=1)),
            }
            answer = client.post("/v1/preferences", json=body)
            if answer.status_code != 201 or answer.json().get("stored") != 1:
                raise RuntimeError(f"preference post failed: {answer.status_code} {answer.text[:300]}")
    for p in profiles:
        events = stream.for_visitor(p.anonymous_id, p.events)
        batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
        phase, ingested = post_batches("populate", url, store.keys["collector"], batches, 1, deadline)
        if phase.errors or ingested.accepted != p.events:
            sample = phase.error_samples[0] if phase.error_samples else ingested.mismatches
            raise RuntimeError(f"events for the {p.events}-event subject: accepted {ingested.accepted}, {sample}")
    return profiles


def check_views(url: str, reader: dict[str, str], profiles: Sequence[Profile]) -> None:
    """Every subject's view over HTTP must be personalised, with signals: a default view would make
    the figures meaningless. Records the view's values per dimension and its size."""
    with httpx.Client(base_url=url, headers=reader, timeout=30) as client:
        for p in profiles:
            answer = client.get(p.view_path)
            view = answer.json() if answer.status_code == 200 else {}
            if not view.get("personalised") or not view.get("signals"):
                raise RuntimeError(f"the {p.events}-event subject's view is not personalised: {answer.text[:500]}")
            p.view_values = {dimension: len(values) for dimension, values in view["signals"].items()}
            p.view_bytes = len(answer.content)


def count_signals(runtime: Runtime, profiles: Sequence[Profile]) -> None:
    """Each subject's signal bucket rows and values (what a view reads: the values, when its
    purpose may count every bucket, else the buckets)."""
    with runtime.db.transaction(write=False) as session:
        for p in profiles:
            query = select(func.count()).select_from(Signal).where(Signal.subject_id == p.subject_id)
            p.signal_rows = int(session.execute(query).scalar_one())
            query = select(func.count()).select_from(SignalValue).where(SignalValue.subject_id == p.subject_id)
            p.signal_values = int(session.execute(query).scalar_one())


def view_once(runtime: Runtime, caller: Caller, q: views.ViewQuery, subject_id: str) -> ViewOut:
    """One view, exactly as ``GET /v1/subjects/{id}/view`` builds it (minus HTTP and JSON)."""
    session = runtime.db.read_session(transaction=False)
    try:
        return views.build(session, runtime.vault, runtime.settings, caller, q, subject_id, runtime.recorder, utcnow())
    finally:
        session.rollback()
        session.close()


def bare_lookup(db: Database, subject_id: str) -> None:
    with db.read_session() as session:
        session.execute(select(Subject.id, Subject.status).where(Subject.id == subject_id)).one()


# -- the phases --------------------------------------------------------------------------------------


@dataclass
class Target:
    """What one HTTP phase asks: a view of one subject, or the bare lookup."""

    subject_events: int | None  # None for the bare lookup
    server: ServedProcess
    path: str
    headers: dict[str, str]

    def name(self, concurrency: int) -> str:
        clients = f" x{concurrency}" if concurrency > 1 else ""
        if self.subject_events is None:
            return f"http bare PK lookup{clients}"
        return f"http view{clients}, {self.subject_events} events"


def http_phases(
    clients: Clients, targets: Sequence[Target], args: argparse.Namespace
) -> tuple[list[Measured], list[Measured]]:
    """Every target over HTTP, sequentially (one client, ``--requests`` each), then with
    ``--concurrency`` clients (``--seconds`` each), each phase split into ``--rounds`` slices
    taken in turn across the targets, so that the machine's drift falls on all of them alike
    (py-spy records the largest subject's concurrent slices)."""
    rounds = args.rounds
    sequential: list[list[Measured]] = [[] for _ in targets]
    concurrent: list[list[Measured]] = [[] for _ in targets]
    largest = max((t for t in targets if t.subject_events is not None), key=lambda t: t.subject_events or 0)
    for r in range(rounds):
        for t, parts in zip(targets, sequential, strict=True):
            count = args.requests // rounds + (r < args.requests % rounds)
            if count:
                parts.append(
                    clients.run(
                        t.name(1),
                        "http",
                        t.subject_events,
                        t.server,
                        t.path,
                        t.headers,
                        concurrency=1,
                        count=count,
                        warmup=args.warmup if r == 0 else args.warmup // 5,
                    )
                )
    profiled = [args.profile.with_name(f"{args.profile.name}.r{r}") for r in range(rounds)] if args.profile else []
    for r in range(rounds):
        for t, parts in zip(targets, concurrent, strict=True):
            profile = profiled[r] if profiled and t is largest else None
            with py_spy(profile, t.server.worker_pids(), gil=args.profile_gil):
                parts.append(
                    clients.run(
                        t.name(args.concurrency),
                        "http-concurrent",
                        t.subject_events,
                        t.server,
                        t.path,
                        t.headers,
                        concurrency=args.concurrency,
                        seconds=args.seconds / rounds,
                        warmup=args.warmup // 5,
                    )
                )
    if profiled:
        merge_stacks(profiled, args.profile)
    return [merged(parts) for parts in sequential], [merged(parts) for parts in concurrent]


def inprocess_phases(
    runtime: Runtime, profiles: Sequence[Profile], reader_key: str, args: argparse.Namespace
) -> tuple[list[Measured], Measured]:
    """Each subject's view built in this process, and the bare primary-key lookup of the subject
    rows through the same sessionmaker, call by call in turn. The process is set up as a serving
    one is: its garbage collector settled (``kit.memory``), the access recorder's thread writing
    the reads to the access log meanwhile."""
    memory.settle()
    runtime.recorder.start()
    with runtime.db.read_session() as session:
        caller = authenticate(session, reader_key)
    assert caller is not None, "the reader's key does not authenticate"
    q = views.query(runtime.settings, VIEW_PURPOSE, [], False, None)
    for p in profiles:
        view = view_once(runtime, caller, q, p.subject_id)
        if not view.personalised or not view.signals:
            raise RuntimeError(f"the {p.events}-event subject's in-process view is not personalised: {view}")
    phases = [Measured(f"in-process view, {p.events} events", kind="inproc", subject_events=p.events) for p in profiles]
    bare = Measured("in-process bare PK lookup", kind="inproc")
    subject_ids = [p.subject_id for p in profiles]
    cursor = iter(range(10**12))
    calls: list[tuple[Measured, Callable[[], object]]] = [
        (phase, functools.partial(view_once, runtime, caller, q, p.subject_id))
        for phase, p in zip(phases, profiles, strict=True)
    ]
    calls.append((bare, lambda: bare_lookup(runtime.db, subject_ids[next(cursor) % len(subject_ids)])))
    run_inprocess(calls, args.iterations, args.warmup, time.monotonic() + args.max_seconds)
    return phases, bare


def baseline_server(store: Store, args: argparse.Namespace) -> ServedProcess:
    """``bench/baseline_app.py`` served as the service is (uvicorn, ``--workers``, httptools,
    uvloop) over the store's data database; it runs beside the service, so that the two are
    measured in turn."""
    env = {DATABASE_URL_ENV: store.settings.resolved_database_url}
    return ServedProcess.uvicorn_app("bench.baseline_app:create_app", env, workers=args.workers, log_dir=store.tmp)


# -- report ------------------------------------------------------------------------------------------


def table(results: Sequence[dict[str, Any]]) -> str:
    header = (
        f"{'':34} {'n':>7} {'p50 ms':>8} {'p99 ms':>8} {'per s':>8} {'errors':>6}"
        f" {'p50÷base':>9} {'p99÷base':>9} {'rate÷base':>9}"
    )
    lines = [header]

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    for r in results:
        lines.append(
            f"{r['name']:34} {r['requests']:>7} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['per_s']:>8.0f} "
            f"{r['errors']:>6} {fmt(r['p50_over_baseline']):>9} {fmt(r['p99_over_baseline']):>9} "
            f"{fmt(r['rate_over_baseline']):>9}"
        )
    return "\n".join(lines)


def growth(results: Sequence[dict[str, Any]], sizes: Sequence[int]) -> dict[str, dict[str, float | None]]:
    """Largest subject's latency over the smallest's, per kind of phase."""
    out: dict[str, dict[str, float | None]] = {}
    small, large = min(sizes), max(sizes)
    for kind in ("inproc", "http", "http-concurrent"):
        by_size = {r["subject_events"]: r for r in results if r["kind"] == kind and r["subject_events"] is not None}
        if small in by_size and large in by_size and small != large:
            a, b = by_size[small], by_size[large]
            out[kind] = {
                "p50": round(b["p50_ms"] / a["p50_ms"], 2) if a["p50_ms"] else None,
                "p99": round(b["p99_ms"] / a["p99_ms"], 2) if a["p99_ms"] else None,
                "per_s": round(b["per_s"] / a["per_s"], 2) if a["per_s"] else None,
            }
    return out


def targets(results: Sequence[dict[str, Any]], ratios: dict[str, dict[str, float | None]]) -> list[str]:
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    views_only = [r for r in results if r["subject_events"] is not None]
    lines = []
    for kind, limit in (("inproc", TARGET_INPROC_P99_MS), ("http", TARGET_HTTP_P99_MS)):
        worst = max((r["p99_ms"] for r in views_only if r["kind"] == kind), default=float("nan"))
        lines.append(f"target p99 ≤ {limit:g} ms ({kind}): worst {worst:.2f} ms, {verdict(worst <= limit)}")
    for kind in ("inproc", "http"):
        if kind in ratios:
            r = ratios[kind]
            ok = all(v is not None and v <= TARGET_GROWTH for v in (r["p50"], r["p99"]))
            lines.append(
                f"target largest/smallest ≤ {TARGET_GROWTH} ({kind}): p50 x{r['p50']}, p99 x{r['p99']}, {verdict(ok)}"
            )
    rates = [r["per_s"] for r in views_only if r["kind"] == "http-concurrent"]
    if rates:
        worst_rate = min(rates)
        ok = worst_rate >= TARGET_VIEWS_PER_S
        lines.append(f"target ≥ {TARGET_VIEWS_PER_S} views/s: worst {worst_rate:.0f}/s, {verdict(ok)}")
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="profilestore bench views",
        description="View latency (in-process, and over HTTP to `profilestore serve --workers N`) and views/s for "
        "subjects with 10, 1,000 and 10,000 events, beside a bare FastAPI primary-key lookup served the same way.",
    )
    parser.add_argument("--sizes", default="10,1000,10000", help="events per subject, comma-separated")
    parser.add_argument("--iterations", type=int, default=2000, help="in-process views per subject (2000)")
    parser.add_argument("--requests", type=int, default=1000, help="sequential HTTP views per subject (1000)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent HTTP clients (default 8)")
    parser.add_argument(
        "--workers", type=int, default=2, help="server processes, for the service and the baseline alike (default 2)"
    )
    parser.add_argument("--client-processes", type=int, default=2, help="processes the clients run in (default 2)")
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator: a minimal keep-alive socket client (default) or httpx.Client",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each concurrent phase (default 10)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="slices each HTTP phase is cut into, taken in turn across the subjects and the bare lookup (default 5)",
    )
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls per subject and client first (50)")
    add_run_options(
        parser,
        database_help="bench PostgreSQL (postgresql+psycopg://user@127.0.0.1:5432/[name]): the data database, "
        "missing or empty, default name bench_views_<pid>; created and dropped",
        max_seconds=600,
        max_seconds_help="stop any phase after this long",
    )
    parser.add_argument(
        "--profile", type=Path, help="record the concurrent HTTP phase of the largest subject with py-spy (raw)"
    )
    parser.add_argument("--profile-gil", action="store_true", help="with --profile: only threads holding the GIL")
    args = parser.parse_args(argv)
    try:
        args.sizes = sorted({int(x) for x in args.sizes.split(",") if x.strip()})
    except ValueError:
        parser.error("--sizes takes comma-separated numbers of events")
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--sizes must name at least one positive number of events")
    if min(args.iterations, args.requests, args.concurrency, args.client_processes, args.workers, args.rounds) < 1:
        parser.error(
            "--iterations, --requests, --concurrency, --client-processes, --workers and --rounds must be at least 1"
        )
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be in (0, 600]")
    check_run_options(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = begin(note_above=0.5)
    started = datetime.now(UTC)

    with contextlib.ExitStack() as cleanup:
        store = cleanup.enter_context(
            open_store(args.database_url, args.tmp_dir, f"bench_views_{os.getpid()}", readers=[VIEW_PURPOSE])
        )
        clients = Clients(args.client_processes, args.client)
        cleanup.callback(clients.close)
        reader_key = store.keys["reader"]
        print(
            f"profilestore views bench: {store.backend}, subjects with {args.sizes} events, {args.workers} server "
            f"worker(s), {args.concurrency} clients in {args.client_processes} processes",
            file=sys.stderr,
        )
        with store.served(args.workers) as server:
            t0 = time.perf_counter()
            profiles = populate(store, server.url, args.sizes, args.seed, time.monotonic() + args.max_seconds)
            setup_s = time.perf_counter() - t0
            check_views(server.url, {"Authorization": f"Bearer {reader_key}"}, profiles)
            print(f"  populated in {setup_s:.1f}s; http views and the bare lookup, in turn", file=sys.stderr)
            with baseline_server(store, args) as bare:
                reader = {"Authorization": f"Bearer {reader_key}"}
                asked = [Target(p.events, server, p.view_path, reader) for p in profiles]
                asked.append(Target(None, bare, f"/subjects/{profiles[-1].subject_id}", {}))
                sequential, concurrent = http_phases(clients, asked, args)
        *http_views, http_bare = sequential
        *concurrent_views, concurrent_bare = concurrent
        http = [*http_views, *concurrent_views]

        # The servers have stopped: this process is the store's only user for the in-process phases.
        print("  in-process views and the bare lookup, in turn", file=sys.stderr)
        runtime = store.runtime
        count_signals(runtime, profiles)
        inproc, inproc_bare = inprocess_phases(runtime, profiles, reader_key, args)

        with runtime.db.engine.connect() as conn:
            rows = row_counts(conn, ("subjects", "events", "signals", "signal_values", "preferences", "access_log"))
        machine = machine_info(store.backend, store.tmp, store.postgres)
        machine["load_average_before"] = load_before
        machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        backend = store.backend

    phases = [*inproc, *http]
    baselines = {"inproc": inproc_bare, "http": http_bare, "http-concurrent": concurrent_bare}
    results = [phase.summary(baselines.get(phase.kind)) for phase in phases]
    results += [b.summary(None) for b in baselines.values()]
    ratios = growth(results, args.sizes)
    report = {
        "benchmark": "views",
        "started_at": started.isoformat(),
        "params": {
            "sizes": args.sizes,
            "purpose": VIEW_PURPOSE,
            "iterations": args.iterations,
            "requests": args.requests,
            "concurrency": args.concurrency,
            "workers": args.workers,
            "server": "profilestore serve --workers N (separate process tree); baseline: uvicorn, same workers",
            "client_processes": args.client_processes,
            "client": args.client,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "seed": args.seed,
            "backend": backend,
            "database_url": make_url(args.database_url).render_as_string(hide_password=True)
            if args.database_url
            else None,
        },
        "machine": machine,
        "subjects": [
            {
                "events": p.events,
                "signal_rows": p.signal_rows,
                "signal_values": p.signal_values,
                "view_values": p.view_values,
                "view_bytes": p.view_bytes,
            }
            for p in profiles
        ],
        "setup_s": round(setup_s, 2),
        "rows": rows,
        "results": results,
        "largest_over_smallest": ratios,
    }
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print()
    print(
        f"views ({VIEW_PURPOSE}) — {backend}, {machine['cpu_count']} CPUs, load {load_before[0]}, "
        f"{args.workers} server worker(s), {args.concurrency} {args.client} clients in {args.client_processes} "
        "processes"
    )
    print(table(results))
    for kind, r in ratios.items():
        print(
            f"{max(args.sizes)}/{min(args.sizes)} events ({kind}): p50 x{r['p50']}, p99 x{r['p99']}, rate x{r['per_s']}"
        )
    for line in targets(results, ratios):
        print(line)
    print()
    print(json.dumps(report, indent=2, default=str))
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
