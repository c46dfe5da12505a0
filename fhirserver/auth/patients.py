"""The patient picker's view of the FHIR store (async: it reads resources, not auth data).

A practitioner or staff member picks among the patients the access policy lets them see
(their patients, their organization's), never the whole register.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from fhirserver.access.policy import AccessPolicy
from fhirserver.access.visibility import Doc, and_filters
from fhirserver.auth.models import User
from fhirserver.auth.principal import Principal
from fhirserver.auth.scopes import Scopes
from fhirserver.fhir.errors import FhirError
from fhirserver.fhir.search import parse_search
from fhirserver.storage.resources import ResourceStore

_NOBODY: Doc = {"_id": {"$in": []}}


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


async def pickable(store: ResourceStore, user: User | None) -> Doc | None:
    """The filter of the Patients `user` may pick (None: no restriction), as their own
    `user/Patient.rs` would see them; nobody for no user or a patient user."""
    if user is None or user.role not in ("practitioner", "staff"):
        return _NOBODY
    principal = Principal(
        role=user.role,
        client_id=None,
        scopes=Scopes.parse("user/Patient.rs"),
        user_id=user.username,
        fhir_user=user.fhir_user,
        organizations=(user.organization,) if user.organization else (),
    )
    return await AccessPolicy(principal, store, store.indexer).search_filter("Patient")


async def search_patients(
    store: ResourceStore, query: str, allowed: Doc | None, limit: int = 25
) -> list[PatientChoice]:
    """Patients within `allowed` whose name matches `query` (all, when empty), at most
    `limit`."""
    params = [("name", query.strip())] if query.strip() else []
    try:
        spec = parse_search("Patient", params, blind=store.blind)
    except FhirError:
        return []
    filt = and_filters(spec.filter, allowed)
    docs = await store.find("Patient", filt, sort=[("_id", 1)], limit=limit)
    return [_choice(d["raw"]) for d in docs if d.get("raw")]


async def get_patient(
    store: ResourceStore, patient_id: str, allowed: Doc | None = None
) -> PatientChoice | None:
    """The patient with this id within `allowed`, or None (unknown, deleted, not allowed)."""
    if not patient_id or len(patient_id) > 64:
        return None
    docs = await store.find("Patient", and_filters({"_id": patient_id}, allowed), limit=1)
    if not docs or not docs[0].get("raw"):
        return None
    return _choice(docs[0]["raw"])
