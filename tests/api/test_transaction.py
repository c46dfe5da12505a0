"""transaction (all-or-nothing) and batch Bundles at the base."""

from __future__ import annotations

import httpx

from tests.api.factories import patient, practitioner, uid

FHIR = {"Content-Type": "application/fhir+json"}


def tx(entries: list[dict[str, object]], kind: str = "transaction") -> dict[str, object]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


async def test_transaction_resolves_urn_uuid_references(client: httpx.AsyncClient) -> None:
    pat_urn, doc_urn = f"urn:uuid:{uid()}-0000", f"urn:uuid:{uid()}-0001"
    family = f"Tx{uid()}"
    appt = {
        "resourceType": "Appointment",
        "status": "booked",
        "start": "2026-12-01T09:00:00-05:00",
        "end": "2026-12-01T09:30:00-05:00",
        "participant": [
            {"actor": {"reference": pat_urn}, "status": "accepted"},
            {"actor": {"reference": doc_urn}, "status": "accepted"},
        ],
    }
    bundle = tx(
        [
            {
                "fullUrl": "urn:uuid:appt",
                "resource": appt,
                "request": {"method": "POST", "url": "Appointment"},
            },
            {
                "fullUrl": pat_urn,
                "resource": patient(family),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": doc_urn,
                "resource": practitioner(),
                "request": {"method": "POST", "url": "Practitioner"},
            },
        ]
    )
    r = await client.post("", json=bundle, headers=FHIR)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "transaction-response"
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created"] * 3
    stored_appt = out["entry"][0]["resource"]
    refs = [p["actor"]["reference"] for p in stored_appt["participant"]]
    pat_id = out["entry"][1]["resource"]["id"]
    doc_id = out["entry"][2]["resource"]["id"]
    assert refs == [f"Patient/{pat_id}", f"Practitioner/{doc_id}"]
    found = (await client.get("/Appointment", params={"patient": f"Patient/{pat_id}"})).json()
    assert found["total"] == 1


async def test_failing_entry_rolls_back_everything(client: httpx.AsyncClient) -> None:
    family = f"Rollback{uid()}"
    bundle = tx(
        [
            {
                "fullUrl": "urn:uuid:a",
                "resource": patient(family),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {"resourceType": "Patient", "id": "p1", "gender": "robot"},
                "request": {"method": "PUT", "url": "Patient/p1"},
            },
        ]
    )
    r = await client.post("", json=bundle, headers=FHIR)
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"
    assert (await client.get("/Patient", params={"family": family})).json()["total"] == 0


async def test_runtime_failure_rolls_back(client: httpx.AsyncClient) -> None:
    family = f"Rollback{uid()}"
    rid = (await client.post("/Patient", json=patient(), headers=FHIR)).json()["id"]
    bundle = tx(
        [
            {
                "fullUrl": "urn:uuid:b",
                "resource": patient(family),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {**patient(), "id": rid},
                "request": {"method": "PUT", "url": f"Patient/{rid}", "ifMatch": 'W/"7"'},
            },
        ]
    )
    r = await client.post("", json=bundle, headers=FHIR)
    assert r.status_code == 412
    assert (await client.get("/Patient", params={"family": family})).json()["total"] == 0
    assert (await client.get(f"/Patient/{rid}")).json()["meta"]["versionId"] == "1"


async def test_batch_reports_each_entry(client: httpx.AsyncClient) -> None:
    family = f"Batch{uid()}"
    bundle = tx(
        [
            {"resource": patient(family), "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
            {"request": {"method": "GET", "url": f"Patient?family={family}"}},
        ],
        kind="batch",
    )
    r = await client.post("", json=bundle, headers=FHIR)
    assert r.status_code == 200
    out = r.json()
    assert out["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses[0] == "201 Created"
    assert statuses[1].startswith("404")
    assert out["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert out["entry"][2]["resource"]["total"] == 1


async def test_transaction_conditional_create_entry(client: httpx.AsyncClient) -> None:
    mrn = uid()
    body = patient()
    body["identifier"] = [{"system": "http://fhirserver.dev/sid/mrn", "value": mrn}]
    entry = {
        "fullUrl": "urn:uuid:c",
        "resource": body,
        "request": {
            "method": "POST",
            "url": "Patient",
            "ifNoneExist": f"identifier=http://fhirserver.dev/sid/mrn|{mrn}",
        },
    }
    first = (await client.post("", json=tx([entry]), headers=FHIR)).json()
    second = (await client.post("", json=tx([entry]), headers=FHIR)).json()
    assert first["entry"][0]["response"]["status"] == "201 Created"
    assert second["entry"][0]["response"]["status"] == "200 OK"


async def test_not_a_bundle_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post("", json=patient(), headers=FHIR)
    assert r.status_code == 400


async def test_conditional_reference_resolved_or_412(client: httpx.AsyncClient) -> None:
    mrn = uid()
    body = patient()
    body["identifier"] = [{"system": "http://fhirserver.dev/sid/mrn", "value": mrn}]
    pid = (await client.post("/Patient", json=body, headers=FHIR)).json()["id"]
    did = (await client.post("/Practitioner", json=practitioner(), headers=FHIR)).json()["id"]
    appt = {
        "resourceType": "Appointment",
        "status": "proposed",
        "participant": [
            {"actor": {"reference": f"Patient?identifier=http://fhirserver.dev/sid/mrn|{mrn}"},
             "status": "needs-action"},
            {"actor": {"reference": f"Practitioner/{did}"}, "status": "needs-action"},
        ],
    }
    entry = {"fullUrl": "urn:uuid:d", "resource": appt,
             "request": {"method": "POST", "url": "Appointment"}}
    out = (await client.post("", json=tx([entry]), headers=FHIR)).json()
    refs = [p["actor"]["reference"] for p in out["entry"][0]["resource"]["participant"]]
    assert refs[0] == f"Patient/{pid}"
    missing = dict(appt)
    missing["participant"] = [
        {"actor": {"reference": "Patient?identifier=http://fhirserver.dev/sid/mrn|none"},
         "status": "needs-action"}]
    bad = await client.post("", json=tx([{**entry, "resource": missing}]), headers=FHIR)
    assert bad.status_code == 412
