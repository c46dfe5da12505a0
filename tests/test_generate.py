"""`fhirserver generate`: a small synthetic system is valid FHIR, consistent and bookable."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from pymongo import AsyncMongoClient

from fhirserver.config import Settings
from fhirserver.context import AppContext, full_indexer
from fhirserver.fhir.validation import validate_resource
from fhirserver.generate import GenerateConfig, generate
from fhirserver.phi.codec import PhiCodec
from fhirserver.phi.rotation import sealed_under
from fhirserver.scheduling.criteria import FindCriteria
from fhirserver.scheduling.finder import proposed_appointment
from fhirserver.storage.claims import find_overlaps
from fhirserver.storage.embedded import EmbeddedServers
from fhirserver.storage.migrations import apply_migrations

TYPES = ("Organization", "Location", "Practitioner", "PractitionerRole", "Schedule", "Patient",
         "Appointment")


@pytest.fixture
async def generated(embedded: EmbeddedServers) -> AsyncIterator[AppContext]:
    name = f"gen_{uuid.uuid4().hex[:10]}"
    client: AsyncMongoClient[dict] = AsyncMongoClient(embedded.mongodb_uri, tz_aware=True)  # type: ignore[type-arg]
    db = client[name]
    await apply_migrations(db)
    cfg = GenerateConfig(providers=50, days=14, seed=3)
    settings = Settings(mongodb_uri=embedded.mongodb_uri, redis_url=embedded.redis_url,
                        db_name=name, demo=False)
    phi = PhiCodec.from_settings(settings)  # Patients, Appointments sealed as `serve` would
    stats = await generate(db, cfg, full_indexer, phi=phi)
    assert stats.resources["Practitioner"] == 50 and stats.resources["Location"] == 50
    assert stats.claims > 0
    # Everything is sealed as written, and recorded: `serve` does not pass over it again.
    assert await sealed_under(db) == phi.cipher.active_kid
    again = await generate(db, cfg, full_indexer, phi=phi)
    assert again.reused
    ctx = await AppContext.start(settings)
    yield ctx
    await ctx.stop()
    # Not dropped: the uniquely named database goes with the session's temp data dir, and
    # dropping it costs SecantusDB ~16 s (it deletes the index entries one by one).
    await client.close()


async def test_generated_system_is_valid_consistent_and_bookable(generated: AppContext) -> None:
    db = generated.mongo.db
    cipher = generated.store.phi.cipher if generated.store.phi else None
    for rtype in TYPES:
        # through the store: it opens the sealed Patients and Appointments
        docs = await generated.store.find(rtype, {}, projection={"raw": 1})
        assert docs, rtype
        for d in docs:
            validate_resource(orjson.loads(d["raw"]), rtype)  # raises on invalid FHIR
        assert await db["history"].count_documents({"t": rtype}) == len(docs)
    booked = await db["Appointment"].count_documents({})
    assert booked > 500  # about half of ~50 x 9 weekdays x 7 h is booked
    # claims are exactly what the guard would write
    assert await find_overlaps(db, cipher=cipher) == []

    now = datetime.now(UTC)
    c = FindCriteria(start=now, end=now + timedelta(days=14), specialties=["394579002"],
                     near=(40.7128, -74.0060, 50.0), count=20)
    finder = generated.scheduling.finder
    fast = await finder.proposals(c, now, 20)
    slow = await finder.naive_proposals(c, now, 20)
    assert [(p.candidate, p.actors) for p in fast] == [(p.candidate, p.actors) for p in slow]
    c.specialties = []
    offers = await finder.proposals(c, now, 20)
    assert offers
    appt = proposed_appointment(offers[0], "syn-pat-000001", [])
    res = await generated.scheduling.book({"appointment": [appt]}, None, b"")
    assert res.status == 201
    assert await find_overlaps(db, cipher=cipher) == []
    after = await finder.proposals(c, generated.clock.now(), 20)
    assert offers[0].candidate.slot_id not in {p.candidate.slot_id for p in after}
