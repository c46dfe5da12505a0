"""$find criteria: the operation's inputs as typed values, checked once."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fhirserver.fhir.errors import BadRequest
from fhirserver.fhir.operations import first

DEFAULT_WINDOW = timedelta(days=14)
MAX_WINDOW = timedelta(days=93)
MAX_COUNT = 100
VISIT_TYPE_SYSTEM = "http://fhirserver.dev/CodeSystem/visit-type"


@dataclass
class FindCriteria:
    """What a client asked $find (or first-available $book) for."""

    start: datetime
    end: datetime
    visit_types: list[str] = field(default_factory=list)
    specialties: list[str] = field(default_factory=list)
    practitioners: list[str] = field(default_factory=list)
    organizations: list[str] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)
    location_strings: list[str] = field(default_factory=list)
    patient: str | None = None
    coverage: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    near: tuple[float, float, float] | None = None
    accepting_new_patients: bool | None = None
    count: int = 20


MIN_YEAR, MAX_YEAR = 1900, 2200


def parse_instant(value: str, name: str) -> datetime:
    """A FHIR date or dateTime as a UTC instant (a bare date is its UTC midnight)."""
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be a FHIR dateTime, got {value!r}") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    # Scheduling lives in this era; far dates would only overflow window arithmetic.
    if not MIN_YEAR <= ts.year < MAX_YEAR:
        raise BadRequest(f"{name} must lie in the years {MIN_YEAR}-{MAX_YEAR - 1}, got {value!r}")
    return ts.astimezone(UTC)


def code_of(token: str) -> str:
    """`system|code` or `code` -> code."""
    return token.rsplit("|", 1)[-1]


def ref_id(ref: str, rtype: str) -> str:
    """`Practitioner/123`, an absolute URL to it, or `123` -> `123` (400 for another type)."""
    parts = ref.rstrip("/").split("/")
    if len(parts) >= 2:
        if parts[-2] != rtype:
            raise BadRequest(f"expected a {rtype} reference, got {ref!r}")
        return parts[-1]
    return parts[0]


def parse_near(value: str) -> tuple[float, float, float]:
    """`lat|lng|distance[|km|mi]` -> (lat, lng, km)."""
    parts = value.split("|")
    try:
        lat, lng = float(parts[0]), float(parts[1])
        dist = float(parts[2]) if len(parts) > 2 and parts[2] else 25.0
    except (ValueError, IndexError):
        raise BadRequest(f"near must be lat|lng|distance[|km], got {value!r}") from None
    unit = parts[3] if len(parts) > 3 else "km"
    if unit not in ("km", "mi", "[mi_i]"):
        raise BadRequest(f"near distance unit must be km or mi, got {unit!r}")
    if not (-90 <= lat <= 90 and -180 <= lng <= 180) or dist <= 0:
        raise BadRequest(f"near {value!r} is out of range")
    return lat, lng, dist * (1.609344 if unit != "km" else 1.0)


def criteria_from(values: dict[str, list[Any]], now: datetime) -> FindCriteria:
    """Build criteria from parsed operation inputs; 400 for an impossible request."""
    start_raw = first(values, "start")
    start = parse_instant(start_raw, "start") if start_raw else now
    end_raw = first(values, "end")
    end = parse_instant(end_raw, "end") if end_raw else start + DEFAULT_WINDOW
    if end <= start:
        raise BadRequest("end must be after start")
    if end - start > MAX_WINDOW:
        raise BadRequest(f"the search window may span at most {MAX_WINDOW.days} days")
    count = int(first(values, "_count", 20))
    if not 1 <= count <= MAX_COUNT:
        raise BadRequest(f"_count must be between 1 and {MAX_COUNT}")
    patient = first(values, "patient")
    near = first(values, "near")
    return FindCriteria(
        start=start,
        end=end,
        visit_types=[code_of(v) for v in values.get("service-type", [])],
        specialties=[code_of(v) for v in values.get("specialty", [])],
        practitioners=[ref_id(v, "Practitioner") for v in values.get("practitioner", [])],
        organizations=[ref_id(v, "Organization") for v in values.get("organization", [])],
        locations=[ref_id(v, "Location") for v in values.get("location", [])],
        location_strings=list(values.get("location-string", [])),
        patient=ref_id(patient, "Patient") if patient else None,
        coverage=[str(v).strip() for v in values.get("coverage", [])],
        reasons=list(values.get("reason", [])),
        languages=[code_of(v) for v in values.get("language", [])],
        near=parse_near(near) if near else None,
        accepting_new_patients=first(values, "accepting-new-patients"),
        count=count,
    )
