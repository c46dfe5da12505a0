"""Required terminology bindings that we enforce (fhir.resources does not check codes).

The code lists live as FHIR R4 CodeSystem resources in the top-level ``terminology/``
folder (found through fhirserver.paths, like capability/ and migrations/). Each
CodeSystem names the ValueSet of all its codes in ``CodeSystem.valueSet``; the binding table
below maps an element definition path to that ValueSet.

Paths are element definition paths, not instance paths: ``Appointment.participant.status``
applies to every participant, ``HumanName.use`` to every HumanName wherever it appears
(resource, backbone element, extension value, contained resource).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from fhirserver.paths import project_dir

_VS = "http://hl7.org/fhir/ValueSet/"

# element definition path -> ValueSet canonical URL (all R4 required bindings we check)
BINDINGS: dict[str, str] = {
    "Appointment.status": _VS + "appointmentstatus",
    "Appointment.participant.required": _VS + "participantrequired",
    "Appointment.participant.status": _VS + "participationstatus",
    "AppointmentResponse.participantStatus": _VS + "participationstatus",
    "Slot.status": _VS + "slotstatus",
    "Patient.gender": _VS + "administrative-gender",
    "Patient.contact.gender": _VS + "administrative-gender",
    "Patient.link.type": _VS + "link-type",
    "Practitioner.gender": _VS + "administrative-gender",
    "PractitionerRole.availableTime.daysOfWeek": _VS + "days-of-week",
    "HealthcareService.availableTime.daysOfWeek": _VS + "days-of-week",
    "Location.status": _VS + "location-status",
    "Location.mode": _VS + "location-mode",
    "Location.hoursOfOperation.daysOfWeek": _VS + "days-of-week",
    "Device.status": _VS + "device-status",
    "Device.udiCarrier.entryType": _VS + "udi-entry-type",
    "Device.deviceName.type": _VS + "device-nametype",
    # data types: apply wherever the type is used
    "Narrative.status": _VS + "narrative-status",
    "HumanName.use": _VS + "name-use",
    "ContactPoint.system": _VS + "contact-point-system",
    "ContactPoint.use": _VS + "contact-point-use",
    "Address.use": _VS + "address-use",
    "Address.type": _VS + "address-type",
    "Identifier.use": _VS + "identifier-use",
    "Quantity.comparator": _VS + "quantity-comparator",
    "Age.comparator": _VS + "quantity-comparator",
    "Count.comparator": _VS + "quantity-comparator",
    "Distance.comparator": _VS + "quantity-comparator",
    "Duration.comparator": _VS + "quantity-comparator",
}



def load_code_systems() -> dict[str, dict[str, Any]]:
    """Every CodeSystem resource in terminology/, by canonical URL."""
    return dict(_code_systems())


@cache
def _code_systems() -> tuple[tuple[str, dict[str, Any]], ...]:
    out: list[tuple[str, dict[str, Any]]] = []
    folder = project_dir("terminology")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        doc = json.loads(entry.read_text(encoding="utf-8"))
        if doc.get("resourceType") == "CodeSystem":
            out.append((doc["url"], doc))
    return tuple(out)


def _codes(concepts: list[dict[str, Any]]) -> set[str]:
    codes: set[str] = set()
    for concept in concepts:
        codes.add(concept["code"])
        codes |= _codes(concept.get("concept", []))
    return codes


@cache
def value_sets() -> dict[str, frozenset[str]]:
    """ValueSet canonical URL -> allowed codes (each CodeSystem's all-codes ValueSet)."""
    out: dict[str, frozenset[str]] = {}
    for _url, doc in _code_systems():
        vs = doc.get("valueSet")
        if vs:
            out[vs] = frozenset(_codes(doc.get("concept", [])))
    return out


def binding_for(path: str) -> tuple[str, frozenset[str]] | None:
    """(ValueSet URL, allowed codes) for a required binding on `path`, or None when unbound."""
    vs = BINDINGS.get(path)
    if vs is None:
        return None
    return vs, value_sets()[vs]


def check_code(path: str, code: str) -> bool:
    """True when `code` is allowed at `path` (or `path` has no binding we enforce)."""
    binding = binding_for(path)
    return binding is None or code in binding[1]
