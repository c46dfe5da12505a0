"""$bulk-publish (SMART Scheduling Links): manifest, NDJSON files, caching, _since."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from tests.api.scheduling_factories import FHIR, bookable_practitioner, patient_id


def ndjson(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+ndjson")
    return [orjson.loads(line) for line in r.content.splitlines() if line]


async def test_manifest_and_files(client: httpx.AsyncClient) -> None:
    _, sched, loc = await bookable_practitioner(client)
    r = await client.get("/$bulk-publish")
    assert r.status_code == 200 and "max-age" in r.headers["cache-control"]
    manifest = r.json()
    assert manifest["error"] == [] and manifest["transactionTime"]
    urls = {o["type"]: o["url"] for o in manifest["output"]}
    assert set(urls) == {"Location", "Schedule", "Slot"}
    locations = ndjson(await client.get(urls["Location"]))
    assert loc in {x["id"] for x in locations}
    schedules = {s["id"]: s for s in ndjson(await client.get(urls["Schedule"]))}
    assert schedules[sched]["actor"][0] == {"reference": f"Location/{loc}"}
    mine = [s for s in ndjson(await client.get(urls["Slot"]))
            if s["schedule"]["reference"] == f"Schedule/{sched}"]
    assert mine and {s["status"] for s in mine} == {"free"}
    assert all(s["resourceType"] == "Slot" and s["start"] < s["end"] for s in mine)

    # A booking publishes as busy at once. The slot starts an hour from now at the
    # earliest: one starting this minute may pass before the $book lands.
    soon = datetime.now(UTC) + timedelta(hours=1)
    later = [s for s in mine if datetime.fromisoformat(s["start"]) > soon]
    first = min(later, key=lambda s: datetime.fromisoformat(s["start"]))
    pat = await patient_id(client)
    booked = await client.post("/Appointment/$book", headers=FHIR, json={
        "resourceType": "Parameters", "parameter": [
            {"name": "appointment-id", "valueString": first["id"]},
            {"name": "patient", "valueString": f"Patient/{pat}"}]})
    assert booked.status_code == 201, booked.text
    again = {s["id"]: s for s in ndjson(await client.get(urls["Slot"]))}
    assert again[first["id"]]["status"] == "busy"


async def test_since_and_bad_input(client: httpx.AsyncClient) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    r = await client.get("/$bulk-publish", params={"_since": future})
    urls = {o["type"]: o["url"] for o in r.json()["output"]}
    assert "_since=" in urls["Schedule"]
    assert ndjson(await client.get(urls["Schedule"])) == []
    assert (await client.get("/$bulk-publish", params={"_since": "yesterday"})).status_code == 400
    assert (await client.get("/$bulk-publish", params={"foo": "1"})).status_code == 400
    missing = await client.get("/$bulk-publish/Patient.ndjson")
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
