"""No double booking over HTTP: the claims index under concurrent writes (docs/scheduling.md).

Every test uses its own practitioner/room/device ids (the API tests share one database)
and ends with the invariant scan over that whole database.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from fhirserver.phi.codec import PhiCodec
from fhirserver.storage.claims import find_overlaps
from tests.api.conftest import RunningServer
from tests.api.factories import uid
from tests.api.scheduling_factories import bookable_practitioner, patient_id

FHIR = {"Content-Type": "application/fhir+json"}
PATCH = {"Content-Type": "application/json-patch+json"}
HOLD_EXPIRES = "http://fhirserver.dev/StructureDefinition/hold-expires"
Doc = dict[str, Any]


def at(hhmm: str, day: str = "2027-03-01") -> str:
    return f"{day}T{hhmm}:00Z"


def appt(
    start: str, end: str, *actors: str, status: str = "booked", patient: str | None = None
) -> Doc:
    refs = [patient or f"Patient/pat-{uid()}", *actors]
    return {
        "resourceType": "Appointment",
        "status": status,
        "start": start,
        "end": end,
        "participant": [{"actor": {"reference": r}, "status": "accepted"} for r in refs],
    }


def doc() -> str:
    return f"Practitioner/doc-{uid()}"


async def post(client: httpx.AsyncClient, body: Doc) -> httpx.Response:
    return await client.post(f"/{body['resourceType']}", json=body, headers=FHIR)


async def book(client: httpx.AsyncClient, body: Doc) -> Doc:
    r = await post(client, body)
    assert r.status_code == 201, r.text
    created: Doc = r.json()
    return created


def assert_conflict(r: httpx.Response, resource: str | None = None) -> Doc:
    assert r.status_code == 409, r.text
    outcome: Doc = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue: Doc = outcome["issue"][0]
    assert issue["code"] == "conflict"
    if resource is not None:
        assert resource in issue["diagnostics"]
    return issue


@pytest.fixture
async def scan(server: RunningServer, mongo_client: AsyncMongoClient[Doc]) -> AsyncIterator[None]:
    """After the test: the invariant scan over the API database finds nothing."""
    yield
    db = mongo_client[server.settings.db_name]
    # Appointments are sealed at rest (docs/phi.md): the scan opens them with the server's key.
    cipher = PhiCodec.from_settings(server.settings).cipher
    problems = await find_overlaps(db, now=server.clock.now(), cipher=cipher)
    assert problems == []


async def test_200_concurrent_bookings_exactly_one_wins(server: RunningServer, scan: None) -> None:
    """Two rounds: the first also warms the server's connection pool, so in the second
    up to maxPoolSize transactions race to the insert (WriteConflict, retried, then 409)."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120, limits=limits) as c:
        for _round in range(2):
            practitioner = doc()
            body = [appt(at("09:00"), at("09:30"), practitioner) for _ in range(200)]
            began = time.monotonic()
            responses = await asyncio.gather(*(post(c, b) for b in body))
            elapsed = time.monotonic() - began
            statuses = Counter(r.status_code for r in responses)
            assert statuses == {201: 1, 409: 199}, statuses
            for r in responses:
                if r.status_code == 409:
                    issue = assert_conflict(r, practitioner)
                    assert issue["expression"] == ["Appointment.participant[1].actor"]
            print(f"200 concurrent bookings: {elapsed:.1f}s")
            assert elapsed < 60


async def test_mixed_durations_collide_adjacent_do_not(
    client: httpx.AsyncClient, scan: None
) -> None:
    p = doc()
    await book(client, appt(at("09:00"), at("10:00"), p))
    issue = assert_conflict(await post(client, appt(at("09:30"), at("10:00"), p)), p)
    assert "09:30" in issue["diagnostics"] and "10:00" in issue["diagnostics"]
    q = doc()
    await book(client, appt(at("09:00"), at("09:30"), q))
    await book(client, appt(at("09:30"), at("10:00"), q))
    # Off the granule grid: 10:02-10:07 and 10:06-10:20 still overlap.
    await book(client, appt(at("10:02"), at("10:07"), q))
    assert_conflict(await post(client, appt(at("10:06"), at("10:20"), q)))
    await book(client, appt(at("10:07"), at("10:20"), f"Location/room-{uid()}"))


async def test_multi_resource_all_or_nothing(client: httpx.AsyncClient, scan: None) -> None:
    p, room, mri = doc(), f"Location/room-{uid()}", f"Device/mri-{uid()}"
    await book(client, appt(at("11:00"), at("11:30"), doc(), room))
    r = await post(client, appt(at("11:15"), at("11:45"), p, room, mri))
    issue = assert_conflict(r, room)
    assert issue["expression"] == ["Appointment.participant[2].actor"]
    # Neither the practitioner nor the device got anything: both are still free.
    await book(client, appt(at("11:15"), at("11:45"), p))
    await book(client, appt(at("11:15"), at("11:45"), mri))


async def test_practitioner_role_claims_its_practitioner(
    client: httpx.AsyncClient, scan: None
) -> None:
    prac = await book(
        client, {"resourceType": "Practitioner", "name": [{"family": f"Role{uid()}"}]}
    )
    p = f"Practitioner/{prac['id']}"
    role = await book(
        client,
        {"resourceType": "PractitionerRole", "active": True, "practitioner": {"reference": p}},
    )
    schedule = await book(
        client, {"resourceType": "Schedule", "active": True, "actor": [{"reference": p}]}
    )
    assert schedule["id"]
    r_ref = f"PractitionerRole/{role['id']}"
    await book(client, appt(at("13:00"), at("13:30"), p))
    issue = assert_conflict(await post(client, appt(at("13:10"), at("13:20"), r_ref)), p)
    assert issue["expression"] == ["Appointment.participant[1].actor"]
    # And the other way round.
    await book(client, appt(at("14:00"), at("14:30"), r_ref))
    assert_conflict(await post(client, appt(at("14:00"), at("14:30"), p)), p)
    # A role nobody knows cannot be booked silently (its practitioner could not be guarded).
    unknown = await post(client, appt(at("15:00"), at("15:30"), f"PractitionerRole/{uid()}"))
    assert unknown.status_code == 422, unknown.text


async def test_cancel_by_put_patch_and_delete_frees_the_time(
    client: httpx.AsyncClient, scan: None
) -> None:
    p = doc()
    first = await book(client, appt(at("09:00"), at("09:30"), p))
    assert_conflict(await post(client, appt(at("09:00"), at("09:30"), p)))
    cancelled = {
        **first,
        "status": "cancelled",
        "cancelationReason": {"coding": [{"code": "pat"}]},
    }
    r = await client.put(f"/Appointment/{first['id']}", json=cancelled, headers=FHIR)
    assert r.status_code == 200, r.text
    second = await book(client, appt(at("09:00"), at("09:30"), p))
    ops = [
        {"op": "replace", "path": "/status", "value": "cancelled"},
        {"op": "add", "path": "/cancelationReason", "value": {"text": "patient called"}},
    ]
    r = await client.patch(f"/Appointment/{second['id']}", json=ops, headers=PATCH)
    assert r.status_code == 200, r.text
    third = await book(client, appt(at("09:00"), at("09:30"), p))
    r = await client.delete(f"/Appointment/{third['id']}")
    assert r.status_code in (200, 204), r.text
    fourth = await book(client, appt(at("09:00"), at("09:30"), p))
    # Re-activating a cancelled appointment claims again, and collides.
    r = await client.put(
        f"/Appointment/{first['id']}", json={**first, "status": "booked"}, headers=FHIR
    )
    assert_conflict(r, p)
    assert fourth["id"]


async def test_noshow_and_entered_in_error_free_the_time(
    client: httpx.AsyncClient, scan: None
) -> None:
    p = doc()
    for status in ("noshow", "entered-in-error"):
        booked = await book(client, appt(at("16:00"), at("16:30"), p))
        r = await client.put(
            f"/Appointment/{booked['id']}", json={**booked, "status": status}, headers=FHIR
        )
        assert r.status_code == 200, r.text
    await book(client, appt(at("16:00"), at("16:30"), p))


async def test_transaction_bundle_with_overlap_writes_nothing(
    client: httpx.AsyncClient, scan: None
) -> None:
    p = doc()
    entries = [
        {"resource": appt(at(s), at(e), p), "request": {"method": "POST", "url": "Appointment"}}
        for s, e in (("09:00", "09:30"), ("09:20", "09:50"))
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    r = await client.post("", json=bundle, headers=FHIR)
    assert_conflict(r, p)
    found = (await client.get("/Appointment", params={"practitioner": p})).json()
    assert found["total"] == 0
    await book(client, appt(at("09:00"), at("09:30"), p))


async def test_reschedule_race_exactly_one_holds_the_time(
    server: RunningServer, scan: None
) -> None:
    p = doc()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120, limits=limits) as c:
        a = await book(c, appt(at("09:00"), at("09:30"), p))
        moved = {**a, "start": at("10:00"), "end": at("10:30")}
        move = c.put(f"/Appointment/{a['id']}", json=moved, headers=FHIR)
        others = [post(c, appt(at("10:00"), at("10:30"), p)) for _ in range(50)]
        results = await asyncio.gather(move, *others)
    ok = [r for r in results if r.status_code in (200, 201)]
    assert len(ok) == 1, Counter(r.status_code for r in results)
    assert all(r.status_code == 409 for r in results if r not in ok)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c2:
        bundle = (await c2.get("/Appointment", params={"practitioner": p})).json()
    starts = sorted(e["resource"]["start"] for e in bundle["entry"])
    if results[0].status_code == 200:  # the move won: 09:00 is free again
        assert starts == ["2027-03-01T10:00:00Z"]
    else:
        assert starts == ["2027-03-01T09:00:00Z", "2027-03-01T10:00:00Z"]


def hold(start: str, end: str, actor: str, expires: datetime) -> Doc:
    body = appt(start, end, actor, status="pending")
    body["extension"] = [{"url": HOLD_EXPIRES, "valueInstant": expires.isoformat()}]
    return body


async def test_expired_hold_does_not_block_live_hold_does(
    client: httpx.AsyncClient, server: RunningServer, scan: None
) -> None:
    p = doc()
    now = server.clock.now()
    await book(client, hold(at("09:00"), at("09:30"), p, now - timedelta(minutes=1)))
    await book(client, appt(at("09:00"), at("09:30"), p))
    q = doc()
    held = await book(client, hold(at("09:00"), at("09:30"), q, now + timedelta(hours=1)))
    issue = assert_conflict(await post(client, appt(at("09:15"), at("09:45"), q)), q)
    assert "held" in issue["diagnostics"]
    # The holder books: pending -> booked keeps the time (holds become bookings).
    booked = {k: v for k, v in held.items() if k != "extension"}
    r = await client.put(
        f"/Appointment/{held['id']}", json={**booked, "status": "booked"}, headers=FHIR
    )
    assert r.status_code == 200, r.text
    assert_conflict(await post(client, appt(at("09:15"), at("09:45"), q)), q)


async def test_booked_without_times_is_422(client: httpx.AsyncClient, scan: None) -> None:
    body = appt(at("09:00"), at("09:30"), doc())
    del body["end"]
    r = await post(client, body)
    assert r.status_code == 422, r.text
    backwards = await post(client, appt(at("09:30"), at("09:00"), doc()))
    assert backwards.status_code == 422, backwards.text
    proposed = appt(at("09:00"), at("09:30"), doc(), status="proposed")
    del proposed["start"], proposed["end"]
    assert (await post(client, proposed)).status_code == 201


async def test_racers_for_one_offer_one_wins_late_ones_get_alternatives(
    server: RunningServer, client: httpx.AsyncClient, scan: None
) -> None:
    """40 patients $book one generated offer at once: one 201, 39 409s that each list the
    next available times; a $book after the winner committed is refused the same way (by a
    claims read, before any transaction); nothing is left waiting on the offer."""
    doc_id, _, _ = await bookable_practitioner(client)
    start = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0,
                                                             microsecond=0)
    found = await client.get("/Appointment/$find", params={
        "practitioner": f"Practitioner/{doc_id}", "start": start.isoformat(),
        "end": (start + timedelta(days=1)).isoformat()})
    offer = found.json()["entry"][2]["resource"]

    def body(patient: str) -> Doc:
        return {"resourceType": "Parameters", "parameter": [
            {"name": "appointment", "resource": offer},
            {"name": "patient", "valueString": f"Patient/{patient}"}]}

    pats = [await patient_id(client) for _ in range(40)]
    results = await asyncio.gather(*(client.post("/Appointment/$book", json=body(p),
                                                 headers=FHIR) for p in pats))
    codes = Counter(r.status_code for r in results)
    assert codes == {201: 1, 409: 39}, codes
    for r in results:
        if r.status_code == 409:
            assert_conflict(r)
            assert r.json().get("contained"), "each 409 lists alternatives"
    late = await client.post("/Appointment/$book", json=body(await patient_id(client)),
                             headers=FHIR)
    assert "no longer available" in assert_conflict(late)["diagnostics"]
    assert offer["start"] not in [c["start"] for c in late.json()["contained"]]
    assert len(server.app.state.ctx.scheduling._offers) == 0
