"""Factory functions for test resources (unique per call so tests share one database)."""

from __future__ import annotations

import uuid
from typing import Any


def uid() -> str:
    """A short unique token."""
    return uuid.uuid4().hex[:10]


def patient(family: str | None = None, **extra: Any) -> dict[str, Any]:
    """A Patient with a unique MRN identifier."""
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "http://fhirserver.dev/sid/mrn", "value": f"mrn-{uid()}"}],
        "name": [{"family": family or f"Fam{uid()}", "given": ["Ana"]}],
        "gender": "female",
        "birthDate": "1980-04-02",
        **extra,
    }


def practitioner(family: str | None = None) -> dict[str, Any]:
    """A Practitioner with a unique NPI-like identifier."""
    return {
        "resourceType": "Practitioner",
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": uid()}],
        "name": [{"family": family or f"Doc{uid()}", "given": ["Jo"]}],
    }


def appointment(
    patient_ref: str, practitioner_ref: str, start: str, end: str, status: str = "booked"
) -> dict[str, Any]:
    """An Appointment between a patient and a practitioner."""
    return {
        "resourceType": "Appointment",
        "status": status,
        "start": start,
        "end": end,
        "participant": [
            {"actor": {"reference": patient_ref}, "status": "accepted"},
            {"actor": {"reference": practitioner_ref}, "status": "accepted"},
        ],
    }
