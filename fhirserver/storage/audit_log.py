"""The `AuditEvent` collection: append-only, hash-chained (fhirserver/audit/chain.py).

Each record is stored in the current-resource shape (docs/search-index.md) so the normal
read and search code serves it, plus the chain fields:

    {_id, v: 1, lu, raw, k, idx, srt, seq, prev, hash}

With a record cipher, `raw` is sealed like a PHI resource's (AES-256-GCM, context
`AuditEvent/<id>/1`, kid in `k`): the trail holds search strings and references that name
patients. The chain hashes the plaintext, so re-sealing under a new key (`fhirserver keys
rotate`) leaves it intact, and `verify` needs the keyring.

A batch is appended in one transaction that inserts the next records after the chain
head (`_meta/audit_head`: the newest `seq` and `hash`) and moves the head with a
compare-and-set on its `seq`. A process remembers the head it last wrote; when another
process has moved it since, the compare-and-set matches nothing (or the two transactions
conflict on the head document, and the runner retries one) and the batch is chained again
on the head read afresh. Once processes have met like that, each batch takes the head
document with its first statement for a while (`contended`), so appenders queue on it
rather than one redoing whole batches behind another's (docs/audit.md). The unique index
on `seq` is a second guard (a duplicate is retried the same way). A trail written before
the head document existed gets one from a scan of the collection on the first append.
Nothing here updates or deletes a record.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, NamedTuple

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
META = "_meta"
HEAD_ID = "audit_head"
# How often a batch is re-chained after losing the head to another process.
_APPEND_ATTEMPTS = 50
# After a conflict with another appender, batches take the head first for this long.
_CONTENDED_SECONDS = 5.0


class Prepared(NamedTuple):
    """One record ready to append: its document (chain fields unset) and hashed plaintext."""

    doc: Doc
    plain: bytes


class _StaleHead(Exception):
    """The head document moved since this process last appended."""


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
        # (seq, hash, stored) after our last append: the head document is then only read
        # again when another process has moved it.
        self._head: tuple[int, str, bool] | None = None
        # Until then, batches take the head document first (another process appends too).
        self._contended_until = 0.0

    def prepare(self, event: Mapping[str, Any]) -> Prepared:
        """The document to insert for `event` (chain fields still unset) and its plaintext.

        Done when the event is queued, not when its batch is appended: the batch holds the
        chain, so work that does not depend on the chain stays out of its way.
        """
        rid, lu = new_id(), now_utc()
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
        return Prepared(doc, raw)

    async def append(self, records: Sequence[Prepared]) -> list[int]:
        """Store `records` (from `prepare`) as the next records of the chain, atomically;
        their `seq`s.

        Returns only after the commit (majority write concern; the embedded server syncs
        its journal on commit), so a returned record survives a crash.
        """
        docs = [r.doc for r in records]
        plain = [r.plain for r in records]
        meta = self.mongo.db[META]
        attempts = 0

        async def run(session: AsyncClientSession) -> list[int]:
            nonlocal attempts
            attempts += 1
            if attempts > 1:  # a conflict made the driver run this again
                self._met_another()
            known = self._head
            if known is None or self.contended():
                # Take the head first: from this statement to the commit, any other
                # appender's first statement conflicts at once and is retried, so appenders
                # queue on the head instead of one redoing whole batches behind another.
                head = await meta.find_one_and_update(
                    {"_id": HEAD_ID}, {"$inc": {"taken": 1}}, session=session
                )
                if head is None:  # a trail from before the head document: scan it once
                    known = (*await self.head(session=session), False)
                else:
                    known = (int(head["seq"]), str(head["hash"]), True)
            seq, prev, stored = known
            first = seq
            for doc, raw in zip(docs, plain, strict=True):
                seq += 1
                doc["seq"], doc["prev"] = seq, prev
                doc["hash"] = prev = record_hash(prev, seq, doc["_id"], raw)
            await self.coll.insert_many(docs, ordered=True, session=session)
            if not stored:
                await meta.insert_one({"_id": HEAD_ID, "seq": seq, "hash": prev}, session=session)
            else:
                moved = await meta.update_one(
                    {"_id": HEAD_ID, "seq": first}, {"$set": {"seq": seq, "hash": prev}},
                    session=session,
                )
                if moved.matched_count != 1:
                    raise _StaleHead
            return [int(d["seq"]) for d in docs]

        last: Exception | None = None
        for _ in range(_APPEND_ATTEMPTS):
            try:
                seqs = await self.mongo.transaction(run)
            except _StaleHead as exc:
                last, self._head = exc, None  # another process appended: read its head
                self._met_another()
                continue
            except (DuplicateKeyError, BulkWriteError) as exc:
                self._head = None
                self._met_another()
                if not _duplicate_seq(exc):
                    raise
                last = exc  # another process created the head or took the seq: again
                continue
            except BaseException:
                self._head = None  # unknown outcome: read the head again next time
                raise
            self._head = (seqs[-1], str(docs[-1]["hash"]), True)
            return seqs
        raise AuditAppendError(f"could not claim the chain head: {last}")

    def _met_another(self) -> None:
        self._contended_until = time.monotonic() + _CONTENDED_SECONDS

    def contended(self) -> bool:
        """True while another process has lately appended to the same trail."""
        return time.monotonic() < self._contended_until

    async def head(self, *, session: AsyncClientSession | None = None) -> tuple[int, str]:
        """(seq, hash) of the newest record found by scanning the collection; (0, GENESIS)
        when the trail is empty."""
        head = await self.coll.find_one(
            {}, {"seq": 1, "hash": 1}, sort=[("seq", DESCENDING)], session=session
        )
        return (int(head["seq"]), str(head["hash"])) if head else (0, GENESIS)

    async def recorded_head(self) -> tuple[int, str] | None:
        """(seq, hash) the head document names; None for a trail without one."""
        head = await self.mongo.db[META].find_one({"_id": HEAD_ID})
        return None if head is None else (int(head["seq"]), str(head["hash"]))

    async def records(self) -> AsyncIterator[Doc]:
        """Every record in `seq` order (chain fields and the stored raw bytes only; sealed
        ones are opened by `verify_records` with the keyring)."""
        cursor = self.coll.find(
            {}, {"seq": 1, "prev": 1, "hash": 1, "raw": 1}, sort=[("seq", ASCENDING)]
        ).batch_size(1000)
        async for doc in cursor:
            yield doc
