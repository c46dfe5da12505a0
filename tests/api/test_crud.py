"""Create, read, vread, update, patch, delete, history over real HTTP."""

from __future__ import annotations

import asyncio

import httpx

from tests.api.factories import patient, uid

FHIR = {"Content-Type": "application/fhir+json"}


async def test_create_read_vread(client: httpx.AsyncClient) -> None:
    r = await client.post("/Patient", json=patient(), headers=FHIR)
    assert r.status_code == 201
    body = r.json()
    rid = body["id"]
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["location"].endswith(f"/Patient/{rid}/_history/1")
    assert r.headers["content-type"].startswith("application/fhir+json")
    got = await client.get(f"/Patient/{rid}")
    assert got.status_code == 200
    assert got.json() == body
    assert got.headers["etag"] == 'W/"1"'
    assert "last-modified" in got.headers
    v1 = await client.get(f"/Patient/{rid}/_history/1")
    assert v1.status_code == 200 and v1.json() == body
    assert (await client.get(f"/Patient/{rid}/_history/9")).status_code == 404


async def test_update_versions_and_if_match(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json=patient(), headers=FHIR)).json()
    rid = created["id"]
    created["gender"] = "other"
    r = await client.put(f"/Patient/{rid}", json=created, headers={**FHIR, "If-Match": 'W/"1"'})
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2" and r.json()["gender"] == "other"
    stale = await client.put(f"/Patient/{rid}", json=created, headers={**FHIR, "If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert (await client.get(f"/Patient/{rid}")).json()["meta"]["versionId"] == "2"


async def test_update_creates_with_client_id(client: httpx.AsyncClient) -> None:
    rid = f"client-{uid()}"
    body = {**patient(), "id": rid}
    r = await client.put(f"/Patient/{rid}", json=body, headers=FHIR)
    assert r.status_code == 201
    assert r.json()["id"] == rid
    again = await client.put(f"/Patient/{rid}", json=body, headers=FHIR)
    assert again.status_code == 200 and again.json()["meta"]["versionId"] == "2"


async def test_update_id_mismatch_is_400(client: httpx.AsyncClient) -> None:
    r = await client.put("/Patient/abc", json={**patient(), "id": "xyz"}, headers=FHIR)
    assert r.status_code == 400
    assert (await client.get("/Patient/abc")).status_code == 404


async def test_parallel_if_match_updates_exactly_one_wins(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json=patient(), headers=FHIR)).json()
    rid = created["id"]

    async def put(i: int) -> int:
        body = {**created, "name": [{"family": f"Racer{i}"}]}
        r = await client.put(f"/Patient/{rid}", json=body, headers={**FHIR, "If-Match": 'W/"1"'})
        return r.status_code

    codes = await asyncio.gather(*(put(i) for i in range(10)))
    assert sorted(codes).count(200) == 1
    assert all(c in (200, 409, 412) for c in codes)
    hist = (await client.get(f"/Patient/{rid}/_history")).json()
    assert [e["resource"]["meta"]["versionId"] for e in hist["entry"]] == ["2", "1"]


async def test_patch(client: httpx.AsyncClient) -> None:
    rid = (await client.post("/Patient", json=patient(), headers=FHIR)).json()["id"]
    ops = [{"op": "replace", "path": "/gender", "value": "male"}]
    r = await client.patch(
        f"/Patient/{rid}", json=ops, headers={"Content-Type": "application/json-patch+json"}
    )
    assert r.status_code == 200
    assert r.json()["gender"] == "male" and r.json()["meta"]["versionId"] == "2"
    bad_code = [{"op": "replace", "path": "/gender", "value": "robot"}]
    r = await client.patch(
        f"/Patient/{rid}", json=bad_code, headers={"Content-Type": "application/json-patch+json"}
    )
    assert r.status_code == 400
    stale = await client.patch(
        f"/Patient/{rid}",
        json=ops,
        headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'},
    )
    assert stale.status_code == 412
    not_apply = [{"op": "remove", "path": "/nothere"}]
    r = await client.patch(
        f"/Patient/{rid}", json=not_apply, headers={"Content-Type": "application/json-patch+json"}
    )
    assert r.status_code == 422
    assert (await client.get(f"/Patient/{rid}")).json()["meta"]["versionId"] == "2"


async def test_delete_then_gone_and_history(client: httpx.AsyncClient) -> None:
    rid = (await client.post("/Patient", json=patient(), headers=FHIR)).json()["id"]
    r = await client.delete(f"/Patient/{rid}")
    assert r.status_code in (200, 204)
    gone = await client.get(f"/Patient/{rid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert (await client.delete(f"/Patient/{rid}")).status_code == 204
    hist = (await client.get(f"/Patient/{rid}/_history")).json()
    assert hist["type"] == "history"
    methods = [e["request"]["method"] for e in hist["entry"]]
    assert methods == ["DELETE", "POST"]
    assert "resource" not in hist["entry"][0]
    assert (await client.get(f"/Patient/{rid}/_history/2")).status_code == 410
    assert (await client.get("/Patient/never-was")).status_code == 404


async def test_type_history_pages(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await client.post(
            "/Device", json={"resourceType": "Device", "status": "active"}, headers=FHIR
        )
    first = (await client.get("/Device/_history", params={"_count": 2})).json()
    assert len(first["entry"]) == 2
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = (await client.get(nxt)).json()
    seen1 = {e["fullUrl"] + e["response"]["etag"] for e in first["entry"]}
    seen2 = {e["fullUrl"] + e["response"]["etag"] for e in second["entry"]}
    assert seen1.isdisjoint(seen2)


async def test_prefer_return(client: httpx.AsyncClient) -> None:
    minimal = await client.post(
        "/Patient", json=patient(), headers={**FHIR, "Prefer": "return=minimal"}
    )
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["location"]
    oo = await client.post(
        "/Patient", json=patient(), headers={**FHIR, "Prefer": "return=OperationOutcome"}
    )
    assert oo.status_code == 201 and oo.json()["resourceType"] == "OperationOutcome"


async def test_bad_input_writes_nothing(client: httpx.AsyncClient) -> None:
    family = f"Nobody{uid()}"
    bad = {**patient(family), "bogus": 1}
    r = await client.post("/Patient", json=bad, headers=FHIR)
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"
    wrong_type = {**patient(family), "birthDate": 12}
    assert (await client.post("/Patient", json=wrong_type, headers=FHIR)).status_code == 400
    malformed = await client.post("/Patient", content=b'{"resourceType": "Pat', headers=FHIR)
    assert malformed.status_code == 400
    mismatch = await client.post("/Practitioner", json=patient(family), headers=FHIR)
    assert mismatch.status_code == 400
    found = (await client.get("/Patient", params={"family": family})).json()
    assert found["total"] == 0


async def test_formats_and_media_types(client: httpx.AsyncClient) -> None:
    rid = (await client.post("/Patient", json=patient(), headers=FHIR)).json()["id"]
    assert (await client.get(f"/Patient/{rid}", params={"_format": "json"})).status_code == 200
    assert (await client.get(f"/Patient/{rid}", params={"_format": "xml"})).status_code == 415
    xml = await client.post(
        "/Patient", content=b"<Patient/>", headers={"Content-Type": "application/fhir+xml"}
    )
    assert xml.status_code == 415
    assert xml.json()["resourceType"] == "OperationOutcome"
    acc = await client.get(f"/Patient/{rid}", headers={"Accept": "application/fhir+xml"})
    assert acc.status_code == 406


async def test_body_too_large(client: httpx.AsyncClient) -> None:
    big = {
        **patient(),
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">' + "x" * 300_000 + "</div>",
        },
    }
    r = await client.post("/Patient", json=big, headers=FHIR)
    assert r.status_code == 413
    assert r.json()["issue"][0]["code"] == "too-costly"


async def test_unknown_type_and_method(client: httpx.AsyncClient) -> None:
    r = await client.get("/Observation/1")
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
    r = await client.request("TRACE", "/Patient/1")
    assert r.status_code == 405 and r.json()["resourceType"] == "OperationOutcome"
