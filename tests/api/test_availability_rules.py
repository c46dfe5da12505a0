"""Availability rules over HTTP: write-time checks (422) and what $find / Slot search offer.

Operating hours bound everything: a rule or free Slot outside a Location's
hoursOfOperation is refused with 422 and nothing is written; breaks and busy-unavailable
Slots are never offered; generated Slots found by search are readable by id.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from tests.api.factories import uid
from tests.api.scheduling_factories import FHIR, RULE, VISIT, hospital, post, rule

NY = ZoneInfo("America/New_York")


def local_day(days_ahead: int = 2) -> date:
    """A New York calendar date a few days from now (clear of notice windows)."""
    return (datetime.now(NY) + timedelta(days=days_ahead)).date()


def at(day: date, hhmm: str) -> datetime:
    """New York local wall-clock time on `day` as an aware datetime."""
    return datetime.combine(day, time.fromisoformat(hhmm), NY)


def iso(dt: datetime) -> str:
    """An instant with its offset, seconds precision."""
    return dt.isoformat(timespec="seconds")


def with_break(ext: dict[str, Any], start: str, end: str) -> dict[str, Any]:
    """A copy of a rule extension with a break sub-extension added."""
    brk = {
        "url": "break",
        "extension": [{"url": "start", "valueTime": start}, {"url": "end", "valueTime": end}],
    }
    return {**ext, "extension": [*ext["extension"], brk]}


def schedule_body(doc: str, *rules: dict[str, Any]) -> dict[str, Any]:
    """An active FOLLOW_UP Schedule of a practitioner carrying `rules`."""
    return {
        "resourceType": "Schedule",
        "active": True,
        "actor": [{"reference": f"Practitioner/{doc}"}],
        "serviceType": [{"coding": [{"system": VISIT, "code": "FOLLOW_UP"}]}],
        "extension": list(rules),
    }


async def practitioner(client: httpx.AsyncClient) -> str:
    """A fresh practitioner."""
    return await post(
        client, {"resourceType": "Practitioner", "name": [{"family": f"Rules{uid()}"}]}
    )


async def schedules_of(client: httpx.AsyncClient, doc: str) -> int:
    """How many Schedules the practitioner has."""
    r = await client.get("/Schedule", params={"actor": f"Practitioner/{doc}"})
    assert r.status_code == 200, r.text
    return len(r.json().get("entry", []))


def assert_outcome_422(r: httpx.Response, *needles: str) -> dict[str, Any]:
    """A 422 carrying an OperationOutcome whose issues mention every needle."""
    assert r.status_code == 422, r.text
    outcome: dict[str, Any] = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issues = outcome["issue"]
    assert issues and all(i["severity"] == "error" for i in issues)
    text = " | ".join(i.get("diagnostics", "") for i in issues)
    for needle in needles:
        assert needle in text, text
    return outcome


def free_slot(
    schedule_id: str, start: datetime, end: datetime, status: str = "free"
) -> dict[str, Any]:
    """An explicit Slot of a Schedule."""
    return {
        "resourceType": "Slot",
        "schedule": {"reference": f"Schedule/{schedule_id}"},
        "status": status,
        "start": iso(start),
        "end": iso(end),
    }


# ---- write-time checks --------------------------------------------------------------------


async def test_rule_outside_operating_hours_is_422_and_not_written(
    client: httpx.AsyncClient,
) -> None:
    loc = await post(client, hospital())
    doc = await practitioner(client)
    r = await client.post(
        "/Schedule", json=schedule_body(doc, rule(loc, "05:00:00", "10:00:00")), headers=FHIR
    )
    outcome = assert_outcome_422(r, "05:00-06:00", f"Location/{loc}", "operating hours")
    assert outcome["issue"][0]["expression"] == ["Schedule.extension[0]"]
    assert await schedules_of(client, doc) == 0


async def test_rule_inside_operating_hours_is_created(client: httpx.AsyncClient) -> None:
    loc = await post(client, hospital())
    doc = await practitioner(client)
    r = await client.post(
        "/Schedule", json=schedule_body(doc, rule(loc, "06:00:00", "22:00:00")), headers=FHIR
    )
    assert r.status_code == 201, r.text
    assert await schedules_of(client, doc) == 1


async def test_update_to_a_rule_outside_hours_is_422_and_keeps_the_old_version(
    client: httpx.AsyncClient,
) -> None:
    loc = await post(client, hospital())
    doc = await practitioner(client)
    body = schedule_body(doc, rule(loc))
    sched = await post(client, body)
    bad = {**body, "id": sched, "extension": [rule(loc, "20:00:00", "23:00:00")]}
    r = await client.put(f"/Schedule/{sched}", json=bad, headers=FHIR)
    assert_outcome_422(r, "22:00-23:00")
    current = (await client.get(f"/Schedule/{sched}")).json()
    assert current["meta"]["versionId"] == "1"
    assert current["extension"] == body["extension"]


async def test_rule_at_a_missing_location_is_422(client: httpx.AsyncClient) -> None:
    doc = await practitioner(client)
    missing = f"nowhere-{uid()}"
    r = await client.post("/Schedule", json=schedule_body(doc, rule(missing)), headers=FHIR)
    outcome = assert_outcome_422(r, f"Location/{missing} does not exist")
    assert outcome["issue"][0]["expression"] == ["Schedule.extension[0].extension[9]"]


async def test_rule_at_a_room_is_bounded_by_its_hospital(client: httpx.AsyncClient) -> None:
    hosp = await post(client, hospital())
    room = await post(
        client,
        {
            "resourceType": "Location",
            "name": f"Room {uid()}",
            "partOf": {"reference": f"Location/{hosp}"},
        },
    )
    doc = await practitioner(client)
    r = await client.post(
        "/Schedule", json=schedule_body(doc, rule(room, "21:00:00", "23:00:00")), headers=FHIR
    )
    assert_outcome_422(r, "22:00-23:00", f"Location/{room}")
    ok = await client.post("/Schedule", json=schedule_body(doc, rule(room)), headers=FHIR)
    assert ok.status_code == 201, ok.text


async def test_location_without_hours_is_always_open(client: httpx.AsyncClient) -> None:
    open_loc = hospital()
    del open_loc["hoursOfOperation"]
    loc = await post(client, open_loc)
    doc = await practitioner(client)
    r = await client.post(
        "/Schedule", json=schedule_body(doc, rule(loc, "00:00:00", "23:59:59")), headers=FHIR
    )
    assert r.status_code == 201, r.text


async def test_malformed_rules_are_422_with_an_operation_outcome(
    client: httpx.AsyncClient,
) -> None:
    loc = await post(client, hospital())
    doc = await practitioner(client)
    reversed_times = rule(loc, "12:00:00", "09:00:00")
    r = await client.post("/Schedule", json=schedule_body(doc, reversed_times), headers=FHIR)
    outcome = assert_outcome_422(r, "start 12:00 must be before end 09:00")
    assert outcome["issue"][0]["expression"] == ["Schedule.extension[0]"]

    bad_day = rule(loc)
    bad_day["extension"][0] = {"url": "daysOfWeek", "valueCode": "someday"}
    r = await client.post("/Schedule", json=schedule_body(doc, bad_day), headers=FHIR)
    outcome = assert_outcome_422(r, "unknown day code 'someday'")
    assert outcome["issue"][0]["expression"] == ["Schedule.extension[0].extension[0]"]

    bad_visit = rule(loc, visit_types=("FOLLOW_UP", "SPA_DAY"))
    r = await client.post("/Schedule", json=schedule_body(doc, bad_visit), headers=FHIR)
    outcome = assert_outcome_422(r, "unknown visit type 'SPA_DAY'")
    assert outcome["issue"][0]["expression"] == ["Schedule.extension[0].extension[11]"]

    assert await schedules_of(client, doc) == 0


async def test_free_slot_outside_operating_hours_is_422(client: httpx.AsyncClient) -> None:
    loc = await post(client, hospital())
    doc = await practitioner(client)
    sched = await post(client, schedule_body(doc, rule(loc, "09:00:00", "12:00:00")))
    day = local_day()
    late = free_slot(sched, at(day, "23:00"), at(day, "23:30"))
    r = await client.post("/Slot", json=late, headers=FHIR)
    assert_outcome_422(r, "operating hours", f"Location/{loc}", "23:00:00")
    straddling = free_slot(sched, at(day, "21:30"), at(day, "22:30"))
    assert_outcome_422(await client.post("/Slot", json=straddling, headers=FHIR), "22:00:00")
    inside = free_slot(sched, at(day, "18:00"), at(day, "19:00"))
    created = await client.post("/Slot", json=inside, headers=FHIR)
    assert created.status_code == 201, created.text
    # blocking time outside hours is harmless and allowed
    blocked = free_slot(sched, at(day, "23:00"), at(day, "23:30"), "busy-unavailable")
    assert (await client.post("/Slot", json=blocked, headers=FHIR)).status_code == 201


async def test_bad_visit_duration_on_a_service_is_422(client: httpx.AsyncClient) -> None:
    service = {
        "resourceType": "HealthcareService",
        "name": f"Clinic {uid()}",
        "extension": [
            {
                "url": "http://fhirserver.dev/StructureDefinition/visit-duration",
                "extension": [
                    {"url": "visitType", "valueCoding": {"system": VISIT, "code": "FOLLOW_UP"}},
                    {"url": "minutes", "valueInteger": 0},
                ],
            }
        ],
    }
    r = await client.post("/HealthcareService", json=service, headers=FHIR)
    assert_outcome_422(r, "minutes must be >= 1")


# ---- what is offered ----------------------------------------------------------------------


async def test_find_honours_breaks_and_busy_unavailable_slots(client: httpx.AsyncClient) -> None:
    loc = await post(client, hospital())
    doc = await practitioner(client)
    ext = with_break(rule(loc, "09:00:00", "13:00:00"), "12:00:00", "12:30:00")
    assert ext["url"] == RULE
    sched = await post(client, schedule_body(doc, ext))
    day = local_day()
    cme = free_slot(sched, at(day, "10:00"), at(day, "11:00"), "busy-unavailable")
    await post(client, cme)
    r = await client.get(
        "/Appointment/$find",
        params={
            "start": iso(at(day, "00:00")),
            "end": iso(at(day + timedelta(days=1), "00:00")),
            "practitioner": f"Practitioner/{doc}",
        },
    )
    assert r.status_code == 200, r.text
    offers = [e["resource"] for e in r.json().get("entry", [])]
    starts = [datetime.fromisoformat(o["start"]) for o in offers]
    assert starts == [at(day, t) for t in ("09:00", "09:30", "11:00", "11:30", "12:30")]
    assert all(o["minutesDuration"] == 30 for o in offers)
    for o in offers:
        start = datetime.fromisoformat(o["start"])
        assert not at(day, "10:00") <= start < at(day, "11:00")
        assert not at(day, "12:00") <= start < at(day, "12:30")


async def test_slot_search_returns_generated_slots_readable_by_id(
    client: httpx.AsyncClient,
) -> None:
    loc = await post(client, hospital())
    doc = await practitioner(client)
    ext = with_break(rule(loc, "09:00:00", "11:00:00"), "10:00:00", "10:30:00")
    sched = await post(client, schedule_body(doc, ext))
    day = local_day()
    r = await client.get(
        "/Slot",
        params=[
            ("schedule", f"Schedule/{sched}"),
            ("status", "free"),
            ("start", f"ge{iso(at(day, '00:00'))}"),
            ("start", f"lt{iso(at(day + timedelta(days=1), '00:00'))}"),
        ],
    )
    assert r.status_code == 200, r.text
    slots = [e["resource"] for e in r.json().get("entry", [])]
    assert [datetime.fromisoformat(s["start"]) for s in slots] == [
        at(day, t) for t in ("09:00", "09:30", "10:30")
    ]
    for found in slots:
        assert found["id"].startswith("g-") and found["id"].endswith(f"-30-{sched}")
        assert found["status"] == "free"
        assert found["schedule"] == {"reference": f"Schedule/{sched}"}
        read = await client.get(f"/Slot/{found['id']}")
        assert read.status_code == 200, read.text
        assert read.json() == found
