"""Idempotency records written inside transactions on the embedded server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from fhirserver.fhir.errors import Conflict, Unprocessable
from fhirserver.storage.idempotency import IdempotencyStore

Doc = dict[str, Any]


async def test_put_get_and_fingerprint_mismatch(
    mongo_client: AsyncMongoClient[Doc], mongo_db: AsyncDatabase[Doc]
) -> None:
    store = IdempotencyStore(mongo_db)
    now = datetime.now(UTC)
    assert await store.get("book", "k1", "fp") is None
    async with mongo_client.start_session() as s:
        await s.with_transaction(
            lambda sess: store.put("book", "k1", "fp", 201, b"{}", {"ETag": 'W/"1"'}, now, sess)
        )
    doc = await store.get("book", "k1", "fp")
    assert doc is not None and doc["status"] == 201 and doc["headers"] == {"ETag": 'W/"1"'}
    with pytest.raises(Unprocessable):
        await store.get("book", "k1", "other-request")
    async with mongo_client.start_session() as s:
        with pytest.raises(Conflict):
            await s.with_transaction(
                lambda sess: store.put("book", "k1", "fp", 201, b"{}", {}, now, sess)
            )


async def test_aborted_transaction_leaves_no_record(
    mongo_client: AsyncMongoClient[Doc], mongo_db: AsyncDatabase[Doc]
) -> None:
    store = IdempotencyStore(mongo_db)

    async def write_then_fail(sess: Any) -> None:
        await store.put("book", "k2", "fp", 201, b"{}", {}, datetime.now(UTC), sess)
        raise Conflict("the booking itself failed")

    async with mongo_client.start_session() as s:
        with pytest.raises(Conflict):
            await s.with_transaction(write_then_fail)
    assert await store.get("book", "k2", "fp") is None
