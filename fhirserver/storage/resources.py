"""Versioned resource storage: current collection per type, one history collection.

Each current resource is one document (see docs/search-index.md): the served JSON
bytes, the version, lastUpdated and the extracted search values. Every write runs
inside a MongoDB transaction given by the caller's session, so a FHIR transaction
Bundle, a booking and its claims, and the outbox event commit together or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from pymongo import DESCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from fhirserver.fhir.errors import Conflict, Gone, NotFound, PreconditionFailed
from fhirserver.phi.cipher import PHI_TYPES, SEALED_TYPES
from fhirserver.storage.plan import Split, split
from fhirserver.storage.query_cache import QueryCache, docs_size, raw_size

if TYPE_CHECKING:  # the codec is handed in (its blind index knows fhir/ search params)
    from fhirserver.phi.codec import PhiCodec

Doc = dict[str, Any]
Indexer = Callable[[Mapping[str, Any]], tuple[dict[str, list[Any]], dict[str, str]]]

HISTORY = "history"
CONDITIONAL_KEYS = "conditional_keys"


@dataclass(frozen=True)
class Stored:
    """One stored version of a resource, as served."""

    resource_type: str
    id: str
    version: int
    last_updated: datetime
    raw: bytes | None  # None for a deletion tombstone
    method: str = "PUT"

    @property
    def deleted(self) -> bool:
        """True when this version is a deletion tombstone."""
        return self.raw is None

    def etag(self) -> str:
        """The weak ETag of this version."""
        return f'W/"{self.version}"'


def new_id() -> str:
    """A fresh server-assigned logical id."""
    return str(uuid.uuid4())


def format_instant(ts: datetime) -> str:
    """FHIR instant with millisecond precision in UTC (`2026-11-23T14:15:46.123Z`)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def now_utc() -> datetime:
    """Now, truncated to milliseconds (what BSON dates hold)."""
    ts = datetime.now(UTC)
    return ts.replace(microsecond=(ts.microsecond // 1000) * 1000)


def _with_meta(resource: Mapping[str, Any], rid: str, version: int, lu: datetime) -> Doc:
    body = dict(resource)
    meta = dict(body.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = format_instant(lu)
    # resourceType, id, meta first: what clients expect to see at the top.
    ordered: Doc = {"resourceType": body.pop("resourceType"), "id": rid, "meta": meta}
    body.pop("id", None)
    body.pop("meta", None)
    ordered.update(body)
    return ordered


def _stored_size(stored: Stored | None) -> int:
    return raw_size(stored.raw if stored is not None else None)


class ResourceStore:
    """All database access for FHIR resources (current versions, history, conditional keys).

    With a PhiCodec, the `raw` of PHI-bearing types is sealed on write (the same sealed
    blob goes to the current document and to history, with its kid in `k`) and opened on
    read, and the indexer stores blind-index tokens for PHI search values (docs/phi.md).
    Documents returned by `find`/`read_doc` carry the opened JSON in `raw`.
    """

    def __init__(
        self, db: AsyncDatabase[Doc], indexer: Indexer, phi: PhiCodec | None = None
    ) -> None:
        self.db = db
        self.phi = phi
        self.indexer = phi.indexer(indexer) if phi is not None else indexer
        self.blind = phi.blind if phi is not None else None
        # Answers of find/count/ids outside transactions (storage/query_cache.py).
        self.cache: QueryCache | None = None
        # Inserts held back per session until `flush_inserts` (see `defer_inserts`).
        self._deferred: dict[int, dict[str, list[Doc]]] = {}

    def _raw(self, resource_type: str, rid: str, doc: Mapping[str, Any]) -> bytes | None:
        raw: bytes | None = doc.get("raw")
        if raw is not None and self.phi is not None and raw[:1] == b"\x00":
            return self.phi.open_raw(resource_type, rid, int(doc["v"]), raw)
        return raw

    def _stored(self, resource_type: str, doc: Mapping[str, Any]) -> Stored:
        rid = doc.get("rid", doc["_id"])
        return Stored(
            resource_type=resource_type,
            id=rid,
            version=int(doc["v"]),
            last_updated=doc["lu"],
            raw=self._raw(resource_type, rid, doc),
            method=doc.get("m", "PUT"),
        )

    def _open_docs(self, resource_type: str, docs: list[Doc]) -> list[Doc]:
        if self.phi is not None and resource_type in SEALED_TYPES:
            for d in docs:
                if "raw" in d:
                    d["raw"] = self._raw(resource_type, d["_id"], d)
        return docs

    # ---- reads -------------------------------------------------------------

    async def read(
        self,
        resource_type: str,
        rid: str,
        session: AsyncClientSession | None = None,
        *,
        fresh: bool = False,
    ) -> Stored:
        """The current version; NotFound if never existed, Gone if deleted (`fresh`: see
        `_cached`)."""

        async def run() -> Stored | None:
            doc = await self.db[resource_type].find_one(
                {"_id": rid}, {"raw": 1, "v": 1, "lu": 1}, session=session
            )
            return None if doc is None else self._stored(resource_type, doc)

        found: Stored | None = await self._cached(
            resource_type, "read", {"_id": rid}, run, _stored_size, session, fresh
        )
        if found is not None:
            return found
        last = await self.last_version(resource_type, rid, session)
        if last is not None and last.deleted:
            raise Gone(f"{resource_type}/{rid} was deleted")
        raise NotFound(f"{resource_type}/{rid} is not known")

    async def read_doc(
        self, resource_type: str, rid: str, session: AsyncClientSession | None = None
    ) -> Doc | None:
        """The full stored document (with idx and the opened raw), or None."""
        doc = await self.db[resource_type].find_one({"_id": rid}, session=session)
        return None if doc is None else self._open_docs(resource_type, [doc])[0]

    async def last_version(
        self, resource_type: str, rid: str, session: AsyncClientSession | None = None
    ) -> Stored | None:
        """The newest history entry (possibly a tombstone), or None."""
        doc = await self.db[HISTORY].find_one(
            {"t": resource_type, "rid": rid}, sort=[("v", DESCENDING)], session=session
        )
        return self._stored(resource_type, doc) if doc else None

    async def vread(self, resource_type: str, rid: str, version: int) -> Stored:
        """One version from history; Gone for a deletion tombstone."""
        doc = await self.db[HISTORY].find_one({"_id": f"{resource_type}/{rid}/{version}"})
        if doc is None:
            if await self.last_version(resource_type, rid) is None:
                raise NotFound(f"{resource_type}/{rid} is not known")
            raise NotFound(f"{resource_type}/{rid} has no version {version}")
        stored = self._stored(resource_type, doc)
        if stored.deleted:
            raise Gone(f"{resource_type}/{rid} version {version} is a deletion")
        return stored

    async def history(
        self,
        resource_type: str | None,
        rid: str | None,
        *,
        since: datetime | None,
        at: datetime | None,
        limit: int,
        before: tuple[datetime, str] | None = None,
    ) -> list[Stored]:
        """History entries newest first; `before` is the (lu, _id) keyset cursor."""
        query: Doc = {}
        if resource_type:
            query["t"] = resource_type
        if rid:
            query["rid"] = rid
        lu_cond: Doc = {}
        if since:
            lu_cond["$gte"] = since
        if at:
            lu_cond["$lte"] = at
        if lu_cond:
            query["lu"] = lu_cond
        if before:
            query = {
                "$and": [
                    query,
                    {
                        "$or": [
                            {"lu": {"$lt": before[0]}},
                            {"lu": before[0], "_id": {"$lt": before[1]}},
                        ]
                    },
                ]
            }
        cursor = (
            self.db[HISTORY]
            .find(query)
            .sort([("lu", DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
        )
        return [self._stored(d["t"], d) async for d in cursor]

    async def find(
        self,
        resource_type: str,
        query: Mapping[str, Any],
        *,
        sort: list[tuple[str, int]] | None = None,
        limit: int = 0,
        projection: Mapping[str, Any] | None = None,
        session: AsyncClientSession | None = None,
        fresh: bool = False,
    ) -> list[Doc]:
        """Documents of one type matching a filter (projection defaults to raw+keys); see
        `_cached` for `fresh`."""
        proj = projection if projection is not None else {"raw": 1, "v": 1, "lu": 1, "srt": 1}
        if proj.get("raw") and "v" not in proj and resource_type in SEALED_TYPES:
            proj = {**proj, "v": 1}  # the version is part of a sealed record's context

        planned = split(query)

        async def run() -> list[Doc]:
            found = await self._select(resource_type, planned, proj, sort, limit, session)
            return self._open_docs(resource_type, found)

        spec = {"q": planned.whole(), "s": sort or [], "l": limit, "p": proj}
        docs: list[Doc] = await self._cached(
            resource_type, "find", spec, run, docs_size, session, fresh
        )
        return [dict(d) for d in docs]  # callers may change their copies

    async def _select(
        self,
        resource_type: str,
        planned: Split,
        projection: Mapping[str, Any],
        sort: list[tuple[str, int]] | None,
        limit: int,
        session: AsyncClientSession | None,
    ) -> list[Doc]:
        """The stored documents a planned filter selects: one `find`, or an aggregation
        whose first stage rides an index (storage/plan.py)."""
        coll = self.db[resource_type]
        if planned.needs_stages:
            pipeline = planned.stages()
            if sort:
                pipeline.append({"$sort": dict(sort)})
            if limit:
                pipeline.append({"$limit": limit})
            pipeline.append({"$project": dict(projection)})
            return [d async for d in await coll.aggregate(pipeline, session=session)]
        cursor = coll.find(planned.whole(), projection, session=session)
        if sort:
            cursor = cursor.sort(sort)
        if limit:
            cursor = cursor.limit(limit)
        return [d async for d in cursor]

    async def _cached(
        self,
        resource_type: str,
        kind: str,
        spec: Mapping[str, Any],
        run: Callable[[], Awaitable[Any]],
        size_of: Callable[[Any], int],
        session: AsyncClientSession | None = None,
        fresh: bool = False,
    ) -> Any:
        """`run()`'s answer, through the query cache when there is one and no transaction.

        A cached answer is as fresh as every *acknowledged* write (storage/query_cache.py).
        A caller that learnt of a write from the store itself, before its writer was
        answered (a conditional create that lost the key race must find the winner), asks
        `fresh`: the store's answer, uncached."""
        if self.cache is None or session is not None or fresh:
            return await run()
        return await self.cache.cached(resource_type, kind, spec, run, size_of)

    async def count(self, resource_type: str, query: Mapping[str, Any]) -> int:
        """How many current resources of a type match a filter."""
        planned = split(query)

        async def run() -> int:
            coll = self.db[resource_type]
            if not planned.needs_stages:
                return await coll.count_documents(planned.whole())
            pipeline = [*planned.stages(), {"$count": "n"}]
            counted = [d async for d in await coll.aggregate(pipeline)]
            return int(counted[0]["n"]) if counted else 0

        found: int = await self._cached(
            resource_type, "count", {"q": planned.whole()}, run, lambda _: 16
        )
        return found

    async def ids(self, resource_type: str, query: Mapping[str, Any], limit: int) -> list[str]:
        """Ids of matching resources (for chained search), at most `limit`."""
        planned = split(query)

        async def run() -> list[str]:
            found = await self._select(resource_type, planned, {"_id": 1}, None, limit, None)
            return [d["_id"] for d in found]

        spec = {"q": planned.whole(), "l": limit}
        found: list[str] = await self._cached(
            resource_type, "ids", spec, run, lambda v: 64 * len(v)
        )
        return list(found)

    # ---- writes ------------------------------------------------------------

    async def create(
        self,
        resource: Mapping[str, Any],
        session: AsyncClientSession,
        *,
        rid: str | None = None,
        conditional_key: str | None = None,
    ) -> Stored:
        """Insert version 1 (or the next version after a deletion when `rid` is given)."""
        resource_type = resource["resourceType"]
        version = 1
        if rid is None:
            rid = new_id()
        else:
            last = await self.last_version(resource_type, rid, session)
            if last is not None:
                if not last.deleted:
                    raise Conflict(f"{resource_type}/{rid} already exists")
                version = last.version + 1
        if conditional_key is not None:
            await self._claim_conditional_key(resource_type, conditional_key, rid, session)
        return await self._write(resource, rid, version, session, method="POST", expect=None)

    async def update(
        self,
        resource: Mapping[str, Any],
        rid: str,
        session: AsyncClientSession,
        *,
        if_match: int | None = None,
    ) -> tuple[Stored, bool]:
        """Write a new version (create-on-update allowed); returns (stored, created)."""
        resource_type = resource["resourceType"]
        current = await self.db[resource_type].find_one({"_id": rid}, {"v": 1}, session=session)
        if current is None:
            if if_match is not None:
                raise PreconditionFailed(
                    f"{resource_type}/{rid} does not exist; If-Match cannot match"
                )
            last = await self.last_version(resource_type, rid, session)
            version = last.version + 1 if last else 1
            stored = await self._write(resource, rid, version, session, method="PUT", expect=None)
            return stored, True
        cur_v = int(current["v"])
        if if_match is not None and if_match != cur_v:
            raise PreconditionFailed(
                f"{resource_type}/{rid} is at version {cur_v}, not {if_match} (If-Match)"
            )
        stored = await self._write(resource, rid, cur_v + 1, session, method="PUT", expect=cur_v)
        return stored, False

    async def delete(
        self,
        resource_type: str,
        rid: str,
        session: AsyncClientSession,
        *,
        if_match: int | None = None,
    ) -> Stored | None:
        """Delete the current version (tombstone in history); None if nothing to delete."""
        current = await self.db[resource_type].find_one({"_id": rid}, {"v": 1}, session=session)
        if current is None:
            if if_match is not None:
                raise PreconditionFailed(f"{resource_type}/{rid} does not exist (If-Match)")
            return None
        cur_v = int(current["v"])
        if if_match is not None and if_match != cur_v:
            raise PreconditionFailed(
                f"{resource_type}/{rid} is at version {cur_v}, not {if_match} (If-Match)"
            )
        res = await self.db[resource_type].delete_one({"_id": rid, "v": cur_v}, session=session)
        if res.deleted_count != 1:
            raise Conflict(f"{resource_type}/{rid} changed while deleting; retry")
        lu = now_utc()
        version = cur_v + 1
        await self._insert_history(resource_type, rid, version, lu, None, "DELETE", session)
        return Stored(resource_type, rid, version, lu, None, "DELETE")

    def defer_inserts(self, session: AsyncClientSession) -> None:
        """Hold back the inserts of new current versions and history entries made in
        `session` until `flush_inserts` writes them with one insert per collection (a
        batch of creates, fhir/combiner.py). Until then reads in the session do not see
        them: only for writes whose hooks read none of them."""
        self._deferred[id(session)] = {}

    async def flush_inserts(self, session: AsyncClientSession) -> None:
        """Write what `defer_inserts` held back (ordered; a duplicate is a Conflict)."""
        pending = self._deferred.pop(id(session), {})
        for collection, docs in pending.items():
            try:
                await self.db[collection].insert_many(docs, ordered=True, session=session)
            except BulkWriteError:  # its details hold the documents: not for a message
                raise Conflict(f"a {collection} record was written concurrently; retry") from None

    def drop_deferred(self, session: AsyncClientSession) -> None:
        """Forget what `defer_inserts` held back (the transaction did not get to flush)."""
        self._deferred.pop(id(session), None)

    async def _insert(self, collection: str, doc: Doc, session: AsyncClientSession) -> None:
        deferred = self._deferred.get(id(session))
        if deferred is not None:
            deferred.setdefault(collection, []).append(doc)
        else:
            await self.db[collection].insert_one(doc, session=session)

    async def _write(
        self,
        resource: Mapping[str, Any],
        rid: str,
        version: int,
        session: AsyncClientSession,
        *,
        method: str,
        expect: int | None,
    ) -> Stored:
        resource_type = resource["resourceType"]
        lu = now_utc()
        body = _with_meta(resource, rid, version, lu)
        raw = orjson.dumps(body)
        idx, srt = self.indexer(body)
        stored_raw, kid = raw, None
        if self.phi is not None and resource_type in PHI_TYPES:
            stored_raw, kid = self.phi.seal_raw(resource_type, rid, version, raw)
        doc: Doc = {"_id": rid, "v": version, "lu": lu, "raw": stored_raw, "idx": idx, "srt": srt}
        if kid is not None:
            doc["k"] = kid
        coll = self.db[resource_type]
        if expect is None:
            try:
                await self._insert(resource_type, doc, session)
            except DuplicateKeyError:
                raise Conflict(f"{resource_type}/{rid} was created concurrently; retry") from None
        else:
            res = await coll.replace_one({"_id": rid, "v": expect}, doc, session=session)
            if res.matched_count != 1:
                raise Conflict(f"{resource_type}/{rid} changed concurrently; retry")
        await self._insert_history(
            resource_type, rid, version, lu, stored_raw, method, session, kid=kid
        )
        return Stored(resource_type, rid, version, lu, raw, method)

    async def _insert_history(
        self,
        resource_type: str,
        rid: str,
        version: int,
        lu: datetime,
        raw: bytes | None,
        method: str,
        session: AsyncClientSession,
        *,
        kid: str | None = None,
    ) -> None:
        entry: Doc = {
            "_id": f"{resource_type}/{rid}/{version}",
            "t": resource_type,
            "rid": rid,
            "v": version,
            "lu": lu,
            "m": method,
        }
        if raw is not None:
            entry["raw"] = raw
        if kid is not None:
            entry["k"] = kid
        try:
            await self._insert(HISTORY, entry, session)
        except DuplicateKeyError:
            raise Conflict(
                f"{resource_type}/{rid} version {version} written concurrently"
            ) from None

    async def _claim_conditional_key(
        self, resource_type: str, key: str, rid: str, session: AsyncClientSession
    ) -> None:
        """Unique key for a conditional create: two racing creators collide here."""
        try:
            await self.db[CONDITIONAL_KEYS].insert_one(
                {"_id": f"{resource_type}?{key}", "rid": rid}, session=session
            )
        except DuplicateKeyError:
            raise ConditionalKeyTaken(resource_type, key) from None

    async def release_conditional_key(self, resource_type: str, key: str) -> None:
        """Drop a stale conditional key (its resource no longer matches or is gone)."""
        await self.db[CONDITIONAL_KEYS].delete_one({"_id": f"{resource_type}?{key}"})


class ConditionalKeyTaken(Conflict):
    """Another conditional create with the same criteria committed (or is committing)."""

    def __init__(self, resource_type: str, key: str) -> None:
        super().__init__(f"a concurrent conditional create on {resource_type}?{key} won")
        self.resource_type = resource_type
        self.key = key


def dumps(value: Any) -> bytes:
    """Serialize JSON the way stored resources are serialized."""
    return orjson.dumps(value)
