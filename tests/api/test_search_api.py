"""Search over HTTP: Bundles, paging, includes, chains, summary, strictness."""

from __future__ import annotations

import httpx

from tests.api.factories import appointment, patient, practitioner, uid

FHIR = {"Content-Type": "application/fhir+json"}


async def create(client: httpx.AsyncClient, body: dict[str, object]) -> str:
    r = await client.post(f"/{body['resourceType']}", json=body, headers=FHIR)
    assert r.status_code == 201, r.text
    rid: str = r.json()["id"]
    return rid


def link(bundle: dict[str, object], rel: str) -> str | None:
    for item in bundle.get("link", []):  # type: ignore[attr-defined]
        if item["relation"] == rel:
            url: str = item["url"]
            return url
    return None


async def test_searchset_shape(client: httpx.AsyncClient) -> None:
    family = f"Shape{uid()}"
    rid = await create(client, patient(family))
    r = await client.get("/Patient", params={"family": family})
    assert r.status_code == 200
    b = r.json()
    assert b["resourceType"] == "Bundle" and b["type"] == "searchset" and b["total"] == 1
    entry = b["entry"][0]
    assert entry["fullUrl"].endswith(f"/Patient/{rid}")
    assert entry["search"]["mode"] == "match"
    assert link(b, "self")


async def test_paging_is_stable_while_data_changes(client: httpx.AsyncClient) -> None:
    family = f"Page{uid()}"
    ids = {await create(client, patient(family)) for _ in range(7)}
    first = (await client.get("/Patient", params={"family": family, "_count": 3})).json()
    seen = [e["resource"]["id"] for e in first["entry"]]
    # Data changes between pages: a new match and a deletion of an already-seen one.
    newcomer = await create(client, patient(family))
    await client.delete(f"/Patient/{seen[0]}")
    url = link(first, "next")
    pages = 1
    while url:
        page = (await client.get(url)).json()
        seen.extend(e["resource"]["id"] for e in page.get("entry", []))
        url = link(page, "next")
        pages += 1
        assert pages < 10
    assert len(seen) == len(set(seen)), "a resource appeared on two pages"
    # Every resource that existed throughout is seen exactly once; the newcomer may sort
    # before or after the cursor, so either outcome is correct.
    assert set(seen) - {newcomer} == ids
    back = link(page, "previous")
    assert back is not None
    prev_page = (await client.get(back)).json()
    assert prev_page["entry"]


async def test_sort_and_count(client: httpx.AsyncClient) -> None:
    tag = uid()
    for given, birth in (("B", "1990-01-01"), ("A", "1970-01-01"), ("C", "1980-01-01")):
        await create(
            client,
            patient(
                f"Sort{tag}", birthDate=birth, name=[{"family": f"Sort{tag}", "given": [given]}]
            ),
        )
    # Patient birthdate is encrypted at rest (docs/phi.md): its sort key is blank, so a sort
    # by it is refused (400) rather than silently unordered. Sorting is shown on Practitioner.
    refused = await client.get("/Patient", params={"family": f"Sort{tag}", "_sort": "-birthdate"})
    assert refused.status_code == 400 and "encrypted" in refused.text
    for given in ("B", "A", "C"):
        doc = {**practitioner(f"Sort{tag}"), "name": [{"family": f"Sort{tag}", "given": [given]}]}
        await create(client, doc)
    b = (
        await client.get("/Practitioner", params={"family": f"Sort{tag}", "_sort": "-given"})
    ).json()
    assert [e["resource"]["name"][0]["given"][0] for e in b["entry"]] == ["C", "B", "A"]
    c = (await client.get("/Patient", params={"family": f"Sort{tag}", "_summary": "count"})).json()
    assert c["total"] == 3 and "entry" not in c


async def test_include_revinclude_and_chain(client: httpx.AsyncClient) -> None:
    fam = f"Chain{uid()}"
    pid = await create(client, patient())
    did = await create(client, practitioner(fam))
    aid = await create(
        client,
        appointment(
            f"Patient/{pid}", f"Practitioner/{did}", "2026-12-02T09:00:00Z", "2026-12-02T09:30:00Z"
        ),
    )
    chained = (await client.get("/Appointment", params={"practitioner.family": fam})).json()
    assert [e["resource"]["id"] for e in chained["entry"]] == [aid]
    inc = (
        await client.get("/Appointment", params={"_id": aid, "_include": "Appointment:patient"})
    ).json()
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in inc["entry"]}
    assert modes == {("Appointment", "match"), ("Patient", "include")}
    rev = (
        await client.get("/Patient", params={"_id": pid, "_revinclude": "Appointment:patient"})
    ).json()
    assert {e["resource"]["resourceType"] for e in rev["entry"]} == {"Patient", "Appointment"}
    assert rev["total"] == 1


async def test_elements_and_summary(client: httpx.AsyncClient) -> None:
    family = f"Elem{uid()}"
    await create(client, patient(family))
    b = (await client.get("/Patient", params={"family": family, "_elements": "gender"})).json()
    res = b["entry"][0]["resource"]
    assert set(res) == {"resourceType", "id", "meta", "gender"}
    assert any(t["code"] == "SUBSETTED" for t in res["meta"]["tag"])


async def test_unknown_parameter_warns_or_fails_strict(client: httpx.AsyncClient) -> None:
    lenient = (await client.get("/Patient", params={"shoe-size": "9", "_count": 1})).json()
    outcomes = [e for e in lenient.get("entry", []) if e["search"]["mode"] == "outcome"]
    assert outcomes and outcomes[0]["resource"]["issue"][0]["severity"] == "warning"
    strict = await client.get(
        "/Patient", params={"shoe-size": "9"}, headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400
    bad_date = await client.get("/Patient", params={"birthdate": "not-a-date"})
    assert bad_date.status_code == 400


async def test_post_search(client: httpx.AsyncClient) -> None:
    family = f"Post{uid()}"
    await create(client, patient(family))
    r = await client.post("/Patient/_search", data={"family": family})
    assert r.status_code == 200 and r.json()["total"] == 1


async def test_date_search_in_values_own_offset(client: httpx.AsyncClient) -> None:
    pid = await create(client, patient())
    did = await create(client, practitioner())
    await create(
        client,
        appointment(
            f"Patient/{pid}",
            f"Practitioner/{did}",
            "2026-11-23T23:30:00-05:00",
            "2026-11-23T23:45:00-05:00",
        ),
    )
    on_day = (
        await client.get("/Appointment", params={"patient": pid, "date": "2026-11-23"})
    ).json()
    next_day = (
        await client.get("/Appointment", params={"patient": pid, "date": "2026-11-24"})
    ).json()
    assert on_day["total"] == 1 and next_day["total"] == 0
    instant = (
        await client.get("/Appointment", params={"patient": pid, "date": "ge2026-11-24T04:00:00Z"})
    ).json()
    assert instant["total"] == 1


async def test_location_near(client: httpx.AsyncClient) -> None:
    tag = uid()

    def loc(name: str, lat: float, lng: float) -> dict[str, object]:
        return {"resourceType": "Location", "name": f"{name}{tag}", "status": "active",
                "position": {"latitude": lat, "longitude": lng}}

    boston = await create(client, loc("Boston", 42.3601, -71.0589))
    await create(client, loc("Denver", 39.7392, -104.9903))
    cambridge = await create(client, loc("Cambridge", 42.3736, -71.1097))
    near = (await client.get("/Location", params={
        "near": "42.36|-71.06|10|km", "name:contains": tag})).json()
    assert {e["resource"]["id"] for e in near.get("entry", [])} == {boston, cambridge}


async def test_history_since(client: httpx.AsyncClient) -> None:
    rid = await create(client, patient())
    first = (await client.get(f"/Patient/{rid}")).json()
    since = first["meta"]["lastUpdated"]
    await client.put(f"/Patient/{rid}", json={**first, "gender": "other"}, headers=FHIR)
    hist = (await client.get(f"/Patient/{rid}/_history", params={"_since": since})).json()
    assert len(hist["entry"]) == 2
    later = (await client.get(f"/Patient/{rid}/_history",
                              params={"_since": "2999-01-01T00:00:00Z"})).json()
    assert "entry" not in later
    bad = await client.get(f"/Patient/{rid}/_history", params={"_since": "yesterday"})
    assert bad.status_code == 400
