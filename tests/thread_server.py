"""Serve the app over real HTTP from a thread of the test process (shared by fixtures)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from fhirserver.app import server_config
from fhirserver.config import Settings
from fhirserver.scheduling.clock import Clock
from fhirserver.storage.embedded import EmbeddedServers


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def settings_on(embedded: EmbeddedServers, db_name: str, **extra: Any) -> Settings:
    """A server's settings on the session's embedded store and Redis: its own database, a
    free port, no demo data, authorization off (unless `extra` says otherwise)."""
    return Settings(
        mongodb_uri=embedded.mongodb_uri,
        redis_url=embedded.redis_url,
        db_name=db_name,
        port=free_port(),
        demo=False,
        **{"auth_required": False, **extra},
    )


@contextmanager
def serve_in_thread(settings: Settings, clock: Clock | None = None) -> Iterator[uvicorn.Server]:
    """Start uvicorn with `fhirserver serve`'s configuration; stop it on exit."""
    server = uvicorn.Server(server_config(settings, clock))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # poll with a deadline
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=30)
