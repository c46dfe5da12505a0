"""$find criteria over HTTP: specialty, language, near, organization, location, location-string,
accepting-new-patients, coverage, _count, and the established provider ranked first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api.factories import uid
from tests.api.scheduling_factories import VISIT, hospital, post, rule

SPEC = "http://fhirserver.dev/test-specialty"
PLANS = "http://fhirserver.dev/sid/insurance-plan"
ACCEPTING = "http://fhirserver.dev/StructureDefinition/accepting-new-patients"
INSURANCE = "http://fhirserver.dev/StructureDefinition/accepted-insurance"


@dataclass
class Clinic:
    """Three practitioners sharing a fresh specialty code, each different in one way."""

    specialty: str
    city: str
    org: str
    boston: str  # hospital ids
    denver: str
    fr: str  # Practitioner ids: speaks French, Boston, org
    closed: str  # Denver, not accepting new patients
    ppo: str  # Denver, takes the PPO, works afternoons only


async def _provider(
    client: httpx.AsyncClient,
    c: dict[str, str],
    loc: str,
    *,
    lang: str = "en",
    org: str | None = None,
    extensions: list[dict[str, Any]] | None = None,
    start: str = "09:00:00",
) -> str:
    doc = await post(client, {
        "resourceType": "Practitioner",
        "name": [{"family": f"Find{uid()}"}],
        "communication": [{"coding": [{"system": "urn:ietf:bcp:47", "code": lang}]}],
    })
    role: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "practitioner": {"reference": f"Practitioner/{doc}"},
        "specialty": [{"coding": [{"system": SPEC, "code": c["specialty"]}]}],
        "location": [{"reference": f"Location/{loc}"}],
    }
    if org:
        role["organization"] = {"reference": f"Organization/{org}"}
    if extensions:
        role["extension"] = extensions
    role_id = await post(client, role)
    await post(client, {
        "resourceType": "Schedule",
        "active": True,
        "actor": [{"reference": f"PractitionerRole/{role_id}"}],
        "serviceType": [{"coding": [{"system": VISIT, "code": "FOLLOW_UP"}]}],
        "extension": [rule(loc, start=start, end="17:00:00")],
    })
    return doc


def _located(tz: str, city: str, lat: float, lng: float) -> dict[str, Any]:
    loc = hospital(tz)
    loc["address"] = {"city": city}
    loc["position"] = {"latitude": lat, "longitude": lng}
    return loc


@pytest.fixture(scope="module")
async def clinic(server: Any) -> Clinic:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        spec, city = uid(), f"Town{uid()}"
        org = await post(client, {"resourceType": "Organization", "name": f"Org {uid()}"})
        boston = await post(client, _located("America/New_York", city, 42.36, -71.06))
        denver = await post(client, _located("America/Denver", "Denver", 39.74, -104.97))
        c = {"specialty": spec}
        fr = await _provider(client, c, boston, lang="fr", org=org)
        closed = await _provider(
            client, c, denver, extensions=[{"url": ACCEPTING, "valueBoolean": False}]
        )
        ppo = await _provider(
            client, c, denver, start="13:00:00",
            extensions=[{"url": INSURANCE, "valueIdentifier": {"system": PLANS, "value": "PPO"}}],
        )
        return Clinic(spec, city, org, boston, denver, fr, closed, ppo)


def _window() -> dict[str, str]:
    day = (datetime.now(UTC) + timedelta(days=2)).replace(hour=0, minute=0, second=0,
                                                          microsecond=0)
    return {"start": day.isoformat(), "end": (day + timedelta(days=1)).isoformat()}


async def find(client: httpx.AsyncClient, c: Clinic, **extra: str) -> list[dict[str, Any]]:
    r = await client.get("/Appointment/$find",
                         params={**_window(), "specialty": f"{SPEC}|{c.specialty}", **extra})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def doctors(offers: list[dict[str, Any]]) -> set[str]:
    return {
        p["actor"]["reference"].split("/")[1]
        for o in offers
        for p in o["participant"]
        if p["actor"]["reference"].startswith("Practitioner/")
    }


async def test_specialty_finds_all_three_earliest_first(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    offers = await find(client, clinic, _count="100")
    assert doctors(offers) == {clinic.fr, clinic.closed, clinic.ppo}
    starts = [datetime.fromisoformat(o["start"]) for o in offers]
    assert starts == sorted(starts)
    assert all(o["status"] == "proposed" for o in offers)


async def test_count_limits_the_page(client: httpx.AsyncClient, clinic: Clinic) -> None:
    r = await client.get("/Appointment/$find",
                         params={**_window(), "specialty": f"{SPEC}|{clinic.specialty}",
                                 "_count": "3"})
    bundle = r.json()
    assert len(bundle["entry"]) == 3 and bundle["total"] == 3


@pytest.mark.parametrize(
    ("criterion", "expected"),
    [
        ("language", "fr"),
        ("organization", "org"),
        ("location", "boston"),
        ("location-string", "city"),
        ("near", "boston-near"),
        ("coverage", "ppo"),
        ("insurance-plan", "ppo"),
    ],
)
async def test_each_criterion_narrows(
    client: httpx.AsyncClient, clinic: Clinic, criterion: str, expected: str
) -> None:
    value = {
        "fr": "fr",
        "org": f"Organization/{clinic.org}",
        "boston": f"Location/{clinic.boston}",
        "city": clinic.city,
        "boston-near": "42.35|-71.05|20|km",
        "ppo": f"{PLANS}|PPO",
    }[expected]
    want = {
        "fr": clinic.fr, "org": clinic.fr, "boston": clinic.fr, "city": clinic.fr,
        "boston-near": clinic.fr, "ppo": clinic.ppo,
    }[expected]
    name = "location" if criterion == "location" else criterion
    assert doctors(await find(client, clinic, **{name: value})) == {want}


async def test_accepting_new_patients_except_for_their_own(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    offers = await find(client, clinic, **{"accepting-new-patients": "true"}, _count="100")
    assert doctors(offers) == {clinic.fr, clinic.ppo}
    own = await post(client, {
        "resourceType": "Patient",
        "generalPractitioner": [{"reference": f"Practitioner/{clinic.closed}"}],
    })
    offers = await find(client, clinic, **{"accepting-new-patients": "true"},
                        patient=f"Patient/{own}", _count="100")
    assert doctors(offers) == {clinic.fr, clinic.ppo, clinic.closed}


async def test_established_provider_ranks_first(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    own = await post(client, {
        "resourceType": "Patient",
        "generalPractitioner": [{"reference": f"Practitioner/{clinic.ppo}"}],
    })
    offers = await find(client, clinic, patient=f"Patient/{own}", _count="100")
    first = doctors(offers[:1])
    assert first == {clinic.ppo}  # afternoon-only, yet first for their own patient
    assert {"reference": f"Patient/{own}"} in [p["actor"] for p in offers[0]["participant"]]
    rest = [datetime.fromisoformat(o["start"]) for o in offers if doctors([o]) != first]
    assert rest == sorted(rest)


async def test_no_match_is_an_empty_bundle(client: httpx.AsyncClient, clinic: Clinic) -> None:
    r = await client.get("/Appointment/$find",
                         params={**_window(), "specialty": f"{SPEC}|nothing-{uid()}"})
    assert r.status_code == 200
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle" and bundle["total"] == 0
    assert not bundle.get("entry")


async def test_find_by_post_parameters(client: httpx.AsyncClient, clinic: Clinic) -> None:
    w = _window()
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "start", "valueDateTime": w["start"]},
        {"name": "end", "valueDateTime": w["end"]},
        {"name": "specialty", "valueString": f"{SPEC}|{clinic.specialty}"},
        {"name": "language", "valueString": "fr"},
    ]}
    r = await client.post("/Appointment/$find", json=body,
                          headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 200, r.text
    assert doctors([e["resource"] for e in r.json()["entry"]]) == {clinic.fr}
