"""$book with real patient tokens: an Idempotency-Key belongs to its caller.

Patients race for one offered time, all sending the same Idempotency-Key: exactly one
books, nobody receives another patient's appointment, a retry by the winner returns the
winner's booking, and the invariant scan over all claims finds no overlap.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from fhirserver.phi.codec import PhiCodec
from fhirserver.storage.claims import find_overlaps
from tests.api.scheduling_factories import bookable_practitioner
from tests.auth.conftest import AuthServer
from tests.auth.helpers import PASSWORD, SEEDER, SEEDER_SECRET, client_token_sync, user_token

FHIR = {"Content-Type": "application/fhir+json"}
RACERS = 8


def _book(offer: str, patient: str) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [
        {"name": "appointment-id", "valueString": offer},
        {"name": "patient", "valueString": f"Patient/{patient}"}]}


def _booked_id(r: httpx.Response) -> str:
    body = r.json()
    appt = body["entry"][0]["resource"] if body["resourceType"] == "Bundle" else body
    assert appt["resourceType"] == "Appointment" and appt["status"] == "booked", body
    return str(appt["id"])


async def test_same_idempotency_key_from_different_patients(auth_server: AuthServer) -> None:
    srv = auth_server
    seed = client_token_sync(srv.auth_base, SEEDER, SEEDER_SECRET, "system/*.cruds")
    async with httpx.AsyncClient(base_url=srv.fhir_base, timeout=60,
                                 headers={"Authorization": f"Bearer {seed}"}) as admin:
        _, sched, _ = await bookable_practitioner(admin)
        patients = []
        for i in range(RACERS):
            r = await admin.post("/Patient", json={"resourceType": "Patient",
                                                   "name": [{"family": f"Racer{i}"}]},
                                 headers=FHIR)
            assert r.status_code == 201, r.text
            patients.append(r.json()["id"])
        r = await admin.get("/Slot", params={"schedule": f"Schedule/{sched}", "status": "free",
                                             "_count": "50"})
        offers = [e["resource"]["id"] for e in r.json()["entry"]]
    assert len(offers) > 2
    tokens = []
    for i, pid in enumerate(patients):
        srv.auth.add_user(f"racer-{i}", "patient", PASSWORD, f"Patient/{pid}", f"Racer {i}")
        async with httpx.AsyncClient(timeout=30, follow_redirects=False) as http:
            tokens.append(await user_token(http, srv.auth_base, srv.fhir_base, f"racer-{i}",
                                           "launch/patient patient/*.cruds"))

    async def book(i: int, offer: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=srv.fhir_base, timeout=120) as c:
            return await c.post("/Appointment/$book", json=_book(offer, patients[i]), headers={
                **FHIR, "Authorization": f"Bearer {tokens[i]}", "Idempotency-Key": "same-key"})

    # The race: everyone, one time, one key.
    results = await asyncio.gather(*(book(i, offers[0]) for i in range(RACERS)))
    winners = [i for i, r in enumerate(results) if r.status_code == 201]
    assert len(winners) == 1, [r.status_code for r in results]
    losers = {r.status_code: r.text[:300] for i, r in enumerate(results) if i != winners[0]}
    assert set(losers) == {409}, losers
    won = _booked_id(results[winners[0]])
    # The winner's retry is the winner's booking; a loser's retry with the same key on
    # another time books that time for the loser, not the winner's appointment back.
    again = await book(winners[0], offers[0])
    assert again.status_code in (200, 201) and _booked_id(again) == won
    loser = (winners[0] + 1) % RACERS
    other = await book(loser, offers[2])
    assert other.status_code == 201, other.text
    assert _booked_id(other) != won
    assert f"Patient/{patients[loser]}" in other.text

    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(srv.settings.mongodb_uri,
                                                                tz_aware=True)
    try:
        cipher = PhiCodec.from_settings(srv.settings).cipher
        db = mongo[srv.settings.db_name]
        assert await find_overlaps(db, now=srv.clock.now(), cipher=cipher) == []
    finally:
        await mongo.close()
