"""The patient picker's view of the FHIR store (async: it reads resources, not auth data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from fhirserver.fhir.errors import FhirError
from fhirserver.fhir.search import parse_search
from fhirserver.storage.resources import ResourceStore


@dataclass(frozen=True)
class PatientChoice:
    """One row of the picker."""

    id: str
    name: str
    birth_date: str


def _display(resource: dict[str, Any]) -> str:
    for name in resource.get("name") or []:
        if name.get("text"):
            return str(name["text"])
        parts = [*name.get("given", []), name.get("family", "")]
        text = " ".join(p for p in parts if p)
        if text:
            return text
    return str(resource.get("id", ""))


def _choice(raw: bytes) -> PatientChoice:
    resource = orjson.loads(raw)
    return PatientChoice(resource["id"], _display(resource), str(resource.get("birthDate", "")))


async def search_patients(store: ResourceStore, query: str, limit: int = 25) -> list[PatientChoice]:
    """Patients whose name matches `query` (all, when empty), at most `limit`."""
    params = [("name", query.strip())] if query.strip() else []
    try:
        spec = parse_search("Patient", params, blind=store.blind)
    except FhirError:
        return []
    docs = await store.find("Patient", spec.filter, sort=[("_id", 1)], limit=limit)
    return [_choice(d["raw"]) for d in docs if d.get("raw")]


async def get_patient(store: ResourceStore, patient_id: str) -> PatientChoice | None:
    """The patient with this id, or None (unknown or deleted)."""
    if not patient_id or len(patient_id) > 64:
        return None
    doc = await store.read_doc("Patient", patient_id)
    if doc is None or not doc.get("raw"):
        return None
    return _choice(doc["raw"])
