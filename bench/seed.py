"""Seed a fresh server through the FHIR API, with transaction Bundles.

One Practitioner and one Schedule (its actor), then Patients and Slots on that Schedule,
in transaction Bundles of `batch` entries each. Returns the ids the scenarios use.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

FHIR_JSON = "application/fhir+json"
_FAMILIES = ("Garcia", "Smith", "Nguyen", "Okafor", "Kowalski", "Haddad", "Tanaka", "Silva")
_GIVEN = ("Ana", "Ben", "Chloe", "Dev", "Eva", "Femi", "Gus", "Hana", "Ivan", "Jun")


@dataclass
class SeedInfo:
    """What was created: the ids scenarios need, and how long seeding took."""

    patient_ids: list[str] = field(default_factory=list)
    practitioner_id: str = ""
    schedule_id: str = ""
    slot_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def slot_count(self) -> int:
        """How many Slots were seeded."""
        return len(self.slot_ids)


def patient(i: int) -> dict[str, Any]:
    """A small valid Patient, varied by `i`."""
    return {
        "resourceType": "Patient",
        "active": True,
        "name": [{"family": _FAMILIES[i % len(_FAMILIES)],
                  "given": [_GIVEN[i % len(_GIVEN)], f"B{i}"]}],
        "gender": ("female", "male", "other", "unknown")[i % 4],
        "birthDate": f"{1940 + i % 80:04d}-{1 + i % 12:02d}-{1 + i % 28:02d}",
    }


def slot(schedule_ref: str, i: int) -> dict[str, Any]:
    """A free 15-minute Slot on the schedule, the i-th from 2030-01-07T08:00Z."""
    start = datetime(2030, 1, 7, 8, tzinfo=UTC) + timedelta(minutes=15 * i)
    iso = "%Y-%m-%dT%H:%M:%SZ"
    return {
        "resourceType": "Slot",
        "schedule": {"reference": schedule_ref},
        "status": "free",
        "start": start.strftime(iso),
        "end": (start + timedelta(minutes=15)).strftime(iso),
    }


def _entry(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource,
                             "request": {"method": "POST", "url": resource["resourceType"]}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def _post_transaction(client: httpx.Client, entries: list[dict[str, Any]]) -> list[str]:
    """POST a transaction Bundle; return the `Type/id` of each entry's response location."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    resp = client.post("", json=bundle, headers={"Content-Type": FHIR_JSON,
                                                 "Accept": FHIR_JSON})
    if resp.status_code != 200:
        raise RuntimeError(f"seed transaction failed: HTTP {resp.status_code}: "
                           f"{resp.text[:500]}")
    out = []
    for item in resp.json().get("entry", []):
        location = item.get("response", {}).get("location", "")
        parts = location.split("/_history")[0].split("/")
        out.append("/".join(parts[-2:]))
    if len(out) != len(entries):
        raise RuntimeError(f"seed transaction returned {len(out)} entries for {len(entries)}")
    return out


def seed(base: str, patients: int = 2000, slots: int = 2000, batch: int = 250,
         timeout: float = 120.0, bearer: str | None = None) -> SeedInfo:
    """Create the benchmark data set on the server at `base` (with `bearer` as token)."""
    info = SeedInfo()
    t0 = time.perf_counter()
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    with httpx.Client(base_url=base, timeout=timeout, headers=headers) as client:
        prac_url, sched_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
        prac, sched = _post_transaction(client, [
            _entry({"resourceType": "Practitioner", "active": True,
                    "name": [{"family": "Bench", "given": ["Mark"]}]}, prac_url),
            _entry({"resourceType": "Schedule", "active": True,
                    "actor": [{"reference": prac_url}]}, sched_url),
        ])
        info.practitioner_id = prac.split("/")[1]
        info.schedule_id = sched.split("/")[1]
        for first in range(0, patients, batch):
            refs = _post_transaction(client, [_entry(patient(i)) for i in
                                              range(first, min(patients, first + batch))])
            info.patient_ids.extend(r.split("/")[1] for r in refs)
        for first in range(0, slots, batch):
            refs = _post_transaction(client, [_entry(slot(sched, i)) for i in
                                              range(first, min(slots, first + batch))])
            info.slot_ids.extend(r.split("/")[1] for r in refs)
    info.seconds = round(time.perf_counter() - t0, 2)
    return info
