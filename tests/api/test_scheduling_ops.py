"""$find, $hold, $book over HTTP: offers, holds that expire, bookings, reschedules."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.api.conftest import RunningServer
from tests.api.scheduling_factories import (
    FHIR,
    bookable_practitioner,
    hospital,
    patient_id,
    post,
    rule,
)

OP = {"Content-Type": "application/fhir+json"}


def window(days: int = 1) -> dict[str, str]:
    start = (datetime.now(UTC) + timedelta(days=days)).replace(hour=0, minute=0, second=0,
                                                               microsecond=0)
    return {"start": start.isoformat(), "end": (start + timedelta(days=1)).isoformat()}


async def find(client: httpx.AsyncClient, doc: str, **extra: str) -> list[dict[str, Any]]:
    r = await client.get("/Appointment/$find",
                         params={**window(), "practitioner": f"Practitioner/{doc}", **extra})
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "searchset"
    return [e["resource"] for e in bundle.get("entry", [])]


def params(*pairs: tuple[str, Any]) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for name, value in pairs:
        if isinstance(value, dict):
            out.append({"name": name, "resource": value})
        elif isinstance(value, bool):
            out.append({"name": name, "valueBoolean": value})
        else:
            out.append({"name": name, "valueString": value})
    return {"resourceType": "Parameters", "parameter": out}


async def test_find_offers_rule_slots_earliest_first(client: httpx.AsyncClient) -> None:
    doc, sched, _ = await bookable_practitioner(client)
    offers = await find(client, doc)
    assert len(offers) == 16  # 09:00-17:00 in 30-minute FOLLOW_UP slots
    starts = [o["start"] for o in offers]
    assert starts == sorted(starts)
    first = offers[0]
    assert first["status"] == "proposed"
    assert first["start"][11:19] == "09:00:00" and first["start"][19:] in ("-05:00", "-04:00")
    assert first["minutesDuration"] == 30
    assert {"reference": f"Practitioner/{doc}"} in [p["actor"] for p in first["participant"]]
    slot = await client.get(f"/{first['slot'][0]['reference']}")
    assert slot.status_code == 200 and slot.json()["status"] == "free"
    assert slot.json()["schedule"]["reference"] == f"Schedule/{sched}"


async def test_find_bad_input_is_400(client: httpx.AsyncClient) -> None:
    r = await client.get("/Appointment/$find", params={"_count": "0"})
    assert r.status_code == 400
    r = await client.get("/Appointment/$find", params={"end": "2020-01-01"})  # before now
    assert r.status_code == 400
    w = window()
    r = await client.get("/Appointment/$find", params={"start": w["end"], "end": w["start"]})
    assert r.status_code == 400
    r = await client.get("/Appointment/$find", params={**w, "near": "north"})
    assert r.status_code == 400


async def test_hold_blocks_then_expires(client: httpx.AsyncClient, server: RunningServer) -> None:
    doc, _, _ = await bookable_practitioner(client)
    offer = (await find(client, doc))[0]
    pat = await patient_id(client)
    held = await client.post("/Appointment/$hold", json=params(
        ("appointment", offer), ("patient", f"Patient/{pat}")), headers=OP)
    assert held.status_code == 201, held.text
    assert "expires" in held.headers
    appt = held.json()["entry"][0]["resource"]
    assert appt["status"] == "pending"
    assert offer["start"] not in [o["start"] for o in await find(client, doc)]
    again = await client.post("/Appointment/$hold", json=params(("appointment", offer)),
                              headers=OP)
    assert again.status_code == 409
    server.clock.advance(timedelta(minutes=6))
    assert offer["start"] in [o["start"] for o in await find(client, doc)]
    late = await client.post("/Appointment/$book", json=params(
        ("appointment-id", appt["id"]), ("patient", f"Patient/{pat}")), headers=OP)
    assert late.status_code == 409


async def test_book_held_appointment_only_for_its_patient(client: httpx.AsyncClient) -> None:
    doc, _, _ = await bookable_practitioner(client)
    offer = (await find(client, doc))[1]
    pat, other = await patient_id(client), await patient_id(client)
    held = (await client.post("/Appointment/$hold", json=params(
        ("appointment", offer), ("patient", f"Patient/{pat}")), headers=OP)).json()
    appt_id = held["entry"][0]["resource"]["id"]
    stolen = await client.post("/Appointment/$book", json=params(
        ("appointment-id", appt_id), ("patient", f"Patient/{other}")), headers=OP)
    assert stolen.status_code == 409
    booked = await client.post("/Appointment/$book", json=params(
        ("appointment-id", appt_id), ("patient", f"Patient/{pat}")), headers=OP)
    assert booked.status_code in (200, 201), booked.text
    stored = (await client.get(f"/Appointment/{appt_id}")).json()
    assert stored["status"] == "booked"
    assert all(e["url"] != "http://fhirserver.dev/StructureDefinition/hold-expires"
               for e in stored.get("extension", []))


async def test_book_is_idempotent_and_conflicts_offer_alternatives(
    client: httpx.AsyncClient,
) -> None:
    doc, _, _ = await bookable_practitioner(client)
    offer = (await find(client, doc))[2]
    pat = await patient_id(client)
    body = params(("appointment", offer), ("patient", f"Patient/{pat}"))
    hdr = {**OP, "Idempotency-Key": f"k-{pat}"}
    first = await client.post("/Appointment/$book", json=body, headers=hdr)
    retry = await client.post("/Appointment/$book", json=body, headers=hdr)
    assert first.status_code == 201, first.text
    assert retry.status_code == 201 and retry.content == first.content
    other = await patient_id(client)
    clash = await client.post("/Appointment/$book", json=params(
        ("appointment", offer), ("patient", f"Patient/{other}")), headers=OP)
    assert clash.status_code == 409
    outcome = clash.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome.get("contained"), "409 lists next available alternatives"
    booked = (await client.get("/Appointment", params={
        "practitioner": doc, "status": "booked"})).json()
    assert booked["total"] == 1


async def test_parallel_books_of_one_offer_have_one_winner(client: httpx.AsyncClient) -> None:
    doc, _, _ = await bookable_practitioner(client)
    offer = (await find(client, doc))[3]
    pats = [await patient_id(client) for _ in range(20)]
    results = await asyncio.gather(*(client.post("/Appointment/$book", json=params(
        ("appointment", offer), ("patient", f"Patient/{p}")), headers=OP) for p in pats))
    codes = sorted(r.status_code for r in results)
    assert codes.count(201) == 1 and codes.count(409) == 19, codes


async def test_parallel_books_of_one_offer_id_never_replace_the_winner(
    client: httpx.AsyncClient,
) -> None:
    """By `appointment-id`, a generated offer's Appointment takes the offer's id: a racer
    that passed the availability check just before the winner committed must get 409, not
    update the winner's booking into its own (an acknowledged booking silently lost)."""
    doc, _, _ = await bookable_practitioner(client)
    offer = (await find(client, doc))[4]
    pats = [await patient_id(client) for _ in range(20)]
    results = await asyncio.gather(*(client.post("/Appointment/$book", json=params(
        ("appointment-id", offer["id"]), ("patient", f"Patient/{p}")), headers=OP)
        for p in pats))
    codes = sorted(r.status_code for r in results)
    assert codes.count(201) == 1 and codes.count(409) == 19, codes
    winner = next(r.json() for r in results if r.status_code == 201)
    winner = winner["entry"][0]["resource"] if winner["resourceType"] == "Bundle" else winner
    stored = (await client.get(f"/Appointment/{winner['id']}")).json()
    assert stored["meta"]["versionId"] == winner["meta"]["versionId"]
    assert stored["participant"] == winner["participant"]


async def test_reschedule_is_atomic(client: httpx.AsyncClient) -> None:
    doc, _, _ = await bookable_practitioner(client)
    offers = await find(client, doc)
    pat = await patient_id(client)
    old = (await client.post("/Appointment/$book", json=params(
        ("appointment", offers[0]), ("patient", f"Patient/{pat}")), headers=OP)).json()
    old_id = old["entry"][0]["resource"]["id"]
    moved = await client.post("/Appointment/$book", json=params(
        ("appointment", offers[4]), ("patient", f"Patient/{pat}"),
        ("cancelled-appt-id", old_id)), headers=OP)
    assert moved.status_code == 201, moved.text
    assert (await client.get(f"/Appointment/{old_id}")).json()["status"] == "cancelled"
    assert offers[0]["start"] in [o["start"] for o in await find(client, doc)]
    # Rescheduling onto taken time fails as a whole: the original stays booked.
    new_id = moved.json()["entry"][0]["resource"]["id"]
    other = await patient_id(client)
    await client.post("/Appointment/$book", json=params(
        ("appointment", offers[6]), ("patient", f"Patient/{other}")), headers=OP)
    fail = await client.post("/Appointment/$book", json=params(
        ("appointment", offers[6]), ("patient", f"Patient/{pat}"),
        ("cancelled-appt-id", new_id)), headers=OP)
    assert fail.status_code == 409
    assert (await client.get(f"/Appointment/{new_id}")).json()["status"] == "booked"


async def test_first_available_books_the_earliest_free_time(client: httpx.AsyncClient) -> None:
    doc, _, _ = await bookable_practitioner(client)
    offers = await find(client, doc)
    pat = await patient_id(client)
    w = window()
    r = await client.post("/Appointment/$book", json=params(
        ("first-available", True), ("practitioner", f"Practitioner/{doc}"),
        ("start", w["start"]), ("end", w["end"]), ("patient", f"Patient/{pat}")), headers=OP)
    assert r.status_code == 201, r.text
    assert r.json()["entry"][0]["resource"]["start"] == offers[0]["start"]


async def test_direct_post_cannot_bypass_claims(client: httpx.AsyncClient) -> None:
    doc, _, _ = await bookable_practitioner(client)
    offer = (await find(client, doc))[5]
    pat = await patient_id(client)
    await client.post("/Appointment/$book", json=params(
        ("appointment", offer), ("patient", f"Patient/{pat}")), headers=OP)
    direct = {**offer, "status": "booked"}
    direct.pop("id")
    r = await client.post("/Appointment", json=direct, headers=FHIR)
    assert r.status_code == 409


async def test_equal_length_visit_types_share_one_slot(client: httpx.AsyncClient) -> None:
    loc = await post(client, hospital())
    doc = await post(client, {"resourceType": "Practitioner", "name": [{"family": "Twenty"}]})
    sched = await post(client, {
        "resourceType": "Schedule",
        "actor": [{"reference": f"Practitioner/{doc}"}],
        "extension": [rule(loc, "09:00:00", "10:00:00", ("URGENT_CARE", "TELEHEALTH"))],
    })
    w = window()
    r = await client.get("/Slot", params={"schedule": f"Schedule/{sched}", "status": "free",
                                          "start": [f"ge{w['start']}", f"lt{w['end']}"]})
    slots = [e["resource"] for e in r.json()["entry"]]
    assert len(slots) == 3 and len({s["id"] for s in slots}) == 3  # 09:00, 09:20, 09:40
    codes = {c["code"] for st in slots[0]["serviceType"] for c in st["coding"]}
    assert codes == {"URGENT_CARE", "TELEHEALTH"}
    offers = await find(client, doc)
    assert [o["start"][11:16] for o in offers] == ["09:00", "09:20", "09:40"]
    assert len(offers[0]["serviceType"]) == 2
