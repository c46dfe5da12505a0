"""Redis checkout holds against the embedded (real) Redis server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from fhirserver.scheduling.holds import RedisHolds, hold_key
from fhirserver.storage.embedded import EmbeddedServers


@pytest.fixture
async def holds(embedded: EmbeddedServers) -> AsyncIterator[RedisHolds]:
    assert embedded.redis_url
    client = aioredis.Redis.from_url(embedded.redis_url)
    yield RedisHolds(client)
    await client.aclose()


def keys() -> list[str]:
    start = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
    res = uuid.uuid4().hex
    return [hold_key(f"Practitioner/{res}", start), hold_key(f"Location/{res}", start)]


async def test_one_owner_wins_and_can_retake(holds: RedisHolds) -> None:
    ks = keys()
    results = await asyncio.gather(*(holds.acquire(ks, f"owner-{i}", 60_000) for i in range(20)))
    assert results.count(True) == 1
    winner = f"owner-{results.index(True)}"
    assert await holds.acquire(ks, winner, 60_000)  # idempotent for the holder


async def test_all_or_none_and_release(holds: RedisHolds) -> None:
    ks = keys()
    assert await holds.acquire(ks[1:], "b", 60_000)
    assert not await holds.acquire(ks, "a", 60_000)
    assert await holds.redis.get(ks[0]) is None  # a's partial take was undone
    await holds.release(ks[1:], "a")  # not a's: untouched
    assert await holds.redis.get(ks[1]) == b"b"
    await holds.release(ks[1:], "b")
    assert await holds.acquire(ks, "a", 60_000)


async def test_expiry_frees_the_key(holds: RedisHolds) -> None:
    ks = keys()
    assert await holds.acquire(ks, "a", 60_000)
    await holds.redis.pexpire(ks[0], 1)
    await holds.redis.pexpire(ks[1], 1)
    for _ in range(500):  # poll with a deadline (5 s) for Redis to expire the keys
        if not await holds.redis.exists(*ks):
            break
        await asyncio.sleep(0.01)
    assert await holds.acquire(ks, "b", 60_000)
