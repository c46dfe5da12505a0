"""CapabilityStatement, health, readiness, metrics, request ids."""

from __future__ import annotations

import httpx

from fhirserver.fhir.searchparams import SEARCH_PARAMS
from fhirserver.fhir.types import RESOURCE_TYPES


async def test_capability_statement(client: httpx.AsyncClient) -> None:
    r = await client.get("/metadata")
    assert r.status_code == 200
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1" and cs["kind"] == "instance"
    resources = {res["type"]: res for res in cs["rest"][0]["resource"]}
    assert set(resources) == set(RESOURCE_TYPES)
    slot_params = {p["name"] for p in resources["Slot"]["searchParam"]}
    assert set(SEARCH_PARAMS["Slot"]) <= slot_params
    assert {"schedule", "start", "end", "status"} <= slot_params
    assert resources["Appointment"]["conditionalCreate"] is True
    codes = {i["code"] for i in cs["rest"][0]["interaction"]}
    assert {"transaction", "batch"} <= codes


async def test_health_ready_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = (await client.get("/ready")).json()
    assert ready == {"status": "ready", "mongodb": True, "redis": True}
    await client.get("/metadata")
    root = str(client.base_url).rsplit("/fhir", 1)[0]
    metrics = await client.get(f"{root}/metrics")
    assert metrics.status_code == 200
    assert 'fhirserver_requests_total{interaction="capabilities"' in metrics.text
    assert "fhirserver_request_seconds_bucket" in metrics.text
    assert "# TYPE fhirserver_group_commit_seconds histogram" in metrics.text


async def test_request_id_echoed(client: httpx.AsyncClient) -> None:
    r = await client.get("/metadata", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert len((await client.get("/metadata")).headers["x-request-id"]) == 32


async def test_operations_declared_and_served(client: httpx.AsyncClient) -> None:
    cs = (await client.get("/metadata")).json()
    appt = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Appointment")
    names = {o["name"] for o in appt["operation"]}
    assert {"find", "hold", "book"} <= names
    assert {o["name"] for o in cs["rest"][0]["operation"]} == {"bulk-publish"}
    find = (await client.get("/OperationDefinition/appointment-find")).json()
    assert find["resourceType"] == "OperationDefinition" and find["code"] == "find"
    assert (await client.get("/OperationDefinition/nope")).status_code == 404
