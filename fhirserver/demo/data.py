"""Demo data set: a small, realistic health system as FHIR R4 JSON resources.

`demo_resources()` returns Riverside Health (a parent Organization, a hospital
in Boston and one in Denver), rooms, equipment, clinicians with their roles
and Schedules, visit types, explicit Slots for the coming week, patients and a
few appointments. Ids are fixed and readable ("pr-ana-garcia"); Slot ids carry
their local date and time. Times are built relative to ``today`` in the
hospital's IANA time zone, so UTC offsets are right on both sides of a DST
change. The rows behind it live in `fhirserver.demo.tables`.
"""

from __future__ import annotations

from datetime import date

from fhirserver.demo.helpers import (
    Resource,
    address,
    available_time,
    concept,
    hhmmss,
    hospital_address,
    language,
    location_ref,
    org_ref,
    specialty,
    telecom,
    visit_type,
)
from fhirserver.demo.people import patients, practitioner_roles, practitioners
from fhirserver.demo.schedules import appointments, schedules, slots
from fhirserver.demo.tables import (
    DEVICES,
    HOSPITALS,
    PARENT_ORG_ID,
    PARENT_ORG_NAME,
    ROOMS,
    SERVICES,
    Hospital,
)

__all__ = ["TIMEZONE_EXTENSION", "demo_resources"]

TIMEZONE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/timezone"

_PHYSICAL_TYPE = "http://terminology.hl7.org/CodeSystem/location-physical-type"
_ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
_ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"


def demo_resources(today: date | None = None) -> list[Resource]:
    """The demo health system as FHIR R4 JSON dicts, referenced resources first.

    ``today`` (default: ``date.today()``) anchors the Schedules' planning horizon
    (90 days from today), the explicit Slots (the 7 days after today) and the
    appointments (at their practitioner's first weekday clinic time). Every call
    builds fresh dicts, so callers may mutate the result.
    """
    day = today if today is not None else date.today()
    slot_list = slots(day)
    return [
        *_organizations(),
        *_locations(),
        *_devices(),
        *_services(),
        *practitioners(),
        *practitioner_roles(),
        *patients(),
        *schedules(day),
        *slot_list,
        *appointments(day),
    ]


def _organizations() -> list[Resource]:
    prov = concept(_ORG_TYPE, "prov", "Healthcare Provider")
    parent: Resource = {
        "resourceType": "Organization",
        "id": PARENT_ORG_ID,
        "active": True,
        "type": [prov],
        "name": PARENT_ORG_NAME,
        "alias": ["Riverside Health System"],
        "telecom": telecom("+1-617-555-0199", "info@riverside-health.example.org"),
        "address": [address("1 Riverside Plaza", "Boston", "MA", "02110", "work")],
    }
    hospitals: list[Resource] = [
        {
            "resourceType": "Organization",
            "id": h.org_id,
            "active": True,
            "type": [prov],
            "name": h.name,
            "alias": [h.alias],
            "telecom": telecom(h.phone),
            "address": [hospital_address(h)],
            "partOf": org_ref(PARENT_ORG_ID),
        }
        for h in HOSPITALS
    ]
    return [parent, *hospitals]


def _hospital_location(h: Hospital) -> Resource:
    return {
        "resourceType": "Location",
        "id": h.location_id,
        "extension": [{"url": TIMEZONE_EXTENSION, "valueCode": h.tz}],
        "status": "active",
        "name": h.name,
        "alias": [h.alias],
        "description": f"{h.name}, main building ({h.city}, {h.state})",
        "mode": "instance",
        "type": [concept(_ROLE_CODE, "HOSP", "Hospital")],
        "telecom": telecom(h.phone),
        "address": hospital_address(h),
        "physicalType": concept(_PHYSICAL_TYPE, "bu", "Building"),
        "position": {"longitude": h.lng, "latitude": h.lat},
        "managingOrganization": org_ref(h.org_id),
        "hoursOfOperation": [
            {
                "daysOfWeek": list(days),
                "allDay": False,
                "openingTime": hhmmss(o),
                "closingTime": hhmmss(c),
            }
            for days, o, c in h.hours
        ],
    }


def _locations() -> list[Resource]:
    hospitals = {h.location_id: h for h in HOSPITALS}
    rooms: list[Resource] = [
        {
            "resourceType": "Location",
            "id": room.id,
            "status": "active",
            "name": room.name,
            "description": room.description,
            "mode": "instance",
            "physicalType": concept(_PHYSICAL_TYPE, "ro", "Room"),
            "managingOrganization": org_ref(hospitals[room.hospital].org_id),
            "partOf": location_ref(room.hospital),
        }
        for room in ROOMS
    ]
    return [*(_hospital_location(h) for h in HOSPITALS), *rooms]


def _devices() -> list[Resource]:
    return [
        {
            "resourceType": "Device",
            "id": d.id,
            "status": "active",
            "manufacturer": d.manufacturer,
            "serialNumber": d.serial,
            "deviceName": [{"name": d.name, "type": "user-friendly-name"}],
            "modelNumber": d.model,
            "type": {"text": d.type_text},
            "owner": org_ref(d.owner),
            "location": location_ref(d.room),
        }
        for d in DEVICES
    ]


def _services() -> list[Resource]:
    return [
        {
            "resourceType": "HealthcareService",
            "id": s.id,
            "active": True,
            "providedBy": org_ref(s.provided_by),
            "type": [visit_type(s.visit_type)],
            "specialty": [specialty(s.specialty)],
            "location": [location_ref(loc) for loc in s.locations],
            "name": s.name,
            "comment": s.comment,
            "communication": [language("en"), language("es")],
            "appointmentRequired": s.visit_type != "URGENT_CARE",
            "availableTime": available_time(s.hours),
        }
        for s in SERVICES
    ]
