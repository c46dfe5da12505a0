"""Small builders for FHIR R4 datatypes used by the demo data set."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from fhirserver.demo.tables import (
    BCP47,
    HOSPITALS,
    LANGUAGES,
    PARENT_ORG_ID,
    PARENT_ORG_NAME,
    ROOMS,
    SNOMED,
    SPECIALTIES,
    VISIT_TYPE_SYSTEM,
    VISIT_TYPES,
    Hospital,
    Hours,
)

Resource = dict[str, Any]

HOSPITALS_BY_LOCATION: dict[str, Hospital] = {h.location_id: h for h in HOSPITALS}
ORG_NAMES: dict[str, str] = {PARENT_ORG_ID: PARENT_ORG_NAME} | {h.org_id: h.name for h in HOSPITALS}
LOCATION_NAMES: dict[str, str] = {h.location_id: h.name for h in HOSPITALS} | {
    r.id: r.name for r in ROOMS
}


def ref(resource_type: str, rid: str, display: str = "") -> dict[str, str]:
    """A literal Reference ``{"reference": "Type/id"}``, with a display when given."""
    out = {"reference": f"{resource_type}/{rid}"}
    if display:
        out["display"] = display
    return out


def org_ref(org_id: str) -> dict[str, str]:
    """Reference to one of the demo Organizations, with its name as display."""
    return ref("Organization", org_id, ORG_NAMES[org_id])


def location_ref(location_id: str) -> dict[str, str]:
    """Reference to one of the demo Locations (hospital or room), with its name as display."""
    return ref("Location", location_id, LOCATION_NAMES[location_id])


def concept(system: str, code: str, display: str) -> dict[str, Any]:
    """A CodeableConcept with one coding, whose text is the display."""
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def specialty(code: str) -> dict[str, Any]:
    """A SNOMED CT practice-setting specialty (c80 practice codes)."""
    return concept(SNOMED, code, SPECIALTIES[code])


def visit_type(code: str) -> dict[str, Any]:
    """A visit type from the fhirserver visit-type CodeSystem."""
    return concept(VISIT_TYPE_SYSTEM, code, VISIT_TYPES[code])


def language(code: str) -> dict[str, Any]:
    """A BCP-47 language CodeableConcept."""
    return concept(BCP47, code, LANGUAGES[code])


def telecom(phone: str, email: str = "", use: str = "work") -> list[dict[str, Any]]:
    """ContactPoints: a phone and, when given, an e-mail address."""
    points: list[dict[str, Any]] = [{"system": "phone", "value": phone, "use": use}]
    if email:
        points.append({"system": "email", "value": email, "use": use})
    return points


def address(line: str, city: str, state: str, postal: str, use: str) -> dict[str, Any]:
    """A US physical Address."""
    return {
        "use": use,
        "type": "physical",
        "line": [line],
        "city": city,
        "state": state,
        "postalCode": postal,
        "country": "US",
    }


def hospital_address(h: Hospital) -> dict[str, Any]:
    """The work address of a hospital."""
    return address(h.line, h.city, h.state, h.postal_code, "work")


def hhmmss(hhmm: str) -> str:
    """FHIR ``time`` from "HH:MM"."""
    return f"{hhmm}:00"


def available_time(hours: tuple[Hours, ...]) -> list[dict[str, Any]]:
    """``availableTime`` entries (PractitionerRole, HealthcareService) from an hours table."""
    return [
        {"daysOfWeek": list(days), "availableStartTime": hhmmss(o), "availableEndTime": hhmmss(c)}
        for days, o, c in hours
    ]


def slug(rid: str) -> str:
    """The id without its type prefix: "pr-ana-garcia" -> "ana-garcia"."""
    return rid.split("-", 1)[1]


def local(day: date, hhmm: str, tz: str) -> datetime:
    """An aware datetime for wall-clock ``hhmm`` on ``day`` in the IANA zone ``tz``."""
    return datetime.combine(day, time.fromisoformat(hhmm), tzinfo=ZoneInfo(tz))


def instant(dt: datetime) -> str:
    """FHIR instant text with the local UTC offset, e.g. 2026-03-09T09:00:00-04:00."""
    return dt.isoformat(timespec="seconds")
