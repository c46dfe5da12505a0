"""The claims repository, the booking guard and the invariant scan on the embedded server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from fhirserver.context import full_indexer
from fhirserver.fhir.errors import Unprocessable
from fhirserver.fhir.service import FhirService
from fhirserver.scheduling.booking import BookingGuard, SlotTaken
from fhirserver.scheduling.claims_policy import HOLD_EXPIRES_URL
from fhirserver.scheduling.clock import SettableClock
from fhirserver.storage.claims import (
    BOOKING,
    HOLD,
    ClaimsRepository,
    ClaimTaken,
    find_overlaps,
    merge_spans,
)
from fhirserver.storage.embedded import EmbeddedServers
from fhirserver.storage.migrations import apply_migrations
from fhirserver.storage.mongo import Mongo
from fhirserver.storage.resources import ResourceStore

Doc = dict[str, Any]
FIVE = timedelta(minutes=5)
NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def t(hh: int, mm: int) -> datetime:
    return datetime(2026, 12, 1, hh, mm, tzinfo=UTC)


def span(start: datetime, end: datetime) -> list[datetime]:
    out, g = [], start
    while g < end:
        out.append(g)
        g += FIVE
    return out


@pytest.fixture
async def repo(mongo_db: AsyncDatabase[Doc]) -> ClaimsRepository:
    await apply_migrations(mongo_db)
    return ClaimsRepository(mongo_db)


async def in_txn(client: AsyncMongoClient[Doc], fn: Any) -> Any:
    async with client.start_session() as s:
        return await s.with_transaction(fn)


async def test_migration_makes_r_g_unique(mongo_db: AsyncDatabase[Doc]) -> None:
    await apply_migrations(mongo_db)
    info = await mongo_db["claims"].index_information()
    unique = [v for v in info.values() if v.get("unique")]
    assert [list(v["key"]) for v in unique] == [[("r", 1), ("g", 1)]]
    assert any(list(v["key"]) == [("a", 1)] for v in info.values())


async def test_insert_read_convert_delete(
    mongo_client: AsyncMongoClient[Doc], repo: ClaimsRepository
) -> None:
    keys = [("Practitioner/p", g) for g in span(t(9, 0), t(9, 30))]
    exp = NOW + timedelta(minutes=10)
    n = await in_txn(mongo_client, lambda s: repo.insert("A", keys, HOLD, exp, s))
    assert n == 6
    mine = await repo.of_appointment("A")
    assert {c["k"] for c in mine} == {HOLD} and len(mine) == 6
    assert await in_txn(mongo_client, lambda s: repo.convert_holds("A", s)) == 6
    assert {(c["k"], "exp" in c) for c in await repo.of_appointment("A")} == {(BOOKING, False)}
    assert await in_txn(mongo_client, lambda s: repo.delete_for_appointment("A", s)) == 6
    assert await repo.of_appointment("A") == []


async def test_collision_raises_claim_taken_and_aborts_the_transaction(
    mongo_client: AsyncMongoClient[Doc], repo: ClaimsRepository, mongo_db: AsyncDatabase[Doc]
) -> None:
    """Reproducer: a duplicate key inside a transaction aborts it (as on mongod); the next
    write in the same session fails NoSuchTransaction labelled TransientTransactionError,
    which is why the guard checks before inserting and never writes after a collision."""
    await in_txn(
        mongo_client, lambda s: repo.insert("A", [("Device/x", t(9, 5))], BOOKING, None, s)
    )
    async with mongo_client.start_session() as s:
        await s.start_transaction()
        await mongo_db["scratch"].insert_one({"_id": "before"}, session=s)
        with pytest.raises(ClaimTaken) as err:
            await repo.insert("B", [("Device/x", t(9, 0)), ("Device/x", t(9, 5))], BOOKING, None, s)
        assert err.value.resource == "Device/x"
        assert err.value.granule is not None and err.value.granule.replace(tzinfo=UTC) == t(9, 5)
        with pytest.raises(OperationFailure) as after:
            await mongo_db["scratch"].insert_one({"_id": "after"}, session=s)
        assert after.value.has_error_label("TransientTransactionError")
    assert await mongo_db["scratch"].count_documents({}) == 0
    assert [c["a"] for c in await repo.on(["Device/x"], t(9, 0), t(10, 0))] == ["A"]


async def test_racing_transactions_one_wins(
    mongo_client: AsyncMongoClient[Doc], repo: ClaimsRepository
) -> None:
    keys = [("Location/room", g) for g in span(t(9, 0), t(10, 0))]

    async def book(appt: str) -> str:
        try:
            await in_txn(mongo_client, lambda s: repo.insert(appt, keys, BOOKING, None, s))
        except ClaimTaken:
            return "taken"
        return "ok"

    results = await asyncio.gather(*(book(f"A{i}") for i in range(20)))
    assert sorted(results).count("ok") == 1
    assert len(await repo.on(["Location/room"], t(0, 0), t(23, 0))) == 12


async def test_busy_merges_granules_and_skips_dead_holds(
    mongo_client: AsyncMongoClient[Doc], repo: ClaimsRepository
) -> None:
    p, q = "Practitioner/busy-p", "Practitioner/busy-q"

    async def setup(s: AsyncClientSession) -> None:
        await repo.insert("A", [(p, g) for g in span(t(9, 0), t(9, 30))], BOOKING, None, s)
        await repo.insert("B", [(p, g) for g in span(t(9, 30), t(9, 45))], BOOKING, None, s)
        await repo.insert("C", [(p, g) for g in span(t(11, 0), t(11, 10))], BOOKING, None, s)
        live, dead = NOW + FIVE, NOW - FIVE
        await repo.insert("D", [(q, g) for g in span(t(9, 0), t(9, 10))], HOLD, live, s)
        await repo.insert("E", [(q, g) for g in span(t(10, 0), t(10, 10))], HOLD, dead, s)

    await in_txn(mongo_client, setup)
    busy = await repo.busy_by_resource([p, q], t(9, 2), t(12, 0), now=NOW, granule=FIVE)
    assert busy == {p: [(t(9, 0), t(9, 45)), (t(11, 0), t(11, 10))], q: [(t(9, 0), t(9, 10))]}
    inside = await repo.busy_by_resource([p], t(9, 46), t(10, 59), now=NOW, granule=FIVE)
    assert inside == {}
    union = await repo.busy([p, q], t(8, 0), t(10, 0), now=NOW, granule=FIVE)
    assert union == [(t(9, 0), t(9, 45))]
    # Later, D's hold is dead too; deleting dead holds removes D and E only.
    later = NOW + timedelta(hours=1)
    gone = await in_txn(
        mongo_client, lambda s: repo.delete_dead_holds([p, q], t(0, 0), t(23, 0), later, s)
    )
    assert gone == 4
    assert {c["a"] for c in await repo.on([p, q], t(0, 0), t(23, 0))} == {"A", "B", "C"}


async def test_on_excludes_one_appointment_and_dead_holds_go_only_by_id(
    mongo_client: AsyncMongoClient[Doc], repo: ClaimsRepository
) -> None:
    p = "Practitioner/excl-p"

    async def setup(s: AsyncClientSession) -> None:
        await repo.insert("X", [(p, g) for g in span(t(9, 0), t(9, 15))], BOOKING, None, s)
        await repo.insert("Y", [(p, g) for g in span(t(9, 15), t(9, 25))], HOLD, NOW - FIVE, s)
        await repo.insert("Z", [(p, g) for g in span(t(10, 0), t(10, 10))], HOLD, NOW - FIVE, s)

    await in_txn(mongo_client, setup)
    mine = await repo.on([p], t(0, 0), t(23, 0), exclude_appointment="X")
    assert {c["a"] for c in mine} == {"Y", "Z"} and len(mine) == 4
    assert [c["g"] for c in mine] == sorted(c["g"] for c in mine)
    y_ids = [c["_id"] for c in mine if c["a"] == "Y"]
    # Only the named dead holds go; Z's stay, and a booking is never a dead hold.
    x_ids = [c["_id"] for c in await repo.on([p], t(9, 0), t(9, 15))]
    gone = await in_txn(mongo_client, lambda s: repo.delete_dead_holds(
        [p], t(0, 0), t(23, 0), NOW, s, ids=[*y_ids, *x_ids]))
    assert gone == 2
    left = await repo.on([p], t(0, 0), t(23, 0))
    assert sorted({c["a"] for c in left}) == ["X", "Z"] and len(left) == 5


def test_merge_spans() -> None:
    assert merge_spans([(t(10, 0), t(11, 0)), (t(9, 0), t(10, 0)), (t(9, 30), t(9, 40))]) == [
        (t(9, 0), t(11, 0))
    ]


# ---- the guard, through FhirService, with a settable clock ---------------------------


@dataclass
class Stack:
    service: FhirService
    clock: SettableClock
    db: AsyncDatabase[Doc]


@pytest.fixture
async def stack(embedded: EmbeddedServers, mongo_db: AsyncDatabase[Doc]) -> AsyncIterator[Stack]:
    assert embedded.mongodb_uri
    mongo = Mongo(embedded.mongodb_uri, mongo_db.name)
    await apply_migrations(mongo.db)
    store = ResourceStore(mongo.db, full_indexer)
    service = FhirService(mongo, store)
    clock = SettableClock(NOW)
    service.add_write_hook(BookingGuard(store, ClaimsRepository(mongo.db), clock, mongo).on_write)
    yield Stack(service, clock, mongo.db)
    await mongo.close()


def appointment(
    status: str, start: datetime, end: datetime, *actors: str, **extra: Any
) -> dict[str, Any]:
    refs = ["Patient/pat", *actors]
    return {
        "resourceType": "Appointment",
        "status": status,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "participant": [{"actor": {"reference": r}, "status": "accepted"} for r in refs],
        **extra,
    }


def held_until(exp: datetime) -> dict[str, Any]:
    return {"extension": [{"url": HOLD_EXPIRES_URL, "valueInstant": exp.isoformat()}]}


async def create(stack: Stack, body: dict[str, Any]) -> str:
    result = await stack.service.create("Appointment", body)
    assert result.stored is not None
    return result.stored.id


async def test_dead_hold_is_deleted_when_a_booking_collides(stack: Stack) -> None:
    doc = "Practitioner/guard-1"
    hold = appointment("pending", t(9, 0), t(9, 30), doc, **held_until(NOW + FIVE))
    hold_id = await create(stack, hold)
    with pytest.raises(SlotTaken) as err:
        await create(stack, appointment("booked", t(9, 15), t(9, 45), doc))
    assert err.value.extra["conflict"]["held"] is True
    assert (err.value.start, err.value.end) == (t(9, 15), t(9, 30))
    stack.clock.advance(timedelta(minutes=10))
    booked = await create(stack, appointment("booked", t(9, 15), t(9, 45), doc))
    claims = ClaimsRepository(stack.db)
    # The overlapping dead hold granules went; the rest of the dead hold stays harmlessly.
    assert {c["a"] for c in await claims.on([doc], t(9, 15), t(9, 45))} == {booked}
    assert len(await claims.of_appointment(hold_id)) == 3
    assert await find_overlaps(stack.db, now=stack.clock.now()) == []


async def test_pending_to_booked_converts_holds_and_reschedule_reclaims(stack: Stack) -> None:
    doc, room = "Practitioner/guard-2", "Location/guard-room"
    body = appointment("pending", t(9, 0), t(9, 30), doc, room, **held_until(NOW + FIVE))
    aid = await create(stack, body)
    claims = ClaimsRepository(stack.db)
    assert {c["k"] for c in await claims.of_appointment(aid)} == {HOLD}
    booked = {**body, "id": aid, "status": "booked"}
    await stack.service.update("Appointment", aid, booked)
    mine = await claims.of_appointment(aid)
    assert len(mine) == 12 and {(c["k"], "exp" in c) for c in mine} == {(BOOKING, False)}
    moved = {**booked, "start": t(9, 20).isoformat(), "end": t(9, 50).isoformat()}
    await stack.service.update("Appointment", aid, moved)
    got = sorted({c["g"].replace(tzinfo=UTC) for c in await claims.of_appointment(aid)})
    assert got == span(t(9, 20), t(9, 50))
    assert await find_overlaps(stack.db, now=stack.clock.now()) == []
    await stack.service.delete("Appointment", aid)
    assert await claims.of_appointment(aid) == []


async def test_missing_times_are_422(stack: Stack) -> None:
    body = appointment("booked", t(9, 0), t(9, 30), "Practitioner/guard-3")
    del body["start"]
    with pytest.raises(Unprocessable):
        await stack.service.create("Appointment", body)
    with pytest.raises(Unprocessable):
        await create(stack, appointment("booked", t(9, 30), t(9, 30), "Practitioner/guard-3"))


async def test_scan_finds_planted_problems(stack: Stack) -> None:
    doc = "Practitioner/guard-4"
    ok = await create(stack, appointment("booked", t(9, 0), t(9, 30), doc))
    assert await find_overlaps(stack.db, now=stack.clock.now()) == []
    # Bypass the guard: a raw Appointment overlapping `ok`, owning no claims.
    raw = {**appointment("booked", t(9, 15), t(9, 45), doc), "id": "planted"}
    await stack.db["Appointment"].insert_one({"_id": "planted", "raw": orjson.dumps(raw)})
    # ... and an orphan claim pointing at nothing.
    await stack.db["claims"].insert_one({"r": doc, "g": t(12, 0), "a": "ghost", "k": BOOKING})
    kinds = {(p.kind, p.appointments) for p in await find_overlaps(stack.db, now=NOW)}
    assert ("overlap", (ok, "planted")) in kinds
    assert ("missing-claim", ("planted",)) in kinds
    assert ("orphan-claim", ("ghost",)) in kinds
