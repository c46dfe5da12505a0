"""The `AuditEvent` collection: append-only, hash-chained (fhirserver/audit/chain.py).

Each record is stored in the current-resource shape (docs/search-index.md) so the normal
read and search code serves it, plus the chain fields:

    {_id, v: 1, lu, raw, k, idx, srt, seq, prev, hash}

With a record cipher, `raw` is sealed like a PHI resource's (AES-256-GCM, context
`AuditEvent/<id>/1`, kid in `k`): the trail holds search strings and references that name
patients. The chain hashes the plaintext, so re-sealing under a new key (`fhirserver keys
rotate`) leaves it intact, and `verify` needs the keyring.

A batch is appended in one transaction that inserts the next records after the head
(highest `seq`). The head is remembered between batches: reading it from the store each
time costs SecantusDB a walk over the whole collection. `seq` is unique, so a remembered
head that another process has moved past makes the insert collide (duplicate key, or a
write conflict that the transaction runner retries); the head is then re-read from the
remembered `seq` on and the batch re-chained. Nothing here updates or deletes a record.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import orjson
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import BulkWriteError, DuplicateKeyError

from fhirserver.audit.chain import GENESIS, record_hash
from fhirserver.phi.cipher import RecordCipher, record_context
from fhirserver.storage.mongo import Mongo
from fhirserver.storage.resources import Indexer, format_instant, new_id, now_utc

Doc = dict[str, Any]

COLLECTION = "AuditEvent"
# How often a batch is re-chained after losing the head to another process.
_APPEND_ATTEMPTS = 50


class AuditAppendError(RuntimeError):
    """A batch of audit records could not be stored."""


def _duplicate_seq(exc: Exception) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors", [])
        return bool(errors) and all(e.get("code") == 11000 for e in errors)
    return False


class AuditLog:
    """Appends AuditEvents to the chain; walks the chain for verification."""

    def __init__(self, mongo: Mongo, indexer: Indexer, cipher: RecordCipher | None) -> None:
        self.mongo = mongo
        self.indexer = indexer
        self.cipher = cipher
        self.coll = mongo.db[COLLECTION]
        self._head: tuple[int, str] | None = None  # (seq, hash) after our last append

    def _prepare(self, events: Sequence[Mapping[str, Any]]) -> tuple[list[Doc], list[bytes]]:
        """The documents to insert (chain fields still unset) and each one's plaintext."""
        lu = now_utc()
        docs: list[Doc] = []
        plain: list[bytes] = []
        for event in events:
            rid = new_id()
            body: Doc = {
                "resourceType": "AuditEvent",
                "id": rid,
                "meta": {"versionId": "1", "lastUpdated": format_instant(lu)},
            }
            body.update((k, v) for k, v in event.items() if k not in ("resourceType", "id"))
            if "meta" in event:  # keep the BALP profile claims, with our version and time
                body["meta"] = {**event["meta"], **body["meta"]}
            raw = orjson.dumps(body)
            idx, srt = self.indexer(body)
            doc: Doc = {"_id": rid, "v": 1, "lu": lu, "raw": raw, "idx": idx, "srt": srt}
            if self.cipher is not None:
                doc["raw"], doc["k"] = self.cipher.seal(record_context(COLLECTION, rid, 1), raw)
            docs.append(doc)
            plain.append(raw)
        return docs, plain

    async def append(self, events: Sequence[Mapping[str, Any]]) -> list[int]:
        """Store `events` as the next records of the chain, atomically; their `seq`s.

        Returns only after the commit (majority write concern; the embedded server syncs
        its journal on commit), so a returned record survives a crash.
        """
        docs, plain = self._prepare(events)

        async def run(session: AsyncClientSession) -> list[int]:
            seq, prev = self._head if self._head is not None else await self.head(session=session)
            for doc, raw in zip(docs, plain, strict=True):
                seq += 1
                doc["seq"], doc["prev"] = seq, prev
                doc["hash"] = prev = record_hash(prev, seq, doc["_id"], raw)
            await self.coll.insert_many(docs, ordered=True, session=session)
            return [int(d["seq"]) for d in docs]

        last: Exception | None = None
        for _ in range(_APPEND_ATTEMPTS):
            try:
                seqs = await self.mongo.transaction(run)
            except (DuplicateKeyError, BulkWriteError) as exc:
                if not _duplicate_seq(exc):
                    raise
                last = exc  # another process appended first: re-chain on the new head
                self._head = await self.head(after=self._head[0] if self._head else 0)
                continue
            except BaseException:
                self._head = None  # unknown outcome: read the head again next time
                raise
            self._head = (int(docs[-1]["seq"]), str(docs[-1]["hash"]))
            return seqs
        raise AuditAppendError(f"could not claim the chain head: {last}")

    async def head(
        self, *, after: int = 0, session: AsyncClientSession | None = None
    ) -> tuple[int, str]:
        """(seq, hash) of the newest record; (0, GENESIS) when the trail is empty.

        `after`: a `seq` known to exist, so only the records from it on are looked at.
        """
        head = await self.coll.find_one(
            {"seq": {"$gte": after}}, {"seq": 1, "hash": 1}, sort=[("seq", DESCENDING)],
            session=session,
        )
        return (int(head["seq"]), str(head["hash"])) if head else (0, GENESIS)

    async def records(self) -> AsyncIterator[Doc]:
        """Every record in `seq` order (chain fields and the stored raw bytes only; sealed
        ones are opened by `verify_records` with the keyring)."""
        cursor = self.coll.find(
            {}, {"seq": 1, "prev": 1, "hash": 1, "raw": 1}, sort=[("seq", ASCENDING)]
        ).batch_size(1000)
        async for doc in cursor:
            yield doc
