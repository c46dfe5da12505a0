"""Serve the app over real HTTP from a thread of the test process (shared by fixtures)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from fhirserver.app import server_config
from fhirserver.config import Settings
from fhirserver.scheduling.clock import Clock


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
