"""A real uvicorn server on a free port, backed by the session's embedded servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from fhirserver.config import Settings
from fhirserver.scheduling.clock import SettableClock
from fhirserver.storage.embedded import EmbeddedServers
from tests.thread_server import free_port, serve_in_thread


@dataclass
class RunningServer:
    """A started server and its base URL."""

    base_url: str
    settings: Settings
    clock: SettableClock
    app: Any = None  # the FastAPI app (its state.ctx), for tests that look inside


@pytest.fixture(scope="session")
def server(embedded: EmbeddedServers) -> Iterator[RunningServer]:
    """Serve the app over real HTTP for the whole session (no demo data)."""
    port = free_port()
    settings = Settings(
        mongodb_uri=embedded.mongodb_uri,
        redis_url=embedded.redis_url,
        db_name="api_tests",
        port=port,
        demo=False,
        max_body_bytes=256 * 1024,
    )
    clock = SettableClock()
    with serve_in_thread(settings, clock) as srv:
        yield RunningServer(settings.base_url(), settings, clock, srv.config.app)


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client with the FHIR base as base_url."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        yield c
