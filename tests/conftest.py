"""Session fixtures: real servers, started once per test session.

The FHIR core, scheduling and storage tests exercise FHIR behaviour, so the servers they
start run with authorization off (every request a trusted system client). tests/auth and
tests/access turn it on in their settings and drive real tokens.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from fhirserver.storage.embedded import EmbeddedServers

os.environ.setdefault("FHIRSERVER_AUTH_REQUIRED", "false")


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServers]:
    """The embedded MongoDB-wire server and Redis, on a temp data dir, for the whole session."""
    servers = EmbeddedServers(Path(tmp_path_factory.mktemp("data")), cache_size="256M")
    servers.start()
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
async def mongo_client(embedded: EmbeddedServers) -> AsyncIterator[AsyncMongoClient[dict]]:  # type: ignore[type-arg]
    """An async PyMongo client connected to the embedded server."""
    assert embedded.mongodb_uri
    client: AsyncMongoClient[dict] = AsyncMongoClient(embedded.mongodb_uri, tz_aware=True)  # type: ignore[type-arg]
    yield client
    await client.close()


@pytest.fixture
async def mongo_db(mongo_client: AsyncMongoClient[dict]) -> AsyncIterator[AsyncDatabase[dict]]:  # type: ignore[type-arg]
    """A fresh, uniquely named database for one test; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield mongo_client[name]
    await mongo_client.drop_database(name)
