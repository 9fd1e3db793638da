"""What the benchmarks of bench/ share: the latency record, the concurrent sender, the temporary
store, the served process under test, PostgreSQL scratch databases, and the provenance every
report carries.

The service is measured as it is deployed: ``profilestore serve --workers N`` in its own process
(tree), started on a prepared data folder, reached over HTTP on 127.0.0.1. A store is prepared
in-process (migrated, clients created), its runtime closed, then served; what the bench reads back
afterwards it reads through a fresh in-process runtime once the server has stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import logging
import math
import os
import platform
import re
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
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import Connection, create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url

from profilestore.auth.schemas import ClientIn, Role
from profilestore.auth.service import create_client
from profilestore.config import Environment, Settings
from profilestore.models import Base
from profilestore.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")
S = TypeVar("S")


# -- measuring ---------------------------------------------------------------------------------------


def nearest_rank_ms(latencies: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile of ``latencies`` (seconds), in milliseconds; NaN when empty."""
    if not latencies:
        return math.nan
    ordered = sorted(latencies)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1] * 1000


@dataclass
class Phase:
    """What one timed run produced: the items that got their expected answer (posts, batches,
    views), the latency of every item sent, failures, and the CPU spent by this process and, when
    a served process was measured, by the server's whole process tree."""

    name: str
    completed: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    server_cpu_seconds: float | None = None
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    not_sent: int = 0
    error_samples: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Completed items per second of wall time."""
        return self.completed / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile of the latencies, in milliseconds."""
        return nearest_rank_ms(self.latencies, q)

    def mean_ms(self) -> float | None:
        return sum(self.latencies) / len(self.latencies) * 1000 if self.latencies else None

    def latency_summary(self, digits: int = 2) -> dict[str, float | None]:
        """p50, p90, p99, max and mean in milliseconds, rounded for a report."""
        mean = self.mean_ms()
        return {
            "p50_ms": round(self.percentile_ms(50), digits),
            "p90_ms": round(self.percentile_ms(90), digits),
            "p99_ms": round(self.percentile_ms(99), digits),
            "max_ms": round(self.percentile_ms(100), digits),
            "mean_ms": round(mean, digits) if mean is not None else None,
        }


def process_cpu_seconds() -> float:
    """User + system CPU of this process (all its threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Failed(Exception):
    """A request that did not get the answer it should have."""


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
                        phase.error_samples.append(f"item {index}: {type(exc).__name__}: {exc}"[:400])
                continue
            elapsed = time.perf_counter() - started
            with lock:
                phase.completed += 1
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
        cpu, wall = process_cpu_seconds(), time.perf_counter()
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
    phase.cpu_seconds = process_cpu_seconds() - cpu
    return phase


# -- the served process ------------------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# Settings the bench decides for the served store; anything else in the environment passes through,
# as it does to the in-process runtime that prepared the store. pydantic-settings matches names
# without regard to case.
_CONTROLLED_SETTINGS = {
    f"PROFILESTORE_{name}"
    for name in (
        "DATA_DIR",
        "DATABASE_URL",
        "KEYSTORE_URL",
        "MASTER_KEY",
        "MASTER_KEY_FILE",
        "ENVIRONMENT",
        "HOST",
        "PORT",
        "WORKERS",
        "LOG_LEVEL",
    )
}
# uvicorn logs this once per serving process at level info: how the bench knows every worker is up
# (``/healthz`` answers as soon as the first one is).
_STARTED = re.compile(rb"Application startup complete")


class ServerFailed(RuntimeError):
    """The served process died or did not become ready; the message carries its log's tail."""


class _PortTaken(Exception):
    """Another process took the free port between our probe and the server's bind."""


def free_port() -> int:
    """A port nothing listens on at 127.0.0.1 right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _proc_stat(pid: int) -> tuple[int, int, float] | None:
    """(parent pid, process group, CPU seconds) of ``pid`` from /proc/<pid>/stat. The CPU is utime
    + stime of the process plus cutime + cstime of its children already waited for, so that the CPU
    of a worker that exited stays counted in its parent. None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime, stime, cutime, cstime
    return int(fields[1]), int(fields[2]), ticks / _CLOCK_TICKS


def _all_processes() -> dict[int, tuple[int, int, float]]:
    """pid → (parent pid, process group, CPU seconds) of every process (Linux /proc)."""
    stats = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None:
                stats[int(entry.name)] = stat
    return stats


def process_tree(root: int) -> dict[int, float]:
    """pid → CPU seconds of ``root`` and every live descendant."""
    stats = _all_processes()
    tree: dict[int, float] = {}
    pending = [root] if root in stats else []
    while pending:
        pid = pending.pop()
        tree[pid] = stats[pid][2]
        pending.extend(child for child, (ppid, _, _) in stats.items() if ppid == pid)
    return tree


def process_group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``."""
    return [pid for pid, (_, group, _) in _all_processes().items() if group == pgid]


# Loaded before any fork: the child may only make the call (see _die_with_parent).
try:
    _LIBC: Any = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:  # pragma: no cover - a libc that cannot be loaded: servers just lack the safety net
    _LIBC = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the server's process before exec: SIGTERM when the bench process dies, even by SIGKILL,
    so no server outlives its bench (Linux)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ServedProcess:
    """A server under test in its own process (tree): started on a free 127.0.0.1 port, ready when
    ``/healthz`` answers and every one of its ``workers`` has finished its startup, stopped with
    SIGTERM (a graceful shutdown: the service flushes its batched access log) and waited for.

    Its output goes to a log file in ``log_dir``; a server that dies or does not become ready in
    time raises :class:`ServerFailed` with the log's tail. ``cpu_seconds()`` is the CPU the whole
    tree has used so far (the parent and its uvicorn workers), for per-phase differences."""

    def __init__(
        self,
        name: str,
        command: Callable[[int], list[str]],
        env: dict[str, str],
        *,
        workers: int,
        log_dir: Path,
        health_path: str = "/healthz",
    ) -> None:
        self.name = name
        self.workers = workers
        self._command = command
        self._env = env
        self._log_dir = log_dir
        self._health_path = health_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self.log_path: Path | None = None
        self.port = 0

    @classmethod
    def profilestore(cls, data_dir: Path, *, workers: int, database_url: str | None, log_dir: Path) -> ServedProcess:
        """``profilestore serve --data-dir DIR --port P --workers N``, the real CLI, with the
        PostgreSQL data database at ``database_url`` when given (the key store stays in the folder)."""
        cli = Path(sys.executable).parent / "profilestore"
        prefix = [str(cli)] if cli.is_file() else [sys.executable, "-m", "profilestore.cli"]
        env = {k: v for k, v in os.environ.items() if k.upper() not in _CONTROLLED_SETTINGS}
        # info, not warning: uvicorn's per-worker startup line is what readiness waits for. The
        # service logs nothing per request at info and uvicorn's access log is off in `serve`.
        env |= {"PROFILESTORE_LOG_LEVEL": "info", "PROFILESTORE_ENVIRONMENT": "development", "PYTHONUNBUFFERED": "1"}
        if database_url:
            env["PROFILESTORE_DATABASE_URL"] = database_url

        def command(port: int) -> list[str]:
            return [*prefix, "serve", "--data-dir", str(data_dir), "--port", str(port), "--workers", str(workers)]

        return cls(f"profilestore-w{workers}", command, env, workers=workers, log_dir=log_dir)

    @classmethod
    def uvicorn_app(cls, factory: str, env: dict[str, str], *, workers: int, log_dir: Path) -> ServedProcess:
        """``uvicorn FACTORY --factory`` with ``workers`` processes, httptools and uvloop (what
        ``profilestore serve`` picks when they are installed), no access log; ``env`` is added to
        this process's environment, and the checkout is importable (``bench.…``)."""
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

        def command(port: int) -> list[str]:
            return [
                *(sys.executable, "-m", "uvicorn", factory, "--factory"),
                *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
                *("--http", "httptools", "--loop", "uvloop", "--log-level", "info", "--no-access-log"),
                "--no-proxy-headers",
            ]

        return cls(f"{factory.rpartition(':')[0]}-w{workers}", command, full_env, workers=workers, log_dir=log_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._process.pid

    def start(self, timeout: float = 120.0) -> None:
        """Start the server and wait until it is ready. A port taken in the instant between
        choosing it and binding it is retried on another one."""
        for _ in range(3):
            self._launch(free_port())
            try:
                self._wait_ready(timeout)
                return
            except _PortTaken:
                self._reap()
            except BaseException:
                self.stop(report=False)  # the exception says what went wrong
                raise
        raise ServerFailed(f"{self.name}: could not bind a free port in 3 attempts")

    def _launch(self, port: int) -> None:
        self.port = port
        self.log_path = self._log_dir / f"{self.name}-{port}.log"
        self._log_file = self.log_path.open("wb")
        self._process = subprocess.Popen(
            self._command(port),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=self._env,
            cwd=ROOT,
            # Its own session: Ctrl-C in the terminal reaches the bench only, which then stops the
            # server the graceful way; and the whole tree can be found (and killed) by its group.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        healthy = False
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                assert self._process is not None
                if self._process.poll() is not None:
                    tail = self.log_tail()
                    if "address already in use" in tail.lower():
                        raise _PortTaken
                    raise ServerFailed(
                        f"{self.name} exited with code {self._process.returncode} during startup; "
                        f"its log ({self.log_path}) ends:\n{tail}"
                    )
                if not healthy:
                    with contextlib.suppress(httpx.HTTPError):
                        healthy = client.get(self._health_path).status_code == 200
                if healthy and self.started_workers() >= self.workers:
                    return
                time.sleep(0.1)
        raise ServerFailed(
            f"{self.name} was not ready within {timeout:.0f}s (health {'ok' if healthy else 'no answer'}, "
            f"{self.started_workers()} of {self.workers} workers started); its log ({self.log_path}) ends:\n"
            f"{self.log_tail()}"
        )

    def started_workers(self) -> int:
        """How many serving processes have logged the end of their startup."""
        if self.log_path is None or not self.log_path.exists():
            return 0
        return len(_STARTED.findall(self.log_path.read_bytes()))

    def log_tail(self, lines: int = 25) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the server's process tree: the parent and every uvicorn
        worker, including workers that already exited and were waited for."""
        return sum(process_tree(self.pid).values())

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: uvicorn serves from the parent itself with one
        worker; with more, from the children it spawned (not its resource tracker)."""
        if self.workers == 1:
            return [self.pid]
        workers = []
        for pid in process_tree(self.pid):
            with contextlib.suppress(OSError):
                if pid != self.pid and b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    workers.append(pid)
        return sorted(workers)

    def stop(self, timeout: float = 60.0, *, report: bool = True) -> None:
        """SIGTERM, then wait for the graceful shutdown (SIGKILL to the whole process group after
        ``timeout``, or on a second interrupt). With ``report``, warns on stderr when the server
        exited badly or its log shows tracebacks or errors."""
        if self._process is None:
            return
        try:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGTERM)
                try:
                    self._process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    print(f"  {self.name} did not stop within {timeout:.0f}s: killing it", file=sys.stderr)
                    self._kill_group()
                    self._process.wait()
        except BaseException:
            self._kill_group()
            raise
        finally:
            self._kill_group()  # a worker the parent left behind, if any
            self._close_log()
        code = self._process.returncode
        self._process = None
        if not report:
            return
        # uvicorn exits 0 after a multi-process shutdown and re-raises SIGTERM after a single one.
        if code not in (0, -signal.SIGTERM):
            print(f"  {self.name} exited with code {code}; its log ends:\n{self.log_tail()}", file=sys.stderr)
        elif self.log_path is not None and re.search(
            r"Traceback|\bERROR\b", self.log_path.read_text("utf-8", "replace")
        ):
            print(f"  {self.name} logged errors; its log ({self.log_path}) ends:\n{self.log_tail()}", file=sys.stderr)

    def _kill_group(self) -> None:
        """SIGKILL every process left in the server's process group (its own session)."""
        if self._process is not None:
            for pid in process_group(self._process.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def _reap(self) -> None:
        if self._process is not None:
            self._kill_group()
            self._process.wait()
            self._process = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> ServedProcess:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


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


def postgres_for(url: str, default_name: str, suffix: str = "") -> Postgres:
    """The PostgreSQL scratch-database helper for ``url``; a URL without a database name gets
    ``default_name``; ``suffix`` is appended to the name (a second store of the same run)."""
    parsed = make_url(url)
    parsed = parsed.set(database=(parsed.database or default_name) + suffix)
    return Postgres(parsed.render_as_string(hide_password=False))


# -- the store ---------------------------------------------------------------------------------------


@dataclass
class Store:
    """A fresh store in a temporary folder (data on SQLite there, or on PostgreSQL), its clients'
    keys, and what the bench created that must go again.

    The in-process runtime that prepared it is closed before the store is served, so that the
    served process is its only writer; ``runtime`` opens a fresh one on demand afterwards."""

    settings: Settings
    tmp: Path
    postgres: Postgres | None
    keys: dict[str, str] = field(default_factory=dict)
    _runtime: Runtime | None = None

    @property
    def backend(self) -> str:
        return "postgresql" if self.postgres else "sqlite"

    @property
    def runtime(self) -> Runtime:
        """The in-process runtime over the store, opened if closed."""
        if self._runtime is None:
            self._runtime = Runtime.from_settings(self.settings)
        return self._runtime

    def close_runtime(self) -> None:
        """Close the in-process runtime (flushing its access recorder), if open."""
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None

    @contextlib.contextmanager
    def served(self, workers: int) -> Iterator[ServedProcess]:
        """``profilestore serve --workers N`` on this store, running for the block."""
        self.close_runtime()
        server = ServedProcess.profilestore(
            self.settings.data_dir, workers=workers, database_url=self.settings.database_url, log_dir=self.tmp
        )
        with server:
            yield server

    def scratch_url(self, label: str) -> str:
        """A fresh, empty database of the same kind (migrated by the caller)."""
        if self.postgres is not None:
            return self.postgres.scratch(label)
        return f"sqlite:///{self.tmp / label / 'profilestore.db'}"


@contextlib.contextmanager
def open_store(
    database_url: str | None,
    tmp_dir: Path | None,
    default_db_name: str,
    readers: Sequence[str] = (),
    *,
    db_suffix: str = "",
) -> Iterator[Store]:
    """A migrated store, as ``profilestore serve`` makes it (SQLite data file, separate SQLite key
    store and generated master key in a temporary folder; or the data database on PostgreSQL),
    with an admin, a collector and, for each purpose in ``readers``, a reader client. Everything
    it created (runtime, temp folder, PostgreSQL databases) is closed or removed on exit."""
    with contextlib.ExitStack() as cleanup:
        tmp = Path(tempfile.mkdtemp(prefix="profilestore-bench-", dir=tmp_dir))
        cleanup.callback(shutil.rmtree, tmp, True)
        postgres = postgres_for(database_url, default_db_name, db_suffix) if database_url else None
        main_url = None
        if postgres is not None:
            cleanup.callback(postgres.drop_created)
            main_url = postgres.prepare_main()
        settings = Settings(
            environment=Environment.development,
            data_dir=tmp / "store",
            database_url=main_url,
            keystore_url=None,
            master_key=None,
            master_key_file=None,
        )
        store = Store(settings, tmp, postgres)
        cleanup.callback(store.close_runtime)
        runtime = store.runtime
        runtime.migrate()
        with runtime.db.transaction() as session:
            store.keys["admin"] = create_client(session, ClientIn(name="bench-admin", role=Role.admin)).key
            store.keys["collector"] = create_client(session, ClientIn(name="bench-collector", role=Role.collector)).key
            for purpose in readers:
                spec = ClientIn(name=f"bench-reader-{purpose}", role=Role.reader, purposes=[purpose])
                store.keys["reader"] = create_client(session, spec).key
        yield store


# -- profiling ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def py_spy(output: Path | None, pids: Sequence[int] = (), *, rate: int = 100, gil: bool = False) -> Iterator[None]:
    """Sample ``pids`` (default: this process) with py-spy while the block runs — the timed phase
    only, not the setup — and write their raw collapsed stacks, summed over the processes, to
    ``output``. Nothing happens without ``output``. Non-blocking sampling keeps the overhead low on
    a 2-core machine; ``gil`` keeps only the threads holding the GIL."""
    if output is None:
        yield
        return
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if exe is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    targets = list(pids) or [os.getpid()]
    parts = [output.with_name(f"{output.name}.{pid}.part") for pid in targets]
    spies: list[subprocess.Popen[bytes]] = []
    try:
        for pid, part in zip(targets, parts, strict=True):
            command = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
            command += ["--output", str(part), "--nonblocking", *(["--gil"] if gil else [])]
            spies.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        time.sleep(1.0)  # attach before the clock starts
        for spy in spies:
            if spy.poll() is not None:
                message = spy.stderr.read().decode()[-300:] if spy.stderr else ""
                raise RuntimeError(f"py-spy could not attach: {message}")
        yield
    finally:
        for spy in spies:
            with contextlib.suppress(ProcessLookupError):
                spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
    merge_stacks(parts, output)
    print(f"  profile (py-spy raw stacks of pid {', '.join(map(str, targets))}) written to {output}", file=sys.stderr)


def merge_stacks(parts: Sequence[Path], output: Path) -> None:
    """Sum the collapsed stacks (``frame;frame;… count`` lines) of several py-spy runs into one file."""
    counts: Counter[str] = Counter()
    for part in parts:
        if part.exists():
            for line in part.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if stack and count.isdigit():
                    counts[stack] += int(count)
            part.unlink()
    output.write_text("".join(f"{stack} {n}\n" for stack, n in sorted(counts.items())))


# -- provenance and reports --------------------------------------------------------------------------


def row_counts(connection: Connection, tables: Sequence[str]) -> dict[str, int]:
    """Rows in each of ``tables`` (names of the data database's tables)."""
    metadata_tables = Base.metadata.tables
    return {
        name: int(connection.execute(select(func.count()).select_from(metadata_tables[name])).scalar_one())
        for name in tables
    }


def machine_info(backend: str, data_dir: Path, postgres: Postgres | None) -> dict[str, Any]:
    """What the figures depend on besides the code: CPUs, platform, Python, SQLite, the data
    folder's filesystem, uvicorn's parser and loop, package versions, the checkout, PostgreSQL."""

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
        # what uvicorn's "auto" picks in the served process
        "uvicorn_http": "httptools" if find_spec("httptools") else "h11",
        "uvicorn_loop": "uvloop" if find_spec("uvloop") else "asyncio",
        "checkout": _checkout(),
        "source_digest": source_digest(),
        "packages": {
            p: version(p)
            for p in (
                "profilestore",
                "fastapi",
                "starlette",
                "pydantic",
                "sqlalchemy",
                "uvicorn",
                "httptools",
                "uvloop",
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


def source_digest() -> str:
    """A short digest of the package and migration sources benchmarked: the checkout's commit says
    ``+dirty`` when they have local changes, this says which ones."""
    digest = hashlib.sha256()
    for path in sorted([*(ROOT / "profilestore").rglob("*.py"), *(ROOT / "migrations").rglob("*.py")]):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


# -- script plumbing ---------------------------------------------------------------------------------


def quiet() -> None:
    """The embedded default generates a development master key and says so: expected here."""
    logging.getLogger("profilestore.crypto").setLevel(logging.ERROR)


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def stop_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so a killed bench unwinds and removes what it made
    (servers, client processes, temp folders, databases) as Ctrl-C does. Main thread only."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)


def load_average(note_above: float) -> list[float]:
    """The 1, 5 and 15-minute load averages; says on stderr when the machine is already busy."""
    load = [round(x, 2) for x in os.getloadavg()]
    if load[0] > note_above:
        print(f"note: the machine is busy (load average {load[0]}): figures will be low", file=sys.stderr)
    return load


def add_run_options(
    parser: argparse.ArgumentParser, *, database_help: str, max_seconds: float, max_seconds_help: str
) -> None:
    """The options every bench takes: the workload's seed, where its JSON goes, the PostgreSQL to
    run on instead of the embedded SQLite store, where its temporary folders go, and how long a
    phase may run. ``check_run_options`` checks them once parsed."""
    parser.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON result to this file")
    parser.add_argument("--database-url", help=database_help)
    parser.add_argument("--tmp-dir", type=Path, help="where the temporary data folders go (default: system temp)")
    parser.add_argument("--max-seconds", type=float, default=max_seconds, help=max_seconds_help)


def check_run_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.database_url and not args.database_url.startswith("postgresql"):
        parser.error("--database-url must be a postgresql:// URL (the default is the embedded SQLite store)")


def begin(note_above: float) -> list[float]:
    """What every bench does first: stop cleanly (removing what it made) on SIGTERM, quiet the
    libraries' loggers, and read the load average (noting a busy machine). Returns the load."""
    stop_on_sigterm()
    quiet()
    return load_average(note_above=note_above)


def parse_workers(text: str) -> list[int]:
    """``"1,2"`` → ``[1, 2]``: server process counts, in the order given, each at least 1."""
    counts: list[int] = []
    for part in text.split(","):
        if part.strip():
            count = int(part)  # ValueError: argparse reports the option as invalid
            if count < 1:
                raise ValueError("worker counts must be at least 1")
            if count not in counts:
                counts.append(count)
    if not counts:
        raise ValueError("no worker count given")
    return counts
