"""A real server with PHI encryption on its own database and keyring, and raw-look helpers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bson
import httpx
import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

from fhirserver.config import Settings
from fhirserver.phi.codec import PhiCodec
from fhirserver.storage.embedded import EmbeddedServers
from tests.api.conftest import free_port
from tests.thread_server import serve_in_thread

FHIR = {"Content-Type": "application/fhir+json"}


@dataclass
class PhiServer:
    """A started server, its settings and a codec on the same keyring (for raw checks)."""

    base_url: str
    settings: Settings
    keyring: Path

    def codec(self) -> PhiCodec:
        """A codec reading the server's keyring file (as a CLI would)."""
        return PhiCodec.from_settings(self.settings)


def phi_settings(embedded: EmbeddedServers, keyring: Path, **extra: Any) -> Settings:
    """Settings on the session's embedded servers, a fresh database and its own keyring."""
    return Settings(
        mongodb_uri=embedded.mongodb_uri,
        redis_url=embedded.redis_url,
        db_name=f"phi_{uuid.uuid4().hex[:10]}",
        port=free_port(),
        demo=False,
        phi_keyring=keyring,
        phi_keyring_check_seconds=0.2,
        **extra,
    )


@pytest.fixture(scope="module")
def phi_server(
    embedded: EmbeddedServers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PhiServer]:
    """A server with its own database and keyring for one test module."""
    keyring = tmp_path_factory.mktemp("keys") / "phi-keyring.json"
    settings = phi_settings(embedded, keyring)
    with serve_in_thread(settings):
        yield PhiServer(settings.base_url(), settings, keyring)


@pytest.fixture
async def client(phi_server: PhiServer) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the PHI server's FHIR base."""
    async with httpx.AsyncClient(base_url=phi_server.base_url, timeout=30) as c:
        yield c


async def create(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> str:
    """POST a resource; its id."""
    r = await client.post(f"/{body['resourceType']}", json=body, headers={**FHIR, **headers})
    assert r.status_code in (200, 201), r.text
    rid: str = r.json()["id"]
    return rid


async def mongo_hits(settings: Settings, needles: list[str]) -> list[str]:
    """Every (collection, _id, needle) where a needle occurs in a document's BSON bytes,
    over every collection of the server's database."""
    assert settings.mongodb_uri
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri)
    hits: list[str] = []
    try:
        db = client[settings.db_name]
        for name in await db.list_collection_names():
            async for doc in db[name].find({}):
                data = bson.encode(doc)
                low = data.lower()
                for n in needles:
                    if n.encode() in data or n.lower().encode() in low:
                        hits.append(f"{name}/{doc.get('_id')}: {n}")
    finally:
        await client.close()
    return hits


async def redis_hits(redis_url: str, needles: list[str]) -> list[str]:
    """Every Redis key whose name or value (any type, streams included) holds a needle."""
    r = aioredis.Redis.from_url(redis_url)
    hits: list[str] = []
    try:
        async for key in r.scan_iter(count=1000):
            kind = (await r.type(key)).decode()
            parts: list[bytes] = [key]
            if kind == "string":
                parts.append(await r.get(key) or b"")
            elif kind == "hash":
                for k, v in (await r.hgetall(key)).items():
                    parts += [k, v]
            elif kind == "list":
                parts += await r.lrange(key, 0, -1)
            elif kind == "set":
                parts += list(await r.smembers(key))
            elif kind == "zset":
                parts += [m for m, _ in await r.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                for _, fields in await r.xrange(key):
                    for k, v in fields.items():
                        parts += [k, v]
            blob = b"\x00".join(parts).lower()
            hits += [f"redis {key!r}: {n}" for n in needles if n.lower().encode() in blob]
    finally:
        await r.aclose()
    return hits
