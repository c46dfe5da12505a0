"""ResourceStore's deferred inserts (the create combiner's batches): held back until the
flush, written one insert per collection, and all or nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhirserver.context import full_indexer
from fhirserver.fhir.errors import Conflict
from fhirserver.storage.embedded import EmbeddedServers
from fhirserver.storage.migrations import apply_migrations
from fhirserver.storage.mongo import Mongo
from fhirserver.storage.resources import HISTORY, ResourceStore, Stored

Doc = dict[str, Any]


@pytest.fixture
async def mongo(embedded: EmbeddedServers, mongo_db: AsyncDatabase[Doc]) -> AsyncIterator[Mongo]:
    assert embedded.mongodb_uri
    await apply_migrations(mongo_db)
    m = Mongo(embedded.mongodb_uri, mongo_db.name)
    yield m
    await m.close()


def patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


async def test_deferred_inserts_appear_at_the_flush(mongo: Mongo) -> None:
    store = ResourceStore(mongo.db, full_indexer)

    async def batch(session: AsyncClientSession) -> list[Stored]:
        store.defer_inserts(session)
        made = [await store.create(patient(f"D{i}"), session) for i in range(3)]
        # held back: not even this transaction sees them yet
        assert await mongo.db["Patient"].count_documents({}, session=session) == 0
        await store.flush_inserts(session)
        assert await mongo.db["Patient"].count_documents({}, session=session) == 3
        return made

    made = await mongo.transaction(batch)
    for stored in made:
        assert (await store.read("Patient", stored.id)).raw == stored.raw
    assert await mongo.db[HISTORY].count_documents({"t": "Patient"}) == 3


async def test_a_duplicate_at_the_flush_is_a_conflict_and_writes_nothing(mongo: Mongo) -> None:
    store = ResourceStore(mongo.db, full_indexer)

    async def batch(session: AsyncClientSession) -> None:
        store.defer_inserts(session)
        try:
            first = await store.create(patient("Dup"), session)
            await store.create(patient("Other"), session)
            # the same id written meanwhile: the flush's ordered insert_many stops there
            await mongo.db["Patient"].insert_one({"_id": first.id, "v": 1}, session=session)
            await store.flush_inserts(session)
        finally:
            store.drop_deferred(session)

    with pytest.raises(Conflict, match="written concurrently"):
        await mongo.transaction(batch)
    assert await mongo.db["Patient"].count_documents({}) == 0
    assert await mongo.db[HISTORY].count_documents({}) == 0
