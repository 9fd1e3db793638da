"""`profilestore serve --workers 2`: several processes behind one port keep no state another needs.
A withdrawal posted through one shows on the very next read, whichever process serves it; a clean
shutdown writes every process's buffered access-log entries."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import text

from profilestore.config import Settings
from profilestore.runtime import Runtime
from tests.conftest import NOTICE, NOTICE_PURPOSES, Keys, consent_body
from tests.events.support import event, iso

WORKERS = 2
READS = 24


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Served:
    url: str
    process: subprocess.Popen[str]

    def stop(self) -> None:
        """A clean shutdown, as an orchestrator does it: SIGTERM, then wait."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


@pytest.fixture
def served(settings: Settings, runtime: Runtime, keys: Keys) -> Iterator[Served]:
    """The test store served by the real CLI with two worker processes."""
    assert settings.master_key is not None
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROFILESTORE_")}
    env |= {
        "PROFILESTORE_DATA_DIR": str(settings.data_dir),
        "PROFILESTORE_DATABASE_URL": settings.resolved_database_url,
        "PROFILESTORE_KEYSTORE_URL": settings.resolved_keystore_url,
        "PROFILESTORE_MASTER_KEY": settings.master_key.get_secret_value(),
        "PROFILESTORE_LOG_LEVEL": "warning",
        "PROFILESTORE_VIEWS__AUDIT_FLUSH_SECONDS": "60",  # only the shutdown may write the log
    }
    command = [sys.executable, "-m", "profilestore.cli", "serve", "--workers", str(WORKERS), "--port", str(port)]
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {server.stderr.read() if server.stderr else ''}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            raise RuntimeError("the server did not answer /healthz within 60 s")
        time.sleep(0.1)
    running = Served(url, server)
    try:
        yield running
    finally:
        running.stop()


def _views(url: str, keys: Keys, subject_id: str) -> list[bool]:
    """READS views, each on a new connection, so that the workers share them."""
    found = []
    for _ in range(READS):
        with httpx.Client(base_url=url, headers=keys.header("reader"), timeout=10) as client:
            answer = client.get(f"/v1/subjects/{subject_id}/view", params={"purpose": "personalize.content"})
            assert answer.status_code == 200, answer.text
            found.append(answer.json()["personalised"])
    return found


def test_a_withdrawal_shows_on_the_next_read_of_every_worker_and_shutdown_keeps_the_log(
    served: Served, keys: Keys, runtime: Runtime
) -> None:
    ada = {"email": "ada@example.com"}
    with httpx.Client(base_url=served.url, timeout=10) as client:
        notice = {**NOTICE, "text": "We personalise what you see.", "purposes": NOTICE_PURPOSES}
        assert client.post("/v1/notices", headers=keys.header("admin"), json=notice).status_code == 201
        now = datetime.now(UTC)
        granted = consent_body(identifiers=ada, purposes={"personalize": "granted"}, collected_at=iso(now))
        answer = client.post("/v1/consents", headers=keys.header("collector"), json=granted)
        assert answer.status_code == 201, answer.text
        subject_id = answer.json()["subject_id"]
        posted = client.post("/v1/events", headers=keys.header("collector"), json={"events": [event(ada, "m-1")]})
        assert posted.json()["accepted"] == 1

        assert _views(served.url, keys, subject_id) == [True] * READS

        later = iso(datetime.now(UTC))
        withdrawn = consent_body(identifiers=ada, purposes={"personalize": "withdrawn"}, collected_at=later)
        assert client.post("/v1/consents", headers=keys.header("collector"), json=withdrawn).status_code == 201

    assert _views(served.url, keys, subject_id) == [False] * READS

    assert _view_reads_logged(runtime) == 0  # still buffered in the workers
    served.stop()
    assert _view_reads_logged(runtime) == 2 * READS


def _view_reads_logged(runtime: Runtime) -> int:
    with runtime.db.engine.connect() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM access_log WHERE action = 'view.read'")).scalar_one())
