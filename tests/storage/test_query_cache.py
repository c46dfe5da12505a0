"""The query cache: repeated searches are answered from memory, and no answer is ever older
than a write whose response has been sent, through the same server or another one on the
same database and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn

from fhirserver.config import Settings
from fhirserver.context import generations_for
from fhirserver.storage.embedded import EmbeddedServers
from fhirserver.storage.query_cache import (
    LocalGenerations,
    QueryCache,
    RedisGenerations,
)
from tests.api.factories import patient, uid
from tests.thread_server import serve_in_thread, settings_on


@pytest.fixture(scope="module")
def two_servers(embedded: EmbeddedServers) -> Iterator[tuple[uvicorn.Server, uvicorn.Server]]:
    """Two servers on one database (a cluster of two), each with its own cache.

    Both run in threads of this process and FastAPI builds a route's state lazily on its
    first request, not thread-safely: each route is requested once, one server at a time,
    before the tests race them (two real processes share nothing of the kind)."""
    db = f"qc_{uuid.uuid4().hex[:10]}"
    first, second = settings_on(embedded, db), settings_on(embedded, db)
    with serve_in_thread(first) as a, serve_in_thread(second) as b:
        for server in (a, b):
            with httpx.Client(base_url=_base(server), timeout=30) as client:
                pid = client.post("/Patient", json=patient()).json()["id"]
                client.get("/Patient", params={"family": "warm-up"})
                client.get(f"/Patient/{pid}")
                client.put(f"/Patient/{pid}", json={**patient(), "id": pid})
                client.delete(f"/Patient/{pid}")
        yield a, b


def _base(server: uvicorn.Server) -> str:
    settings: Settings = server.config.app.state.ctx.settings
    return settings.base_url()


def _cache(server: uvicorn.Server) -> QueryCache:
    cache = server.config.app.state.ctx.store.cache
    assert isinstance(cache, QueryCache)
    return cache


async def _family_ids(client: httpx.AsyncClient, family: str, total: bool = True) -> set[str]:
    """The ids a family search returns; with `total`, its count must agree (not while
    writes race it: the page and the count are two queries, cached or not)."""
    r = await client.get("/Patient", params={"family": family, "_count": "100"})
    assert r.status_code == 200, r.text
    if total:
        assert r.json()["total"] == len(r.json().get("entry", []))
    return {e["resource"]["id"] for e in r.json().get("entry", [])}


async def test_repeated_search_is_served_from_the_cache(
    two_servers: tuple[uvicorn.Server, uvicorn.Server],
) -> None:
    a, _ = two_servers
    family = f"Cached{uid()}"
    async with httpx.AsyncClient(base_url=_base(a), timeout=30) as client:
        r = await client.post("/Patient", json=patient(family))
        first = await _family_ids(client, family)
        hits = _cache(a).hits
        again = await _family_ids(client, family)
        assert first == again == {r.json()["id"]}
        assert _cache(a).hits >= hits + 2  # the page and its total


async def test_writes_through_either_server_are_seen_at_once_by_both(
    two_servers: tuple[uvicorn.Server, uvicorn.Server],
) -> None:
    a, b = two_servers
    family = f"Both{uid()}"
    async with (
        httpx.AsyncClient(base_url=_base(a), timeout=30) as ca,
        httpx.AsyncClient(base_url=_base(b), timeout=30) as cb,
    ):
        expected: set[str] = set()
        for i in range(6):
            writer, reader = (ca, cb) if i % 2 else (cb, ca)
            assert await _family_ids(reader, family) == expected  # cached now
            created = await writer.post("/Patient", json=patient(family))
            expected.add(created.json()["id"])
            assert await _family_ids(reader, family) == expected
            assert await _family_ids(writer, family) == expected
        # updates and deletes retire answers too
        victim = sorted(expected)[0]
        body = (await ca.get(f"/Patient/{victim}")).json()
        body["name"][0]["family"] = f"Moved{uid()}"
        assert (await cb.put(f"/Patient/{victim}", json=body)).status_code == 200
        expected.discard(victim)
        assert await _family_ids(ca, family) == expected
        gone = sorted(expected)[0]
        assert (await ca.delete(f"/Patient/{gone}")).status_code in (200, 204)
        expected.discard(gone)
        assert await _family_ids(cb, family) == expected


async def test_no_search_after_an_acknowledged_write_misses_it(
    two_servers: tuple[uvicorn.Server, uvicorn.Server],
) -> None:
    """Writers on one server, readers hammering the same search on the other: every read
    that starts after a create was acknowledged includes it."""
    a, b = two_servers
    family = f"Race{uid()}"
    acknowledged: set[str] = set()
    stale: list[str] = []
    done = asyncio.Event()
    async with (
        httpx.AsyncClient(base_url=_base(a), timeout=60) as ca,
        httpx.AsyncClient(base_url=_base(b), timeout=60) as cb,
    ):

        async def writer() -> None:
            for _ in range(25):
                r = await ca.post("/Patient", json=patient(family))
                acknowledged.add(r.json()["id"])
            done.set()

        async def reader() -> None:
            while not done.is_set():
                before = set(acknowledged)
                seen = await _family_ids(cb, family, total=False)
                if not before <= seen:
                    stale.append(f"missing {sorted(before - seen)}")

        await asyncio.gather(writer(), *(reader() for _ in range(4)))
        assert stale == []
        assert await _family_ids(cb, family) == acknowledged
    assert _cache(b).hits > 0


async def test_cache_can_be_switched_off(embedded: EmbeddedServers) -> None:
    settings = settings_on(embedded, f"qc_{uuid.uuid4().hex[:10]}", query_cache_mb=0)
    with serve_in_thread(settings) as server:
        assert server.config.app.state.ctx.store.cache is None
        async with httpx.AsyncClient(base_url=settings.base_url(), timeout=30) as client:
            family = f"Off{uid()}"
            await client.post("/Patient", json=patient(family))
            assert len(await _family_ids(client, family)) == 1


async def test_reads_by_id_are_cached_and_follow_every_write(
    two_servers: tuple[uvicorn.Server, uvicorn.Server],
) -> None:
    a, b = two_servers
    async with (
        httpx.AsyncClient(base_url=_base(a), timeout=30) as ca,
        httpx.AsyncClient(base_url=_base(b), timeout=30) as cb,
    ):
        pid = (await ca.post("/Patient", json=patient(f"Read{uid()}"))).json()["id"]
        first = await cb.get(f"/Patient/{pid}")
        hits = _cache(b).hits
        again = await cb.get(f"/Patient/{pid}")
        assert _cache(b).hits == hits + 1
        assert again.content == first.content and again.headers["etag"] == 'W/"1"'
        # an update through the other server is read at once, and so is the next one
        body = {**first.json(), "gender": "other"}
        assert (await ca.put(f"/Patient/{pid}", json=body)).status_code == 200
        r = await cb.get(f"/Patient/{pid}")
        assert r.headers["etag"] == 'W/"2"' and r.json()["gender"] == "other"
        patched = await cb.patch(
            f"/Patient/{pid}",
            json=[{"op": "replace", "path": "/gender", "value": "female"}],
            headers={"Content-Type": "application/json-patch+json"},
        )
        assert patched.status_code == 200
        r = await ca.get(f"/Patient/{pid}")
        assert r.headers["etag"] == 'W/"3"' and r.json()["gender"] == "female"
        # a deletion: 410 from both, though both had the resource cached
        assert (await ca.delete(f"/Patient/{pid}")).status_code in (200, 204)
        assert (await cb.get(f"/Patient/{pid}")).status_code == 410
        assert (await ca.get(f"/Patient/{pid}")).status_code == 410
        # an unknown id answered 404 is not remembered past its creation (update-as-create)
        new = f"qc-{uid()}"
        assert (await cb.get(f"/Patient/{new}")).status_code == 404
        created = await ca.put(f"/Patient/{new}", json={**patient(), "id": new})
        assert created.status_code == 201
        assert (await cb.get(f"/Patient/{new}")).status_code == 200


async def test_no_read_after_an_acknowledged_update_sees_an_older_version(
    two_servers: tuple[uvicorn.Server, uvicorn.Server],
) -> None:
    """One writer updating a Patient through one server, readers on the other: a read that
    starts after version n was acknowledged never answers an older version."""
    a, b = two_servers
    acknowledged = 1
    stale: list[str] = []
    done = asyncio.Event()
    async with (
        httpx.AsyncClient(base_url=_base(a), timeout=60) as ca,
        httpx.AsyncClient(base_url=_base(b), timeout=60) as cb,
    ):
        pid = (await ca.post("/Patient", json=patient(f"Ver{uid()}"))).json()["id"]

        async def writer() -> None:
            nonlocal acknowledged
            for i in range(20):
                body = {**patient(), "id": pid, "birthDate": f"19{50 + i}-01-01"}
                r = await ca.put(f"/Patient/{pid}", json=body)
                acknowledged = int(r.json()["meta"]["versionId"])
            done.set()

        async def reader() -> None:
            while not done.is_set():
                before = acknowledged
                r = await cb.get(f"/Patient/{pid}")
                seen = int(r.json()["meta"]["versionId"])
                if seen < before:
                    stale.append(f"read version {seen} after {before} was acknowledged")

        await asyncio.gather(writer(), *(reader() for _ in range(4)))
        assert stale == []
        assert acknowledged == 21
    assert _cache(b).hits > 0


async def test_local_generations_retire_answers_computed_before_a_bump() -> None:
    """The embedded store's in-process counters: an answer is never served under a
    generation its query did not start in."""
    cache = QueryCache(LocalGenerations(), max_bytes=1 << 20, ttl_seconds=60)
    calls = 0

    async def compute() -> int:
        nonlocal calls
        calls += 1
        return calls

    async def compute_racing_a_write() -> int:
        # a write commits (and bumps) while this query runs: its answer may be stale
        await cache.generations.bump(["Patient"])
        return await compute()

    spec = {"_id": "1"}
    assert await cache.cached("Patient", "read", spec, compute, lambda _: 8) == 1
    assert await cache.cached("Patient", "read", spec, compute, lambda _: 8) == 1  # a hit
    assert await cache.cached("Slot", "read", spec, compute, lambda _: 8) == 2  # per type
    await cache.generations.bump(["Patient"])
    assert await cache.cached("Patient", "read", spec, compute_racing_a_write, lambda _: 8) == 3
    # stored under the generation before the racing write's bump: not used again
    assert await cache.cached("Patient", "read", spec, compute, lambda _: 8) == 4
    assert await cache.cached("Patient", "read", spec, compute, lambda _: 8) == 4
    assert await cache.cached("Slot", "read", spec, compute, lambda _: 8) == 2


async def test_counters_are_local_only_for_the_embedded_store(
    embedded: EmbeddedServers,
) -> None:
    redis = aioredis.Redis.from_url(embedded.redis_url)
    try:
        embedded_default = Settings(mongodb_uri=None, redis_url=embedded.redis_url)
        assert isinstance(generations_for(embedded_default, redis), LocalGenerations)
        cluster = settings_on(embedded, "qc_cluster")
        shared = generations_for(cluster, redis)
        assert isinstance(shared, RedisGenerations)
        before = await shared.current("Patient")
        await shared.bump(["Patient"])
        assert await shared.current("Patient") == (before or 0) + 1
    finally:
        await redis.aclose()
