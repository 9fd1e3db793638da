"""A live server for real clients: uvicorn on a free localhost port, in a background thread, over
the test's migrated runtime."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from profilestore.app import create_app
from profilestore.runtime import Runtime


@pytest.fixture
def live_url(runtime: Runtime) -> Iterator[str]:
    """Base URL of the app served by uvicorn on 127.0.0.1 (port chosen by the OS)."""
    config = uvicorn.Config(create_app(runtime=runtime), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="profilestore-live", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the live server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive(), "the live server did not stop"
