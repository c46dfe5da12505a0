"""The availability index against the engine-per-request path, and its freshness.

Every test runs real servers: the session's embedded MongoDB-wire server and Redis, one
AppContext (or two, standing for two server processes) on a fresh database.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from fhirserver.config import Settings
from fhirserver.context import AppContext
from fhirserver.scheduling.availability import Interval
from fhirserver.scheduling.clock import SettableClock
from fhirserver.scheduling.criteria import FindCriteria
from fhirserver.scheduling.finder import Proposal, proposed_appointment
from fhirserver.scheduling.index import AvailabilityIndex
from fhirserver.storage.embedded import EmbeddedServers

RULE = "http://fhirserver.dev/StructureDefinition/availability-rule"
VISIT = "http://fhirserver.dev/CodeSystem/visit-type"
TZ = "http://hl7.org/fhir/StructureDefinition/timezone"
SNOMED = "http://snomed.info/sct"
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ZONES = ["America/New_York", "America/Los_Angeles", "Asia/Kolkata", "Europe/London"]
SPECS = ["394579002", "394582007", "394802001"]
CODES = ["FOLLOW_UP", "NEW_PATIENT", "URGENT_CARE", "CONSULT"]


def settings_for(embedded: EmbeddedServers, db: str) -> Settings:
    return Settings(mongodb_uri=embedded.mongodb_uri, redis_url=embedded.redis_url,
                    db_name=db, demo=False)


@pytest.fixture
async def ctx(embedded: EmbeddedServers) -> AsyncIterator[AppContext]:
    clock = SettableClock(datetime.now(UTC).replace(microsecond=0))
    c = await AppContext.start(settings_for(embedded, f"ix_{uuid.uuid4().hex[:10]}"), clock)
    yield c
    await c.mongo.client.drop_database(c.settings.db_name)
    await c.stop()


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def key(p: Proposal) -> tuple[Any, ...]:
    return (p.established, p.candidate, p.actors, orjson_like(proposed_appointment(p, None, [])))


def orjson_like(appt: dict[str, Any]) -> str:
    import orjson

    return orjson.dumps(appt, option=orjson.OPT_SORT_KEYS).decode()


async def random_system(ctx: AppContext, rng: random.Random, n: int = 12) -> dict[str, Any]:
    """Locations in several zones, practitioners with roles and random rule Schedules
    (breaks, buffers, notice, advance, durations, effective periods), free and busy Slots."""
    svc = ctx.service
    locs: list[tuple[str, float, float]] = []
    for i, tz in enumerate(ZONES):
        lid = f"L{i}"
        lat, lng = 40 + i, -70 - i * 10
        await svc.update("Location", lid, {
            "resourceType": "Location", "id": lid, "name": f"Clinic {i}", "status": "active",
            "extension": [{"url": TZ, "valueCode": tz}],
            "position": {"latitude": lat, "longitude": lng},
            "hoursOfOperation": [{"daysOfWeek": DAYS, "openingTime": "06:00:00",
                                  "closingTime": "21:00:00"}],
        })
        await svc.update("Location", f"{lid}r", {
            "resourceType": "Location", "id": f"{lid}r", "name": f"Room {i}",
            "partOf": {"reference": f"Location/{lid}"}})
        locs.append((lid, lat, lng))
    await svc.update("Patient", "Pat-own", {
        "resourceType": "Patient", "id": "Pat-own",
        "generalPractitioner": [{"reference": "Practitioner/P1"}]})
    for i in range(n):
        pid, rid, sid = f"P{i}", f"R{i}", f"S{i}"
        await svc.update("Practitioner", pid, {
            "resourceType": "Practitioner", "id": pid, "name": [{"family": f"Doc{i}"}],
            "communication": [{"coding": [{"system": "urn:ietf:bcp:47",
                                           "code": rng.choice(["en", "es"])}]}]})
        await svc.update("PractitionerRole", rid, {
            "resourceType": "PractitionerRole", "id": rid,
            "practitioner": {"reference": f"Practitioner/{pid}"},
            "specialty": [{"coding": [{"system": SNOMED, "code": rng.choice(SPECS)}]}],
            "extension": [
                {"url": "http://fhirserver.dev/StructureDefinition/accepting-new-patients",
                 "valueBoolean": rng.random() < 0.6},
                {"url": "http://fhirserver.dev/StructureDefinition/accepted-insurance",
                 "valueIdentifier": {"system": "urn:plans", "value": rng.choice(PLANS)}},
            ]})
        li = rng.randrange(len(locs))
        lid = locs[li][0]
        types = rng.sample(CODES, rng.randint(1, 3))
        exts = []
        for _ in range(rng.randint(1, 2)):
            start = rng.choice(range(7 * 60, 12 * 60, 15))
            end = min(start + rng.choice(range(120, 8 * 60, 15)), 20 * 60)
            subs: list[dict[str, Any]] = [{"url": "daysOfWeek", "valueCode": d}
                                          for d in rng.sample(DAYS, rng.randint(2, 6))]
            subs += [{"url": "start", "valueTime": hhmm(start)},
                     {"url": "end", "valueTime": hhmm(end)},
                     {"url": "location", "valueReference": {"reference": f"Location/{lid}"}}]
            subs += [{"url": "visitType", "valueCoding": {"system": VISIT, "code": t}}
                     for t in types]
            bs = start + 90
            if rng.random() < 0.5 and bs + 30 <= end:
                subs.append({"url": "break", "extension": [
                    {"url": "start", "valueTime": hhmm(bs)},
                    {"url": "end", "valueTime": hhmm(bs + 30)}]})
            if rng.random() < 0.3:
                subs.append({"url": "bufferMinutes", "valueInteger": rng.choice([5, 10, 15])})
            if rng.random() < 0.3:
                subs.append({"url": "minNoticeMinutes", "valueInteger": rng.choice([60, 1440])})
            if rng.random() < 0.3:
                subs.append({"url": "maxAdvanceDays", "valueInteger": rng.choice([3, 7])})
            if rng.random() < 0.2:
                subs.append({"url": "alignMinutes", "valueInteger": 15})
            if rng.random() < 0.2:
                subs.append({"url": "duration", "extension": [
                    {"url": "visitType", "valueCoding": {"system": VISIT, "code": types[0]}},
                    {"url": "minutes", "valueInteger": 25}]})
            exts.append({"url": RULE, "extension": subs})
        actors = [{"reference": f"Practitioner/{pid}"}, {"reference": f"PractitionerRole/{rid}"}]
        if rng.random() < 0.3:
            actors.append({"reference": f"Location/{lid}r"})
        await svc.update("Schedule", sid, {
            "resourceType": "Schedule", "id": sid, "active": True, "actor": actors,
            "serviceType": [{"coding": [{"system": VISIT, "code": t}]} for t in types],
            "specialty": [{"coding": [{"system": SNOMED, "code": SPECS[0]}]}],
            "extension": exts})
        now = ctx.clock.now()
        for _ in range(rng.randint(0, 2)):
            day = (now + timedelta(days=rng.randint(1, 10))).astimezone(
                ZoneInfo(ZONES[li])).replace(hour=rng.choice([10, 13, 16]), minute=0,
                                             second=0, microsecond=0)
            status = rng.choice(["busy-unavailable", "free"])
            await svc.create("Slot", {
                "resourceType": "Slot", "schedule": {"reference": f"Schedule/{sid}"},
                "status": status, "start": day.isoformat(),
                "end": (day + timedelta(minutes=90)).isoformat()})
    return {"locs": locs}


async def book_some(ctx: AppContext, rng: random.Random, count: int) -> list[str]:
    """Book (and hold) random offers through $find/$book and $hold; returns booked ids."""
    now = ctx.clock.now()
    offers = await ctx.scheduling.finder.naive_proposals(
        FindCriteria(start=now, end=now + timedelta(days=12), count=100), now, 400)
    booked: list[str] = []
    for p in rng.sample(offers, min(count, len(offers))):
        appt = proposed_appointment(p, None, [])
        values = {"appointment": [appt]}
        try:
            if rng.random() < 0.25:
                res = await ctx.scheduling.hold(values)
            else:
                res = await ctx.scheduling.book(values, None, b"")
        except Exception:
            continue
        import orjson

        booked.append(orjson.loads(res.body)["entry"][0]["resource"]["id"])
    return booked


PLANS = ("PPO", "HMO")


def criteria(rng: random.Random, now: datetime, locs: list[tuple[str, float, float]]
             ) -> FindCriteria:
    start = now + timedelta(hours=rng.choice([0, 5, 30]))
    c = FindCriteria(start=start, end=start + timedelta(days=rng.choice([1, 3, 14])),
                     count=rng.choice([5, 20, 60]))
    if rng.random() < 0.4:
        c.visit_types = rng.sample(CODES, rng.randint(1, 2))
    if rng.random() < 0.4:
        c.specialties = [rng.choice(SPECS)]
    if rng.random() < 0.3:
        _, lat, lng = rng.choice(locs)
        c.near = (lat, lng, 50.0)
    if rng.random() < 0.2:
        c.languages = ["es"]
    if rng.random() < 0.2:
        c.locations = [rng.choice(locs)[0]]
    if rng.random() < 0.2:
        c.practitioners = [f"P{rng.randrange(12)}"]
    if rng.random() < 0.3:
        c.accepting_new_patients = True
    if rng.random() < 0.2:
        c.coverage = [rng.choice([f"urn:plans|{p}" for p in PLANS] + list(PLANS))]
    if rng.random() < 0.2:
        c.patient = "Pat-own"
    return c


async def assert_same(ctx: AppContext, rng: random.Random, locs: list[Any], rounds: int) -> None:
    finder = ctx.scheduling.finder
    for _ in range(rounds):
        now = ctx.clock.now()
        c = criteria(rng, now, locs)
        fast = await finder.proposals(c, now, c.count)
        slow = await finder.naive_proposals(c, now, c.count)
        assert [key(p) for p in fast] == [key(p) for p in slow], c


async def test_index_equals_engine_on_random_data(ctx: AppContext) -> None:
    rng = random.Random(20261201)
    info = await random_system(ctx, rng)
    assert ctx.availability is not None and ctx.availability.index is not None
    await assert_same(ctx, rng, info["locs"], 25)  # built empty, then kept by the hooks
    await book_some(ctx, rng, 25)
    await assert_same(ctx, rng, info["locs"], 25)
    assert isinstance(ctx.clock, SettableClock)
    ctx.clock.advance(timedelta(minutes=7))  # holds expire: their time is offered again
    await assert_same(ctx, rng, info["locs"], 15)
    await ctx.availability.rebuild()  # and the same from a full build
    await assert_same(ctx, rng, info["locs"], 25)
    stats = ctx.availability.index.stats()
    assert stats.schedules == 12 and stats.offers > 0


async def test_repeated_criteria_follow_changed_facts(ctx: AppContext) -> None:
    """The index keeps each criteria's masks between queries: a moved Location, a changed
    specialty or a deactivated Schedule must change the answer to the very same question."""
    rng = random.Random(11)
    info = await random_system(ctx, rng, n=6)
    finder, svc = ctx.scheduling.finder, ctx.service
    lid, lat, lng = info["locs"][0]
    now = ctx.clock.now()
    near = FindCriteria(start=now, end=now + timedelta(days=14), count=60,
                        near=(lat, lng, 50.0))
    spec = FindCriteria(start=now, end=now + timedelta(days=14), count=60,
                        specialties=[SPECS[1]])

    async def same(c: FindCriteria) -> list[tuple[Any, ...]]:
        fast = await finder.proposals(c, now, c.count)
        slow = await finder.naive_proposals(c, now, c.count)
        assert [key(p) for p in fast] == [key(p) for p in slow], c
        return [key(p) for p in fast]

    before_near, before_spec = await same(near), await same(spec)
    assert before_near
    assert await same(near) == before_near  # answered from the kept masks
    loc = orjson.loads((await svc.read("Location", lid)).raw)
    loc["position"] = {"latitude": lat + 10, "longitude": lng}  # ~1100 km away
    await svc.update("Location", lid, loc)
    assert await same(near) == []
    for i in range(6):
        role = orjson.loads((await svc.read("PractitionerRole", f"R{i}")).raw)
        role["specialty"] = [{"coding": [{"system": SNOMED, "code": SPECS[1]}]}]
        await svc.update("PractitionerRole", f"R{i}", role)
    after_spec = await same(spec)
    assert after_spec and after_spec != before_spec
    for i in range(6):
        sched = orjson.loads((await svc.read("Schedule", f"S{i}")).raw)
        sched["active"] = False
        await svc.update("Schedule", f"S{i}", sched)
    assert await same(spec) == []


async def test_many_slot_writes_in_one_commit_match_the_engine(ctx: AppContext) -> None:
    """Slot writes committed together reach the index as one delivery, which re-expands
    each Schedule once: creates on several Schedules, a Slot moved from one Schedule to
    another and a deleted Slot, in one transaction and in one batch of creates."""
    rng = random.Random(5)
    info = await random_system(ctx, rng, n=4)
    svc, now = ctx.service, ctx.clock.now()

    def slot(sid: str, day: int, hour: int, status: str) -> dict[str, Any]:
        start = (now + timedelta(days=day)).replace(hour=hour, minute=0, second=0,
                                                    microsecond=0)
        return {"resourceType": "Slot", "schedule": {"reference": f"Schedule/{sid}"},
                "status": status, "start": start.isoformat(),
                "end": (start + timedelta(minutes=60)).isoformat()}

    made = [await svc.create("Slot", slot("S0", 2, 14, "busy-unavailable")),
            await svc.create("Slot", slot("S1", 3, 15, "busy-unavailable"))]
    await assert_same(ctx, rng, info["locs"], 10)

    async def together(session: Any) -> None:
        for i in range(12):
            status = "busy-unavailable" if i % 3 else "busy-tentative"
            await svc.create_in(slot(f"S{i % 4}", 1 + i % 5, 12 + i % 6, status), session)
        moved = {**slot("S2", 2, 14, "busy-unavailable"), "id": made[0].stored.id}
        await svc.update_in(moved, made[0].stored.id, session)
        await svc.delete_in("Slot", made[1].stored.id, session)

    async def slots_agree() -> None:
        index = ctx.availability.index if ctx.availability else None
        assert index is not None
        for sid in ("S0", "S1", "S2", "S3"):
            stored = await ctx.store.find("Slot", {"idx.schedule": f"Schedule/{sid}"},
                                          projection={"raw": 1})
            kept = index.entries[index.sched_ix[sid]].slots
            assert sorted((x["id"], x["meta"]["versionId"]) for x in kept) == sorted(
                (d["_id"], str(orjson.loads(d["raw"])["meta"]["versionId"])) for d in stored)

    await ctx.mongo.transaction(together)
    await slots_agree()
    await assert_same(ctx, rng, info["locs"], 25)
    await asyncio.gather(*(svc.create("Slot", slot(f"S{i % 4}", 4 + i % 3, 9 + i % 8,
                                                   "busy-unavailable")) for i in range(10)))
    await slots_agree()
    await assert_same(ctx, rng, info["locs"], 25)
    assert ctx.availability is not None
    await ctx.availability.rebuild()  # the same from a full build
    await assert_same(ctx, rng, info["locs"], 15)


async def first_offer(ctx: AppContext, sid: str) -> Proposal | None:
    now = ctx.clock.now()
    found = await ctx.scheduling.finder.proposals(
        FindCriteria(start=now, end=now + timedelta(days=7), count=1), now, 1, only={sid})
    return found[0] if found else None


async def test_booking_disappears_and_cancellation_reappears_at_once(ctx: AppContext) -> None:
    rng = random.Random(7)
    await random_system(ctx, rng, n=3)
    offer = await first_offer(ctx, "S0")
    assert offer is not None
    appt = proposed_appointment(offer, None, [])
    import orjson

    res = await ctx.scheduling.book({"appointment": [appt]}, None, b"")
    booked = orjson.loads(res.body)["entry"][0]["resource"]
    after = await first_offer(ctx, "S0")
    assert after is None or after.candidate.start != offer.candidate.start
    booked["status"] = "cancelled"
    await ctx.service.update("Appointment", booked["id"], booked)
    again = await first_offer(ctx, "S0")
    assert again is not None and again.candidate == offer.candidate


async def test_another_process_sees_changes_through_redis(
    ctx: AppContext, embedded: EmbeddedServers
) -> None:
    rng = random.Random(11)
    await random_system(ctx, rng, n=3)
    other = await AppContext.start(settings_for(embedded, ctx.settings.db_name), ctx.clock)
    try:
        offer = await first_offer(other, "S1")
        assert offer is not None
        import orjson

        res = await ctx.scheduling.book(
            {"appointment": [proposed_appointment(offer, None, [])]}, None, b"")
        booked = orjson.loads(res.body)["entry"][0]["resource"]

        async def poll(want_free: bool) -> float:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 5.0:  # deadline, no fixed sleeps
                got = await first_offer(other, "S1")
                free = got is not None and got.candidate.start == offer.candidate.start
                if free == want_free:
                    return time.monotonic() - t0
                await other.availability.redis.ping()  # yield to the stream reader
            raise AssertionError(f"not visible in the other process (free={want_free})")

        assert await poll(want_free=False) < 5.0
        booked["status"] = "cancelled"
        await ctx.service.update("Appointment", booked["id"], booked)
        assert await poll(want_free=True) < 5.0
        # a Schedule change travels too: deactivate S1, the other process stops offering it
        sched = (await ctx.scheduling.finder.repo.read("Schedule", "S1")) or {}
        sched["active"] = False
        await ctx.service.update("Schedule", "S1", sched)
        t0 = time.monotonic()
        while await first_offer(other, "S1") is not None:
            assert time.monotonic() - t0 < 5.0
            await other.availability.redis.ping()
    finally:
        await other.stop()


def test_load_claims_grows_the_busy_table() -> None:
    """More actors than the initial table holds: each claim still lands in its own row."""
    base = datetime(2026, 12, 1, tzinfo=UTC)
    index = AvailabilityIndex(base, 2, 15)
    rows = [(f"Practitioner/p{i}", base + timedelta(minutes=15 * (i % 90)), "booking", None)
            for i in range(1000)]
    assert index.load_claims(rows, base) == 1000
    window = Interval(base, base + timedelta(days=1))
    for i in (0, 500, 999):
        start = base + timedelta(minutes=15 * (i % 90))
        busy = index.busy_intervals([f"Practitioner/p{i}"], window)
        assert busy == [Interval(start, start + timedelta(minutes=15))]
