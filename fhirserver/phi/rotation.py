"""Re-sealing stored PHI under one key: `fhirserver keys rotate`, legacy plaintext, retire.

Every record sealed by `ResourceStore`/`IdempotencyStore`/`AuditLog` names its kid in `k`;
a record without `k` is plaintext written before encryption. `reseal_all` walks the current
documents of the sealed types (the PHI types and the audit trail, whose hash chain covers
the plaintext and so survives), their history entries and the idempotency records whose `k`
is not the target kid, in `_id` order and small batches, and swaps each one's blob with
a compare-and-set (`_id`, `v`, old `k`), so a concurrent write simply wins and the record
is looked at again by the next pass. Legacy current documents also get their search index
rebuilt as blind-index tokens. Passes repeat until one finds nothing to do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from fhirserver.phi.cipher import (
    PHI_TYPES,
    SEALED_TYPES,
    record_context,
    signing_key_context,
    user_name_context,
)
from fhirserver.phi.codec import Indexer, PhiCodec

log = logging.getLogger(__name__)
Doc = dict[str, Any]

HISTORY = "history"
IDEMPOTENCY = "idempotency"
USERS = "auth_users"
SIGNING_KEYS = "auth_keys"
META = "_meta"
META_ID = "phi"
_RETRIES = 5
# Users with a display name (an empty name has nothing to seal).
_USER_NAMES: Doc = {"name": {"$nin": [None, ""]}}


@dataclass
class ResealStats:
    """What one `reseal_all` did."""

    kid: str
    resealed: dict[str, int] = field(default_factory=dict)
    reindexed: int = 0
    skipped: int = 0
    passes: int = 0

    @property
    def total(self) -> int:
        """Records re-sealed, all collections."""
        return sum(self.resealed.values())


async def _cas(
    coll: AsyncCollection[Doc], filt: Doc, update: Doc, unset: Doc | None = None
) -> bool:
    """One compare-and-set update, retried on write conflicts; True when it applied."""
    change: Doc = {"$set": update, **({"$unset": unset} if unset else {})}
    for attempt in range(_RETRIES):
        try:
            res = await coll.update_one(filt, change)
            return res.modified_count == 1
        except OperationFailure as exc:
            if exc.code != 112 or attempt == _RETRIES - 1:  # 112: WriteConflict
                raise
            await asyncio.sleep(0.01 * (attempt + 1))
    return False


class _Pass:
    """One walk over every collection, re-sealing what is not under `kid`."""

    def __init__(
        self, db: AsyncDatabase[Doc], codec: PhiCodec, indexer: Indexer, kid: str, batch: int,
        stats: ResealStats,
    ) -> None:
        self.db, self.codec, self.indexer, self.kid = db, codec, indexer, kid
        self.batch, self.stats = batch, stats
        self.done = 0

    async def _walk(
        self, coll: AsyncCollection[Doc], query: Doc, fn: Callable[[Doc], Awaitable[bool]]
    ) -> None:
        last: Any = None
        while True:
            q = query if last is None else {"$and": [query, {"_id": {"$gt": last}}]}
            docs = [d async for d in coll.find(q).sort("_id", 1).limit(self.batch)]
            if not docs:
                return
            for d in docs:
                if await fn(d):
                    self.stats.resealed[coll.name] = self.stats.resealed.get(coll.name, 0) + 1
                    self.done += 1
                else:
                    self.stats.skipped += 1
            last = docs[-1]["_id"]
            await asyncio.sleep(0)  # let the server's requests run between batches

    async def current(self, rtype: str) -> None:
        async def one(d: Doc) -> bool:
            rid, v = d["_id"], int(d["v"])
            raw = self.codec.open_raw(rtype, rid, v, d["raw"])
            sealed, _ = self.codec.cipher.seal(record_context(rtype, rid, v), raw, self.kid)
            update: Doc = {"raw": sealed, "k": self.kid}
            if "k" not in d:  # plaintext from before encryption: its idx is plaintext too
                idx, srt = self.indexer(orjson.loads(raw))
                update["idx"], update["srt"] = idx, srt
                self.stats.reindexed += 1
            return await _cas(self.db[rtype], {"_id": rid, "v": v, "k": d.get("k")}, update)

        await self._walk(self.db[rtype], {"k": {"$ne": self.kid}, "raw": {"$exists": True}}, one)

    async def history(self) -> None:
        async def one(d: Doc) -> bool:
            ctx = record_context(d["t"], d["rid"], int(d["v"]))
            raw = self.codec.cipher.open(ctx, d["raw"])
            sealed, _ = self.codec.cipher.seal(ctx, raw, self.kid)
            return await _cas(
                self.db[HISTORY], {"_id": d["_id"], "k": d.get("k")}, {"raw": sealed, "k": self.kid}
            )

        query = {"t": {"$in": sorted(PHI_TYPES)}, "k": {"$ne": self.kid}, "raw": {"$exists": True}}
        await self._walk(self.db[HISTORY], query, one)

    async def idempotency(self) -> None:
        async def one(d: Doc) -> bool:
            ctx = f"{IDEMPOTENCY}/{d['_id']}"
            body = self.codec.cipher.open(ctx, d["body"])
            sealed, _ = self.codec.cipher.seal(ctx, body, self.kid)
            return await _cas(
                self.db[IDEMPOTENCY], {"_id": d["_id"], "k": d.get("k")},
                {"body": sealed, "k": self.kid},
            )

        query = {"k": {"$ne": self.kid}, "body": {"$exists": True}}
        await self._walk(self.db[IDEMPOTENCY], query, one)

    async def users(self) -> None:
        async def one(d: Doc) -> bool:
            ctx = user_name_context(d["_id"])
            name = d["name"]
            plain = name.encode() if isinstance(name, str) else self.codec.cipher.open(ctx, name)
            sealed, _ = self.codec.cipher.seal(ctx, plain, self.kid)
            return await _cas(
                self.db[USERS], {"_id": d["_id"], "k": d.get("k")}, {"name": sealed, "k": self.kid}
            )

        await self._walk(self.db[USERS], _USER_NAMES | {"k": {"$ne": self.kid}}, one)

    async def signing_keys(self) -> None:
        async def one(d: Doc) -> bool:
            ctx = signing_key_context(d["_id"])
            if "private" in d:
                plain = self.codec.cipher.open(ctx, d["private"])
            else:  # a key written before sealing: its private JWK is in `jwk`
                plain = orjson.dumps(d["jwk"])
            sealed, _ = self.codec.cipher.seal(ctx, plain, self.kid)
            return await _cas(
                self.db[SIGNING_KEYS], {"_id": d["_id"], "k": d.get("k")},
                {"private": sealed, "k": self.kid}, unset={"jwk": ""},
            )

        await self._walk(self.db[SIGNING_KEYS], {"k": {"$ne": self.kid}}, one)


async def reseal_all(
    db: AsyncDatabase[Doc],
    codec: PhiCodec,
    indexer: Indexer,
    *,
    kid: str | None = None,
    batch: int = 200,
    max_passes: int = 20,
    progress: Callable[[str], None] | None = None,
) -> ResealStats:
    """Re-seal every stored PHI record under `kid` (default: the active key); passes repeat
    until one finds nothing left, then `_meta/phi` records the kid everything is under."""
    kid = kid or codec.cipher.active_kid
    stats = ResealStats(kid)
    for _ in range(max_passes):
        stats.passes += 1
        one = _Pass(db, codec, indexer, kid, batch, stats)
        for rtype in sorted(SEALED_TYPES):
            await one.current(rtype)
        await one.history()
        await one.idempotency()
        await one.users()
        await one.signing_keys()
        if progress:
            progress(f"pass {stats.passes}: {one.done} records re-sealed under {kid}")
        if one.done == 0 and await record_if_sealed_under(db, kid):
            return stats
    raise RuntimeError(f"records kept changing under other keys after {max_passes} passes")


async def record_if_sealed_under(db: AsyncDatabase[Doc], kid: str) -> bool:
    """When a count finds every PHI record sealed under `kid`, record it (`sealed_under`),
    so that `serve` does not pass over them all again on start; False when some are not."""
    if await _remaining(db, kid):
        return False
    await db[META].update_one({"_id": META_ID}, {"$set": {"sealed_under": kid}}, upsert=True)
    return True


async def _remaining(db: AsyncDatabase[Doc], kid: str) -> int:
    used = await keys_in_use(db)
    return sum(n for k, n in used.items() if k != kid)


async def keys_in_use(db: AsyncDatabase[Doc]) -> dict[str, int]:
    """How many stored PHI records each kid seals ("plaintext" for legacy records)."""
    counts: dict[str, int] = {}

    async def tally(coll: str, query: Doc) -> None:
        async for d in db[coll].find(query, {"k": 1}):
            key = str(d.get("k") or "plaintext")
            counts[key] = counts.get(key, 0) + 1

    for rtype in sorted(SEALED_TYPES):
        await tally(rtype, {"raw": {"$exists": True}})
    await tally(HISTORY, {"t": {"$in": sorted(PHI_TYPES)}, "raw": {"$exists": True}})
    await tally(IDEMPOTENCY, {"body": {"$exists": True}})
    await tally(USERS, _USER_NAMES)
    await tally(SIGNING_KEYS, {})
    return counts


async def sealed_under(db: AsyncDatabase[Doc]) -> str | None:
    """The kid the last complete re-seal left every record under, if any."""
    doc: Mapping[str, Any] | None = await db[META].find_one({"_id": META_ID})
    return None if doc is None else doc.get("sealed_under")
