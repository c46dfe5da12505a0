"""A result cache for store queries outside transactions, fresh by construction.

SecantusDB decodes every document a query matches before it sorts and limits, so a
100-entry page over 2,000 Slots costs the store ~150 ms however often it is asked. Clients
ask the same searches again and again (a schedule's slots, a practitioner's day), so the
answers are kept in process memory, keyed by the collection and the exact query (filter,
sort, limit, projection; the access policy's filter is part of it).

Reads by id go through it too (kind "read"): a Patient read is then one dictionary lookup
instead of a store round trip.

Freshness: every resource type has a generation counter. A write bumps its type's counter
after its transaction commits and before its response is sent (FhirService write hook +
`Mongo.deliver_after_commit`). A cached answer is used only while the counter still has
the value read *before* the query ran, so an answer computed from a snapshot older than a
commit was stored under a generation that the commit's bump has already retired by the
time the writer's client hears back. Where the counters live:

- `RedisGenerations` (a configured MongoDB): every process of a cluster reads the same
  counters, so a write through one is never hidden by another's cache. Each lookup is a
  Redis round trip.
- `LocalGenerations` (the embedded store): only this process runs a FhirService on the
  data dir (a second server fails fast, embedded.py), so the counters live in its memory
  and a cache hit costs no round trip at all.

Writes that bypass FhirService (the audit trail, `fhirserver keys rotate`, manual edits)
are covered by not caching AuditEvent and by a short time-to-live on every entry.
Transactions never read through the cache (they must see their own snapshot).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import bson
import redis.asyncio as aioredis
from pymongo.asynchronous.client_session import AsyncClientSession

from fhirserver.storage.mongo import Mongo

log = logging.getLogger(__name__)
Doc = dict[str, Any]

#: Types whose queries are never cached: written outside FhirService.
UNCACHED = frozenset({"AuditEvent"})
_DOC_OVERHEAD = 200  # bytes counted per cached document beside its raw JSON


@dataclass
class _Entry:
    generation: int
    expires: float
    value: Any
    size: int


class Generations(Protocol):
    """Where the per-type generation counters live."""

    async def current(self, resource_type: str) -> int | None:
        """The type's generation; None when it cannot be told (then nothing is cached)."""

    async def bump(self, resource_types: Sequence[str]) -> None:
        """Retire every cached answer over these types."""


class RedisGenerations:
    """Counters in Redis, shared by every process of a cluster."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _key(self, resource_type: str) -> str:
        return f"{self.prefix}:gen:{resource_type}"

    async def current(self, resource_type: str) -> int | None:
        """The type's generation in Redis; None while Redis cannot be reached."""
        try:
            value = await self.redis.get(self._key(resource_type))
        except Exception:  # Redis down: answer from the store, uncached
            log.warning("query cache: cannot read a generation; not caching")
            return None
        return int(value) if value is not None else 0

    async def bump(self, resource_types: Sequence[str]) -> None:
        """Increment the types' counters in one pipeline."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            for rtype in resource_types:
                pipe.incr(self._key(rtype))
            await pipe.execute()
        except Exception:
            # The write has committed and must be answered. Other processes cannot read a
            # generation either while Redis is down (they then do not cache); entries they
            # kept from before expire with their time-to-live.
            log.error("query cache: cannot bump generations of %s", list(resource_types))


class LocalGenerations:
    """Counters in this process's memory: for a store only this process writes."""

    def __init__(self) -> None:
        self._counters: dict[str, int] = {}

    async def current(self, resource_type: str) -> int:
        """The type's generation."""
        return self._counters.get(resource_type, 0)

    async def bump(self, resource_types: Sequence[str]) -> None:
        """Increment the types' counters."""
        for rtype in resource_types:
            self._counters[rtype] = self._counters.get(rtype, 0) + 1


class QueryCache:
    """Cached answers of `find`/`count`/`read` per resource type, invalidated by
    generation."""

    def __init__(
        self, generations: Generations, *, max_bytes: int, ttl_seconds: float
    ) -> None:
        self.generations = generations
        self.max_bytes = max_bytes
        self.ttl = ttl_seconds
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(resource_type: str, kind: str, spec: Mapping[str, Any]) -> bytes:
        """The cache key of one query."""
        return resource_type.encode() + b"\x00" + kind.encode() + bson.encode(dict(spec))

    async def cached(
        self,
        resource_type: str,
        kind: str,
        spec: Mapping[str, Any],
        compute: Callable[[], Awaitable[Any]],
        size_of: Callable[[Any], int],
    ) -> Any:
        """The answer to one query (`kind` and `spec`: see `key`), computed (and kept) when
        absent or stale."""
        if resource_type in UNCACHED:
            return await compute()
        generation = await self.generations.current(resource_type)
        if generation is None:
            return await compute()
        key = self.key(resource_type, kind, spec)
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None and entry.generation == generation and entry.expires > now:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry.value
        self.misses += 1
        value = await compute()
        size = size_of(value) + len(key)
        if size <= self.max_bytes // 8:  # one answer never takes over the cache
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            self._entries[key] = _Entry(generation, now + self.ttl, value, size)
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                self._bytes -= self._entries.popitem(last=False)[1].size
        return value

    async def _bump_written(self, resource_types: list[str]) -> None:
        await self.generations.bump(sorted(set(resource_types)))

    def write_hook(self, mongo: Mongo) -> Callable[..., Awaitable[None]]:
        """A FhirService write hook: bump the written types once the transaction commits."""

        async def on_write(
            resource_type: str,
            old: Mapping[str, Any] | None,
            new: Mapping[str, Any] | None,
            session: AsyncClientSession,
        ) -> None:
            mongo.deliver_after_commit(session, self, resource_type, self._bump_written)

        return on_write


def raw_size(raw: bytes | None) -> int:
    """The bytes one stored document with this raw JSON is counted as."""
    return len(raw or b"") + _DOC_OVERHEAD


def docs_size(docs: list[Doc]) -> int:
    """The bytes a list of stored documents is counted as."""
    return sum(raw_size(d.get("raw")) for d in docs)
