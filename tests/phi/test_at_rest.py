"""PHI at rest over real HTTP: round trip, no plaintext anywhere, blind-index search,
refused searches, and loud failures on tampered or swapped records."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from fhirserver.auth.service import AuthService
from fhirserver.scheduling.clock import SystemClock
from tests.api.factories import uid
from tests.api.scheduling_factories import bookable_practitioner
from tests.phi.conftest import FHIR, PhiServer, create, mongo_hits, redis_hits

MRN = "http://fhirserver.dev/sid/mrn"


def person(tag: str) -> dict[str, Any]:
    """A Patient whose every PHI string carries `tag` (so a raw scan can look for them)."""
    return {
        "resourceType": "Patient",
        "identifier": [{"system": MRN, "value": f"MRN{tag}"}],
        "name": [{"family": f"Zyx{tag}quist", "given": [f"Quil{tag}lon", "Marié"]}],
        "telecom": [
            {"system": "phone", "value": f"+1-555-{tag}", "use": "mobile"},
            {"system": "email", "value": f"q{tag}@example.org"},
        ],
        "address": [{"line": [f"742 Evergreen{tag} Terrace"], "city": f"Springfield{tag}",
                     "postalCode": f"PC{tag}", "country": "US"}],
        "gender": "female",
        "birthDate": "1983-07-14",
    }


@pytest.fixture(scope="module")
def tag() -> str:
    """One unique marker for the module's PHI strings."""
    return uid()


@pytest.fixture(scope="module")
async def stored(phi_server: PhiServer, tag: str) -> AsyncIterator[dict[str, str]]:
    """A Patient (updated once: two versions), an Appointment with comment and reason, and a
    conditional create; ids by role (created once per module)."""
    async with httpx.AsyncClient(base_url=phi_server.base_url, timeout=30) as client:
        yield await _store(client, tag)


async def _store(client: httpx.AsyncClient, tag: str) -> dict[str, str]:
    pid = await create(client, person(tag))
    body = (await client.get(f"/Patient/{pid}")).json()
    body["telecom"].append({"system": "phone", "value": f"+1-666-{tag}"})
    r = await client.put(f"/Patient/{pid}", json=body, headers=FHIR)
    assert r.status_code == 200, r.text
    dup = await client.post("/Patient", json=person(tag),
                            headers={**FHIR, "If-None-Exist": f"identifier={MRN}|MRN{tag}"})
    assert dup.status_code == 200 and dup.json()["id"] == pid
    other_body = person("o" + tag)
    del other_body["identifier"]
    other = await create(client, other_body)
    start = (datetime.now(UTC) + timedelta(days=400)).replace(microsecond=0)
    aid = await create(client, {
        "resourceType": "Appointment", "status": "proposed",
        "comment": f"Reports Xqz{tag} migraines",
        "description": f"Follow-up Dsc{tag}",
        "reasonCode": [{"coding": [{"system": "http://snomed.info/sct", "code": f"R{tag}"}],
                        "text": f"Headache{tag}"}],
        "start": start.isoformat(), "end": (start + timedelta(minutes=30)).isoformat(),
        "participant": [{"actor": {"reference": f"Patient/{pid}"}, "status": "needs-action"}],
    })
    return {"patient": pid, "other": other, "appointment": aid}


def needles(tag: str) -> list[str]:
    """The PHI strings `person(tag)` and the Appointment hold."""
    return [
        f"MRN{tag}", f"Zyx{tag}quist", f"Quil{tag}lon", f"+1-555-{tag}", f"+1-666-{tag}",
        f"q{tag}@example.org", f"Evergreen{tag}", f"Springfield{tag}", f"PC{tag}",
        "1983-07-14", f"Xqz{tag}", f"Dsc{tag}", f"Headache{tag}", f"R{tag}",
    ]


async def test_round_trip_serves_what_was_written(
    client: httpx.AsyncClient, stored: dict[str, str], tag: str
) -> None:
    pat = (await client.get(f"/Patient/{stored['patient']}")).json()
    assert pat["name"][0]["family"] == f"Zyx{tag}quist" and pat["meta"]["versionId"] == "2"
    assert pat["telecom"][-1]["value"] == f"+1-666-{tag}"
    v1 = (await client.get(f"/Patient/{stored['patient']}/_history/1")).json()
    assert len(v1["telecom"]) == 2 and v1["birthDate"] == "1983-07-14"
    hist = (await client.get(f"/Patient/{stored['patient']}/_history")).json()
    assert [e["resource"]["meta"]["versionId"] for e in hist["entry"]] == ["2", "1"]
    appt = (await client.get(f"/Appointment/{stored['appointment']}")).json()
    assert appt["comment"] == f"Reports Xqz{tag} migraines"


async def test_booking_idempotency_record_is_sealed(
    client: httpx.AsyncClient, phi_server: PhiServer, tag: str
) -> None:
    """$book stores its response (an Appointment) for Idempotency-Key retries: sealed."""
    doc, _, _ = await bookable_practitioner(client)
    window = {"start": (datetime.now(UTC) + timedelta(days=2)).date().isoformat(),
              "end": (datetime.now(UTC) + timedelta(days=9)).date().isoformat()}
    found = await client.get("/Appointment/$find",
                             params={**window, "practitioner": f"Practitioner/{doc}"})
    offer = found.json()["entry"][0]["resource"]
    offer["comment"] = f"Booked Bkx{tag} note"
    pid = await create(client, {"resourceType": "Patient", "name": [{"family": f"Bky{tag}"}]})
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "appointment", "resource": offer},
        {"name": "patient", "valueString": f"Patient/{pid}"}]}
    hdr = {**FHIR, "Idempotency-Key": f"idem-{tag}"}
    first = await client.post("/Appointment/$book", json=body, headers=hdr)
    again = await client.post("/Appointment/$book", json=body, headers=hdr)
    assert first.status_code == 201, first.text
    assert again.status_code == 201 and again.content == first.content
    assert f"Bkx{tag}" in first.text
    assert await mongo_hits(phi_server.settings, [f"Bkx{tag}", f"Bky{tag}"]) == []


async def test_a_raw_look_shows_no_plaintext_phi(
    client: httpx.AsyncClient, phi_server: PhiServer, stored: dict[str, str], tag: str
) -> None:
    # the strings are really served (so the scan below looks for the right things)
    served = (await client.get(f"/Patient/{stored['patient']}")).text
    assert all(n in served for n in needles(tag)[:10])
    assert await mongo_hits(phi_server.settings, needles(tag)) == []
    assert phi_server.settings.redis_url
    assert await redis_hits(phi_server.settings.redis_url, needles(tag)) == []


@pytest.mark.parametrize(
    ("params", "expect"),
    [
        ({"name": "zyx{tag}"}, {"patient"}),  # starts with, case-insensitive
        ({"name": "ZYX{tag}QUIST"}, {"patient"}),
        ({"given": "marie"}, {"patient", "other"}),  # accents folded
        ({"name": "quil{tag}lo"}, {"patient"}),
        ({"phonetic": "zyx{tag}"}, {"patient"}),
        ({"family": "Zyx{tag}"}, {"patient"}),
        ({"family:exact": "Zyx{tag}quist"}, {"patient"}),
        ({"family:exact": "zyx{tag}quist"}, set()),
        ({"given": "Quil{tag}lon"}, {"patient"}),
        ({"family": "Quil{tag}"}, set()),
        ({"identifier": "MRN{tag}"}, {"patient"}),
        ({"identifier": f"{MRN}|MRN{{tag}}"}, {"patient"}),
        ({"identifier": f"{MRN}|"}, {"patient"}),
        ({"identifier": "|MRN{tag}"}, set()),
        ({"identifier": "urn:other|MRN{tag}"}, set()),
        ({"phone": "+1-666-{tag}"}, {"patient"}),
        ({"telecom": "mobile|+1-555-{tag}"}, {"patient"}),
        ({"email": "q{tag}@example.org"}, {"patient"}),
        ({"address-city": "springfield{tag}"}, {"patient"}),
        ({"address": "742 evergreen{tag}"}, {"patient"}),  # > 16 chars, ends at a word
        ({"address-postalcode": "PC{tag}"}, {"patient"}),
        ({"family": "Zyx{tag}", "birthdate": "1983"}, {"patient"}),
        ({"family": "Zyx{tag}", "birthdate": "1983-07"}, {"patient"}),
        ({"family": "Zyx{tag}", "birthdate": "1983-07-14"}, {"patient"}),
        ({"family": "Zyx{tag}", "birthdate": "eq1983-07-14"}, {"patient"}),
        ({"family": "Zyx{tag}", "birthdate": "1983-07-15"}, set()),
        ({"family": "Zyx{tag}", "birthdate": "ne1984"}, {"patient"}),
        ({"family": "Zyx{tag}", "birthdate": "ne1983"}, set()),
        ({"family": "Zyx{tag}", "name:missing": "false"}, {"patient"}),
    ],
)
async def test_search_by_blind_index(
    client: httpx.AsyncClient, stored: dict[str, str], tag: str,
    params: dict[str, str], expect: set[str],
) -> None:
    query = {k: v.replace("{tag}", tag) for k, v in params.items()}
    r = await client.get("/Patient", params=query)
    assert r.status_code == 200, r.text
    got = {e["resource"]["id"] for e in r.json().get("entry", [])}
    assert got == {stored[k] for k in expect}, query


async def test_reason_code_and_chains_and_includes(
    client: httpx.AsyncClient, stored: dict[str, str], tag: str
) -> None:
    aid, pid = stored["appointment"], stored["patient"]
    by_reason = (await client.get("/Appointment", params={"reason-code": f"R{tag}"})).json()
    assert [e["resource"]["id"] for e in by_reason["entry"]] == [aid]
    chained = (await client.get("/Appointment", params={"patient.name": f"zyx{tag}"})).json()
    assert [e["resource"]["id"] for e in chained["entry"]] == [aid]
    by_mrn = (await client.get("/Appointment",
                               params={"patient.identifier": f"{MRN}|MRN{tag}"})).json()
    assert [e["resource"]["id"] for e in by_mrn["entry"]] == [aid]
    inc = (await client.get("/Appointment",
                            params={"_id": aid, "_include": "Appointment:patient"})).json()
    assert {e["resource"]["id"] for e in inc["entry"]} == {aid, pid}
    patient = next(e["resource"] for e in inc["entry"] if e["resource"]["id"] == pid)
    assert patient["name"][0]["family"] == f"Zyx{tag}quist"
    rev = (await client.get("/Patient", params={"family": f"Zyx{tag}",
                                                "_revinclude": "Appointment:patient"})).json()
    assert {e["resource"]["id"] for e in rev["entry"]} == {aid, pid}


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ({"name:contains": "yx"}, ":contains"),
        ({"address:contains": "green"}, ":contains"),
        ({"birthdate": "lt1990"}, "ranges"),
        ({"birthdate": "ge1980-01-01"}, "ranges"),
        ({"birthdate": "1983-07-14T10:00:00Z"}, "YYYY-MM-DD"),
        ({"identifier:text": "mrn"}, ":text"),
        ({"_sort": "family"}, "sorted"),
        ({"_sort": "-birthdate"}, "sorted"),
    ],
)
async def test_searches_encryption_rules_out_are_400(
    client: httpx.AsyncClient, params: dict[str, str], why: str
) -> None:
    r = await client.get("/Patient", params=params)
    assert r.status_code == 400, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    text = outcome["issue"][0]["diagnostics"]
    assert "encrypted" in text and why in text
    chained = await client.get("/Appointment", params={"patient.birthdate": "lt1990"})
    assert chained.status_code == 400


async def _raw_doc(settings: Any, coll: str, rid: str) -> tuple[Any, dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri)
    db = client[settings.db_name]
    doc = await db[coll].find_one({"_id": rid})
    assert doc is not None
    return client, doc


async def test_tampered_or_swapped_ciphertext_fails_loudly(
    client: httpx.AsyncClient, phi_server: PhiServer, stored: dict[str, str], tag: str
) -> None:
    settings = phi_server.settings
    # A Patient no one has read yet: an answer the query cache kept from before an edit
    # made in the database behind the server's back is served until its time-to-live ends
    # (docs/search-index.md); what this test asks is what a read of the store makes of it.
    victim = await create(client, person(f"t{tag}"))
    mc, doc = await _raw_doc(settings, "Patient", victim)
    _, other = await _raw_doc(settings, "Patient", stored["other"])
    coll = mc[settings.db_name]["Patient"]
    try:
        assert doc["raw"][:3] == b"\x00P1" and doc["k"]
        flipped = bytearray(doc["raw"])
        flipped[-5] ^= 0x01
        await coll.update_one({"_id": doc["_id"]}, {"$set": {"raw": bytes(flipped)}})
        r = await client.get(f"/Patient/{victim}")
        assert r.status_code == 500 and "Zyx" not in r.text
        # another record's (valid) ciphertext moved onto this one: refused too
        await coll.update_one({"_id": doc["_id"]}, {"$set": {"raw": other["raw"]}})
        assert (await client.get(f"/Patient/{victim}")).status_code == 500
        # a search that would serve it fails rather than serving the wrong patient
        s = await client.get("/Patient", params={"_id": victim})
        assert s.status_code == 500
    finally:
        await coll.update_one({"_id": doc["_id"]}, {"$set": {"raw": doc["raw"]}})
        await mc.close()
    assert (await client.get(f"/Patient/{victim}")).status_code == 200


async def test_the_audit_trail_and_user_display_names_are_sealed(
    client: httpx.AsyncClient, phi_server: PhiServer, stored: dict[str, str], tag: str
) -> None:
    """A search by name, MRN and birth date puts them in the trail's BALP Query entity, and
    a patient login user carries the patient's name: neither is readable in the store."""
    query = {"family": f"Zyx{tag}quist", "identifier": f"MRN{tag}", "birthdate": "1983-07-14"}
    found = await client.get("/Patient", params=query)
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [stored["patient"]]
    settings = phi_server.settings
    assert settings.mongodb_uri and settings.redis_url
    auth = AuthService.start(settings, settings.mongodb_uri, settings.redis_url, SystemClock())
    try:
        name, username = f"Quil{tag}lon Zyx{tag}quist", f"login-{uid()}"
        auth.add_user(username, "patient", "a long passphrase", f"Patient/{stored['patient']}",
                      name)
        user = auth.store.get_user(username)
        assert user is not None and user.name == name
    finally:
        auth.close()

    assert await mongo_hits(settings, needles(tag)) == []
    # The trail holds the search as sent, served in the clear to an auditor.
    r = await client.get("/AuditEvent",
                         params={"entity-identifier": found.headers["x-request-id"]})
    queries = [
        base64.b64decode(ent["query"]).decode()
        for e in r.json()["entry"]
        for ent in e["resource"]["entity"]
        if "query" in ent
    ]
    assert len(queries) == 1 and f"Zyx{tag}quist" in queries[0] and f"MRN{tag}" in queries[0]
