"""`fhirserver serve` as a user runs it: embedded store, demo data, FHIR clients, clean stop."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fhirclient import client as smart_client
from fhirclient.models.patient import Patient as FcPatient
from fhirclient.models.practitioner import Practitioner as FcPractitioner
from fhirpy import AsyncFHIRClient

from tests.api.conftest import free_port
from tests.serve_helpers import start_server, stop, wait_ready


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    data_dir = tmp_path_factory.mktemp("served")
    port = free_port()
    proc = start_server(data_dir, port)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        wait_ready(proc, base)
        yield base, data_dir, proc
    finally:
        if proc.poll() is None:
            stop(proc)


def test_demo_data_is_served(served: tuple[str, Path, subprocess.Popen[bytes]]) -> None:
    base, _, _ = served
    for rtype in (
        "Organization",
        "Location",
        "Practitioner",
        "PractitionerRole",
        "HealthcareService",
        "Schedule",
        "Slot",
        "Patient",
        "Appointment",
    ):
        bundle = httpx.get(f"{base}/{rtype}", params={"_summary": "count"}).json()
        assert bundle["total"] > 0, rtype


def test_fhirclient_reads_searches_creates(
    served: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    base, _, _ = served
    smart = smart_client.FHIRClient(settings={"app_id": "tests", "api_base": base})
    practitioners = list(
        FcPractitioner.where(struct={"_count": "50"}).perform_resources_iter(smart.server)
    )
    assert practitioners
    first = FcPractitioner.read(practitioners[0].id, smart.server)
    assert first.id == practitioners[0].id
    patient = FcPatient(
        {
            "resourceType": "Patient",
            "gender": "female",
            "name": [{"family": "Fhirclient", "given": ["Test"]}],
        }
    )
    created = patient.create(smart.server)
    assert created is not None and created["id"]
    found = list(
        FcPatient.where(struct={"family": "Fhirclient"}).perform_resources_iter(smart.server)
    )
    assert created["id"] in {p.id for p in found}


async def test_fhirpy_reads_searches_creates(
    served: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    base, _, _ = served
    fc = AsyncFHIRClient(base)
    slots = await fc.resources("Slot").search(status="free").limit(10).fetch()
    assert slots
    schedule_ref = slots[0]["schedule"]["reference"]
    bookable = await fc.resources("Slot").search(schedule=schedule_ref, status="free").fetch()
    assert bookable and all(s["schedule"]["reference"] == schedule_ref for s in bookable)
    reread = await fc.reference("Slot", bookable[0].id).to_resource()
    assert reread["start"] == bookable[0]["start"] and reread["status"] == "free"
    pat = fc.resource("Patient", name=[{"family": "Fhirpy"}], gender="male")
    await pat.save()
    assert pat.id
    again = await fc.reference("Patient", pat.id).to_resource()
    assert again["name"][0]["family"] == "Fhirpy"


def test_data_dir_in_use_fails_fast_and_restart_keeps_data(
    served: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    base, data_dir, proc = served
    created = httpx.post(
        f"{base}/Patient",
        json={"resourceType": "Patient", "gender": "other"},
        headers={"Content-Type": "application/fhir+json"},
    ).json()
    second = start_server(data_dir, free_port())
    assert second.wait(timeout=30) == 2
    assert b"in use" in second.stderr.read()  # type: ignore[union-attr]
    assert stop(proc) == 0
    port = free_port()
    again = start_server(data_dir, port)
    base2 = f"http://127.0.0.1:{port}/fhir"
    try:
        wait_ready(again, base2)
        got = httpx.get(f"{base2}/Patient/{created['id']}")
        assert got.status_code == 200
        # Demo data is loaded once: still exactly one copy of each demo resource.
        orgs = httpx.get(f"{base2}/Organization", params={"_summary": "count"}).json()
        first_orgs = orgs["total"]
        assert first_orgs > 0
        assert (
            httpx.get(f"{base2}/Organization/_history", params={"_count": 1000})
            .json()["entry"]
            .__len__()
            == first_orgs
        )
    finally:
        assert stop(again) == 0
