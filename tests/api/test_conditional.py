"""Conditional create, update and delete, including the 20-way create race."""

from __future__ import annotations

import asyncio

import httpx

from tests.api.factories import patient, uid

FHIR = {"Content-Type": "application/fhir+json"}
MRN = "http://fhirserver.dev/sid/mrn"


def with_mrn(mrn: str) -> dict[str, object]:
    body = patient()
    body["identifier"] = [{"system": MRN, "value": mrn}]
    return body


async def count(client: httpx.AsyncClient, mrn: str) -> int:
    bundle = (await client.get("/Patient", params={"identifier": f"{MRN}|{mrn}"})).json()
    total: int = bundle["total"]
    return total


async def test_conditional_create_none_one_many(client: httpx.AsyncClient) -> None:
    mrn = uid()
    hdr = {**FHIR, "If-None-Exist": f"identifier={MRN}|{mrn}"}
    first = await client.post("/Patient", json=with_mrn(mrn), headers=hdr)
    assert first.status_code == 201
    second = await client.post("/Patient", json=with_mrn(mrn), headers=hdr)
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    await client.post("/Patient", json=with_mrn(mrn), headers=FHIR)  # unconditional duplicate
    many = await client.post("/Patient", json=with_mrn(mrn), headers=hdr)
    assert many.status_code == 412
    assert await count(client, mrn) == 2


async def test_twenty_parallel_conditional_creates_make_one(client: httpx.AsyncClient) -> None:
    mrn = uid()
    hdr = {**FHIR, "If-None-Exist": f"identifier={MRN}|{mrn}"}
    results = await asyncio.gather(
        *(client.post("/Patient", json=with_mrn(mrn), headers=hdr) for _ in range(20))
    )
    codes = sorted(r.status_code for r in results)
    assert codes.count(201) == 1, codes
    assert codes.count(200) == 19, codes
    assert len({r.json()["id"] for r in results}) == 1
    assert await count(client, mrn) == 1


async def test_conditional_create_with_bad_criteria_is_400(client: httpx.AsyncClient) -> None:
    hdr = {**FHIR, "If-None-Exist": "nonsense-param=1"}
    r = await client.post("/Patient", json=patient(), headers=hdr)
    assert r.status_code == 400


async def test_conditional_update(client: httpx.AsyncClient) -> None:
    mrn = uid()
    q = {"identifier": f"{MRN}|{mrn}"}
    created = await client.put("/Patient", params=q, json=with_mrn(mrn), headers=FHIR)
    assert created.status_code == 201
    rid = created.json()["id"]
    body = {**with_mrn(mrn), "gender": "male"}
    updated = await client.put("/Patient", params=q, json=body, headers=FHIR)
    assert updated.status_code == 200
    assert updated.json()["id"] == rid and updated.json()["gender"] == "male"
    await client.post("/Patient", json=with_mrn(mrn), headers=FHIR)
    many = await client.put("/Patient", params=q, json=body, headers=FHIR)
    assert many.status_code == 412


async def test_conditional_delete(client: httpx.AsyncClient) -> None:
    mrn = uid()
    q = {"identifier": f"{MRN}|{mrn}"}
    assert (await client.delete("/Patient", params=q)).status_code == 204
    rid = (await client.post("/Patient", json=with_mrn(mrn), headers=FHIR)).json()["id"]
    assert (await client.delete("/Patient", params=q)).status_code in (200, 204)
    assert (await client.get(f"/Patient/{rid}")).status_code == 410
    await client.post("/Patient", json=with_mrn(mrn), headers=FHIR)
    await client.post("/Patient", json=with_mrn(mrn), headers=FHIR)
    assert (await client.delete("/Patient", params=q)).status_code == 412
    assert await count(client, mrn) == 2
