"""The trail is read-only through the API: every write of AuditEvent answers 405."""

from __future__ import annotations

import httpx

from tests.audit.conftest import codes

EVENT = {
    "resourceType": "AuditEvent",
    "id": "forged",
    "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
    "recorded": "2026-01-01T00:00:00Z",
    "agent": [{"requestor": True}],
    "source": {"observer": {"display": "x"}},
}


def _is_405(r: httpx.Response) -> None:
    assert r.status_code == 405, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "not-supported"


async def test_every_write_is_405(client: httpx.AsyncClient) -> None:
    r = await client.get("/AuditEvent", params={"_count": "1"})
    existing = r.json()["entry"][0]["resource"]["id"] if r.json().get("entry") else "x"
    _is_405(await client.post("/AuditEvent", json=EVENT))
    _is_405(await client.post("/AuditEvent", content=b"not json"))
    _is_405(await client.put(f"/AuditEvent/{existing}", json={**EVENT, "id": existing}))
    _is_405(await client.put("/AuditEvent?outcome=0", json=EVENT))
    _is_405(
        await client.patch(
            f"/AuditEvent/{existing}",
            json=[{"op": "replace", "path": "/outcome", "value": "4"}],
            headers={"Content-Type": "application/json-patch+json"},
        )
    )
    _is_405(await client.delete(f"/AuditEvent/{existing}"))
    _is_405(await client.delete("/AuditEvent?outcome=0"))
    _is_405(await client.get("/AuditEvent/_history"))
    _is_405(await client.get(f"/AuditEvent/{existing}/_history"))
    _is_405(await client.get(f"/AuditEvent/{existing}/_history/1"))
    if existing != "x":
        assert (await client.get(f"/AuditEvent/{existing}")).status_code == 200


async def test_bundle_entries_cannot_write_the_trail(client: httpx.AsyncClient) -> None:
    for btype in ("transaction", "batch"):
        bundle = {
            "resourceType": "Bundle",
            "type": btype,
            "entry": [
                {"resource": EVENT, "request": {"method": "POST", "url": "AuditEvent"}},
                {"request": {"method": "DELETE", "url": "AuditEvent/forged"}},
            ],
        }
        r = await client.post("", json=bundle)
        if btype == "transaction":
            _is_405(r)
        else:
            assert r.status_code == 200
            statuses = [e["response"]["status"] for e in r.json()["entry"]]
            assert statuses == ["405 Method Not Allowed"] * 2
    r = await client.get("/AuditEvent", params={"_id": "forged"})
    assert r.json()["total"] == 0


async def test_capability_statement_offers_read_and_search_only(client: httpx.AsyncClient) -> None:
    cs = (await client.get("/metadata")).json()
    (res,) = [x for x in cs["rest"][0]["resource"] if x["type"] == "AuditEvent"]
    assert {i["code"] for i in res["interaction"]} == {"read", "search-type"}
    names = {p["name"] for p in res["searchParam"]}
    assert {"patient", "date", "agent", "who", "action", "type", "subtype", "outcome"} <= names
    assert {"entity", "_id"} <= names


async def test_writes_to_the_trail_are_themselves_audited(client: httpx.AsyncClient) -> None:
    r = await client.delete("/AuditEvent/some-id")
    assert r.status_code == 405
    found = await client.get(
        "/AuditEvent", params={"entity-identifier": r.headers["x-request-id"]}
    )
    (event,) = [e["resource"] for e in found.json()["entry"]]
    assert event["action"] == "D" and event["outcome"] == "4"
    assert codes(event["subtype"]) == {"delete"}
