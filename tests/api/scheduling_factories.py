"""Factories for a bookable setup: a hospital, a practitioner, a Schedule with a rule."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.factories import uid

FHIR = {"Content-Type": "application/fhir+json"}
RULE = "http://fhirserver.dev/StructureDefinition/availability-rule"
VISIT = "http://fhirserver.dev/CodeSystem/visit-type"
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


async def post(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    """Create a resource and return its id."""
    r = await client.post(f"/{body['resourceType']}", json=body, headers=FHIR)
    assert r.status_code == 201, r.text
    rid: str = r.json()["id"]
    return rid


def hospital(tz: str = "America/New_York") -> dict[str, Any]:
    """A hospital open every day 06:00-22:00 local."""
    return {
        "resourceType": "Location",
        "name": f"Hospital {uid()}",
        "status": "active",
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/timezone",
                       "valueCode": tz}],
        "hoursOfOperation": [{"daysOfWeek": ALL_DAYS, "openingTime": "06:00:00",
                              "closingTime": "22:00:00"}],
    }


def rule(location_id: str, start: str = "09:00:00", end: str = "17:00:00",
         visit_types: tuple[str, ...] = ("FOLLOW_UP",)) -> dict[str, Any]:
    """An availability-rule extension: every day, start-end local, at one location."""
    subs: list[dict[str, Any]] = [{"url": "daysOfWeek", "valueCode": d} for d in ALL_DAYS]
    subs += [
        {"url": "start", "valueTime": start},
        {"url": "end", "valueTime": end},
        {"url": "location", "valueReference": {"reference": f"Location/{location_id}"}},
    ]
    subs += [{"url": "visitType", "valueCoding": {"system": VISIT, "code": v}}
             for v in visit_types]
    return {"url": RULE, "extension": subs}


async def bookable_practitioner(client: httpx.AsyncClient) -> tuple[str, str, str]:
    """(practitioner id, schedule id, location id) for a fresh, fully free practitioner."""
    loc = await post(client, hospital())
    doc = await post(client, {"resourceType": "Practitioner",
                              "name": [{"family": f"Sched{uid()}"}]})
    sched = await post(client, {
        "resourceType": "Schedule",
        "active": True,
        "actor": [{"reference": f"Practitioner/{doc}"}],
        "serviceType": [{"coding": [{"system": VISIT, "code": "FOLLOW_UP"}]}],
        "extension": [rule(loc)],
    })
    return doc, sched, loc


async def patient_id(client: httpx.AsyncClient) -> str:
    """A fresh patient."""
    return await post(client, {"resourceType": "Patient", "name": [{"family": f"P{uid()}"}]})
