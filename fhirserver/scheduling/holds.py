"""Redis checkout holds (SET NX PX): a fast first answer to "is someone checking out this
time?". Never the guard: the claims index decides; a Redis hold only spares the database a
doomed transaction and lets a holder's retry see its own hold.
"""

from __future__ import annotations

from datetime import datetime

import redis.asyncio as aioredis

_PREFIX = "hold:"
# Delete a key only while it still belongs to the caller (atomic compare-and-delete).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def hold_key(resource: str, start: datetime) -> str:
    """The Redis key of a hold on one resource at one start time."""
    return f"{_PREFIX}{resource}@{start.isoformat()}"


class RedisHolds:
    """Short-lived checkout holds keyed by resource and start time."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def acquire(self, keys: list[str], owner: str, ttl_ms: int) -> bool:
        """Take every key for `owner` (all or none); True on success or if already ours."""
        taken: list[str] = []
        for key in keys:
            ok = await self.redis.set(key, owner, nx=True, px=ttl_ms)
            if not ok:
                if _text(await self.redis.get(key)) != owner:
                    await self.release(taken, owner)
                    return False
            taken.append(key)
        return True

    async def release(self, keys: list[str], owner: str) -> None:
        """Drop the keys that `owner` still holds."""
        for key in keys:
            await self.redis.eval(_RELEASE, 1, key, owner)
