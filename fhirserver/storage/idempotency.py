"""Idempotency-Key records: a retried request returns the first result.

The record is inserted in the same transaction as the write it answers for, so either
both exist or neither; a concurrent duplicate collides on `_id` and is told to retry,
after which it finds the committed record. With a cipher, the stored response body (an
Appointment: PHI) is sealed, bound to the record's id (docs/phi.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from fhirserver.fhir.errors import Conflict, Unprocessable
from fhirserver.phi.cipher import RecordCipher

Doc = dict[str, Any]
COLLECTION = "idempotency"


class IdempotencyStore:
    """Stored responses by (scope, key)."""

    def __init__(self, db: AsyncDatabase[Doc], cipher: RecordCipher | None = None) -> None:
        self.coll = db[COLLECTION]
        self.cipher = cipher

    @staticmethod
    def record_id(scope: str, key: str) -> str:
        """The record id for one key within one operation scope."""
        return f"{scope}:{key}"

    async def get(self, scope: str, key: str, fingerprint: str) -> Doc | None:
        """The stored response for this key, or None; 422 if reused for another request."""
        doc = await self.coll.find_one({"_id": self.record_id(scope, key)})
        if doc is not None and doc.get("fp") != fingerprint:
            raise Unprocessable(
                f"Idempotency-Key {key!r} was already used for a different request"
            )
        if doc is not None and self.cipher is not None and "body" in doc:
            doc["body"] = self.cipher.open(f"{COLLECTION}/{doc['_id']}", doc["body"])
        return doc

    async def put(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        status: int,
        body: bytes,
        headers: dict[str, str],
        now: datetime,
        session: AsyncClientSession,
    ) -> None:
        """Record the response inside the caller's transaction."""
        rid = self.record_id(scope, key)
        record: Doc = {"_id": rid, "fp": fingerprint, "status": status, "body": body,
                       "headers": headers, "at": now}
        if self.cipher is not None:
            record["body"], record["k"] = self.cipher.seal(f"{COLLECTION}/{rid}", body)
        try:
            await self.coll.insert_one(record, session=session)
        except DuplicateKeyError:
            raise Conflict(
                f"a request with Idempotency-Key {key!r} is being processed; retry"
            ) from None
