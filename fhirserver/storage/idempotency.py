"""Idempotency-Key records: a retried request returns the first result.

The record is inserted in the same transaction as the write it answers for, so either
both exist or neither; a concurrent duplicate collides on `_id` and is told to retry,
after which it finds the committed record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from fhirserver.fhir.errors import Conflict, Unprocessable

Doc = dict[str, Any]
COLLECTION = "idempotency"


class IdempotencyStore:
    """Stored responses by (scope, key)."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.coll = db[COLLECTION]

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
        try:
            await self.coll.insert_one(
                {
                    "_id": self.record_id(scope, key),
                    "fp": fingerprint,
                    "status": status,
                    "body": body,
                    "headers": headers,
                    "at": now,
                },
                session=session,
            )
        except DuplicateKeyError:
            raise Conflict(
                f"a request with Idempotency-Key {key!r} is being processed; retry"
            ) from None
