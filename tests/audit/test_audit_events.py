"""Each FHIR interaction on PHI writes the right IHE BALP AuditEvent, before its response."""

from __future__ import annotations

from typing import Any

import httpx
from fhir.resources.R4B import get_fhir_model_class

from tests.api.factories import appointment, patient, practitioner
from tests.audit.conftest import codes, entities, events_for, only_event, patient_refs, query_of

FHIR = {"Content-Type": "application/fhir+json"}
START, END = "2031-03-04T10:00:00Z", "2031-03-04T10:30:00Z"


async def _create(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    r = await client.post(f"/{body['resourceType']}", json=body, headers=FHIR)
    assert r.status_code == 201, r.text
    rid: str = r.json()["id"]
    return rid


def _assert_balp_common(event: dict[str, Any], request_id: str) -> None:
    get_fhir_model_class("AuditEvent").model_validate(event)  # a valid R4 AuditEvent
    (req,) = [e for e in event["entity"] if e["type"]["code"] == "XrequestId"]
    assert req["what"]["identifier"]["value"] == request_id
    client_agent = event["agent"][0]
    assert codes(client_agent["type"]["coding"]) == {"110153"}
    assert client_agent["network"] == {"address": "127.0.0.1", "type": "2"}
    assert event["source"]["observer"]["display"].endswith("/fhir")


async def test_read_is_a_balp_patient_read(client: httpx.AsyncClient) -> None:
    pid = await _create(client, patient())
    r = await client.get(f"/Patient/{pid}", headers={"X-Request-Id": f"read-{pid}"})
    assert r.status_code == 200
    event = await only_event(client, r)
    _assert_balp_common(event, f"read-{pid}")
    assert event["meta"]["profile"] == [
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead"
    ]
    assert event["type"]["code"] == "rest"
    assert codes(event["subtype"]) == {"read"}
    assert event["action"] == "R" and event["outcome"] == "0"
    assert patient_refs(event) == {f"Patient/{pid}"}
    assert [e["what"]["reference"] for e in entities(event, "4")] == [f"Patient/{pid}"]


async def test_create_update_patch_delete(client: httpx.AsyncClient) -> None:
    pid = await _create(client, patient())
    doc = await _create(client, practitioner())
    r = await client.post(
        "/Appointment", json=appointment(f"Patient/{pid}", f"Practitioner/{doc}", START, END)
    )
    assert r.status_code == 201, r.text
    aid = r.json()["id"]
    created = await only_event(client, r)
    assert created["action"] == "C" and codes(created["subtype"]) == {"create"}
    assert created["meta"]["profile"][0].endswith("IHE.BasicAudit.PatientCreate")
    assert [e["what"]["reference"] for e in entities(created, "4")] == [
        f"Appointment/{aid}/_history/1"
    ]
    assert patient_refs(created) == {f"Patient/{pid}"}

    body = r.json()
    body["status"] = "arrived"
    r = await client.put(f"/Appointment/{aid}", json=body)
    assert r.status_code == 200, r.text
    updated = await only_event(client, r)
    assert updated["action"] == "U" and codes(updated["subtype"]) == {"update"}
    assert patient_refs(updated) == {f"Patient/{pid}"}

    patch = [{"op": "replace", "path": "/status", "value": "fulfilled"}]
    r = await client.patch(
        f"/Appointment/{aid}", json=patch, headers={"Content-Type": "application/json-patch+json"}
    )
    assert r.status_code == 200, r.text
    patched = await only_event(client, r)
    assert patched["action"] == "U" and codes(patched["subtype"]) == {"patch"}

    r = await client.delete(f"/Appointment/{aid}")
    assert r.status_code in (200, 204)
    deleted = await only_event(client, r)
    assert deleted["action"] == "D" and codes(deleted["subtype"]) == {"delete"}
    assert deleted["meta"]["profile"][0].endswith("IHE.BasicAudit.Delete")
    assert [e["what"]["reference"] for e in entities(deleted, "4")] == [f"Appointment/{aid}"]


async def test_search_is_a_balp_query_with_the_query(client: httpx.AsyncClient) -> None:
    pid = await _create(client, patient())
    doc = await _create(client, practitioner())
    await _create(client, appointment(f"Patient/{pid}", f"Practitioner/{doc}", START, END))
    r = await client.get("/Appointment", params={"patient": f"Patient/{pid}"})
    assert r.status_code == 200 and r.json()["total"] == 1
    event = await only_event(client, r)
    assert event["action"] == "E" and codes(event["subtype"]) == {"search-type"}
    assert event["meta"]["profile"][0].endswith("IHE.BasicAudit.PatientQuery")
    assert query_of(event) == f"Appointment?patient=Patient%2F{pid}"
    assert patient_refs(event) == {f"Patient/{pid}"}

    # POST _search: the form parameters are the query too.
    r = await client.post(
        "/Patient/_search",
        content=f"_id={pid}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    event = await only_event(client, r)
    assert query_of(event) == f"Patient?_id={pid}"
    assert patient_refs(event) == {f"Patient/{pid}"}


async def test_search_listing_patients_is_one_event_per_patient(
    client: httpx.AsyncClient,
) -> None:
    """BALP PatientQuery: a query that returns several patients is audited once for each."""
    family = "Listed" + (await _create(client, patient()))[:6]
    ids = {await _create(client, patient(family=family)) for _ in range(3)}
    r = await client.get("/Patient", params={"family": family})
    assert r.json()["total"] == 3
    found = await events_for(client, r.headers["x-request-id"])
    assert len(found) == 3
    assert [len(patient_refs(e)) for e in found] == [1, 1, 1]
    assert set().union(*(patient_refs(e) for e in found)) == {f"Patient/{i}" for i in ids}
    assert {query_of(e) for e in found} == {f"Patient?family={family}"}


async def test_failure_outcome_and_no_event_for_non_phi(client: httpx.AsyncClient) -> None:
    r = await client.get("/Patient/does-not-exist")
    assert r.status_code == 404
    event = await only_event(client, r)
    assert event["outcome"] == "4" and event["outcomeDesc"] == "HTTP 404"
    # Practitioner data is not PHI: a plain read of it is not in the trail.
    doc = await _create(client, practitioner())
    r = await client.get(f"/Practitioner/{doc}")
    assert r.status_code == 200
    assert await events_for(client, r.headers["x-request-id"]) == []


async def test_find_operation_and_transaction(client: httpx.AsyncClient) -> None:
    pid = await _create(client, patient())
    r = await client.get(
        "/Appointment/$find",
        params={"start": START, "end": END, "patient-reference": f"Patient/{pid}"},
    )
    assert r.status_code == 200, r.text
    event = await only_event(client, r)
    assert event["action"] == "E"
    assert codes(event["subtype"]) == {"operation", "Appointment/$find"}
    assert f"patient-reference=Patient%2F{pid}" in query_of(event)
    assert f"Patient/{pid}" in patient_refs(event)
    # Without a patient, $find returns public availability: not in the trail.
    r = await client.get("/Appointment/$find", params={"start": START, "end": END})
    assert r.status_code == 200, r.text
    assert await events_for(client, r.headers["x-request-id"]) == []

    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
                "resource": patient(),
                "request": {"method": "POST", "url": "Patient"},
            },
            {"request": {"method": "GET", "url": f"Patient/{pid}"}},
        ],
    }
    r = await client.post("", json=bundle)
    assert r.status_code == 200, r.text
    new_id = r.json()["entry"][0]["response"]["location"].split("/")[1]
    # BALP: each entry is audited as the interaction it is, marked as part of the Bundle.
    created, read = sorted(await events_for(client, r.headers["x-request-id"]),
                           key=lambda e: e["action"])
    assert codes(created["subtype"]) == {"create", "transaction"} and created["action"] == "C"
    assert [e["what"]["reference"] for e in entities(created, "4")] == [
        f"Patient/{new_id}/_history/1"
    ]
    assert patient_refs(created) == {f"Patient/{new_id}"}
    assert created["meta"]["profile"][0].endswith("PatientCreate")
    assert codes(read["subtype"]) == {"read", "transaction"} and read["action"] == "R"
    assert [e["what"]["reference"] for e in entities(read, "4")] == [f"Patient/{pid}"]
    assert patient_refs(read) == {f"Patient/{pid}"}


async def test_batch_entries_have_their_own_outcomes_and_a_refused_bundle_one_event(
    client: httpx.AsyncClient,
) -> None:
    pid = await _create(client, patient())
    other = await _create(client, patient())
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Appointment?patient={pid}"}},
            {"request": {"method": "DELETE", "url": f"Patient/{other}"}},
            {"request": {"method": "GET", "url": "Patient/no-such-patient"}},
            {"request": {"method": "GET", "url": "Practitioner?_count=1"}},  # no PHI
        ],
    }
    r = await client.post("", json=batch)
    assert r.status_code == 200, r.text
    found = {codes(e["subtype"]).pop() if len(codes(e["subtype"])) == 1 else
             next(iter(codes(e["subtype"]) - {"batch"})): e
             for e in await events_for(client, r.headers["x-request-id"])}
    assert set(found) == {"search-type", "delete", "read"}
    assert all("batch" in codes(e["subtype"]) for e in found.values())
    assert found["search-type"]["outcome"] == "0"
    assert query_of(found["search-type"]) == f"Appointment?patient={pid}"
    assert patient_refs(found["search-type"]) == {f"Patient/{pid}"}
    assert found["delete"]["action"] == "D" and patient_refs(found["delete"]) == {
        f"Patient/{other}"
    }
    assert found["read"]["outcome"] == "4" and found["read"]["outcomeDesc"] == "HTTP 404"

    # A transaction refused as a whole did nothing entry by entry: one event, failed.
    bad = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "DELETE", "url": "Appointment?status=nonsense-code"}},
            {"request": {"method": "PUT", "url": f"Patient/{pid}"},
             "resource": {"resourceType": "Patient", "id": "mismatch"}},
        ],
    }
    r = await client.post("", json=bad)
    assert r.status_code >= 400, r.text
    event = await only_event(client, r)
    assert codes(event["subtype"]) == {"transaction"} and event["outcome"] == "4"
    assert f"Patient/{pid}" in patient_refs(event)


async def test_search_audit_trail_by_patient(client: httpx.AsyncClient) -> None:
    pid = await _create(client, patient())
    other = await _create(client, patient())
    for _ in range(3):
        assert (await client.get(f"/Patient/{pid}")).status_code == 200
    assert (await client.get(f"/Patient/{other}")).status_code == 200
    r = await client.get(
        "/AuditEvent", params={"patient": f"Patient/{pid}", "subtype": "read", "_sort": "-date"}
    )
    assert r.status_code == 200, r.text
    found = [e["resource"] for e in r.json()["entry"]]
    assert len(found) == 3 and all(patient_refs(e) == {f"Patient/{pid}"} for e in found)
    dates = [e["recorded"] for e in found]
    assert dates == sorted(dates, reverse=True)
    # and by action / outcome / date, and read by id
    r = await client.get(
        "/AuditEvent",
        params={"patient": pid, "action": "C", "outcome": "0", "date": f"ge{START[:4]}-01-01"},
    )
    assert r.status_code == 200 and r.json()["total"] == 0  # recorded now, not in 2031
    r = await client.get("/AuditEvent", params={"patient": pid, "action": "C"})
    assert r.json()["total"] == 1
    aid = r.json()["entry"][0]["resource"]["id"]
    r = await client.get(f"/AuditEvent/{aid}")
    assert r.status_code == 200 and r.json()["action"] == "C"
    # paging
    r = await client.get("/AuditEvent", params={"patient": pid, "_count": "2"})
    assert len(r.json()["entry"]) == 2
    assert any(link["relation"] == "next" for link in r.json()["link"])
