"""Search parameter definitions for the resource types this server stores.

Each parameter names the element paths its values are extracted from (see
`fhirserver.fhir.indexing`) and, for references, the resource types it may point to.

Path convention (a small, FHIRPath-free subset):

- ``Type.a.b.c``: dotted element names; lists are flattened at every step.
- ``Type.value[x]``: a choice element; matches every ``valueXxx`` key.
- ``Type.telecom[system=phone]``: keep only the elements whose ``system`` is ``phone``
  (stands in for ``.where(system='phone')``).
- ``Type.start..end``: a date range built from two sibling elements (lo = start, hi = end),
  used for ``Appointment.date``.
- Reference params that FHIR expresses as ``.where(resolve() is X)`` store the plain path
  plus ``targets``: only references whose type is in ``targets`` are indexed. Empty
  ``targets`` means any type.

``_id`` and ``_lastUpdated`` are not listed here: they are served from the stored
document's ``_id`` and ``lu``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fhirserver.fhir.types import RESOURCE_TYPES

ParamType = Literal["token", "string", "date", "reference", "number", "quantity", "uri", "special"]


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One search parameter of one resource type."""

    name: str
    type: ParamType
    paths: tuple[str, ...]
    targets: tuple[str, ...] = ()
    description: str = ""


# Reference targets R4 allows for Appointment/AppointmentResponse/Schedule actors.
_ACTORS = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "RelatedPerson",
    "Device",
    "HealthcareService",
    "Location",
)


def _p(
    name: str,
    type_: ParamType,
    *paths: str,
    targets: tuple[str, ...] = (),
    description: str = "",
) -> SearchParam:
    return SearchParam(name, type_, tuple(paths), targets, description)


def _address_params(t: str) -> list[SearchParam]:
    return [
        _p("address", "string", f"{t}.address", description="Any part of the address"),
        _p("address-city", "string", f"{t}.address.city"),
        _p("address-state", "string", f"{t}.address.state"),
        _p("address-postalcode", "string", f"{t}.address.postalCode"),
        _p("address-country", "string", f"{t}.address.country"),
        _p("address-use", "token", f"{t}.address.use"),
    ]


def _telecom_params(t: str) -> list[SearchParam]:
    return [
        _p("telecom", "token", f"{t}.telecom"),
        _p("phone", "token", f"{t}.telecom[system=phone]"),
        _p("email", "token", f"{t}.telecom[system=email]"),
    ]


def _name_params(t: str) -> list[SearchParam]:
    return [
        _p("name", "string", f"{t}.name", description="Any part of the name"),
        _p("family", "string", f"{t}.name.family"),
        _p("given", "string", f"{t}.name.given"),
        _p(
            "phonetic",
            "string",
            f"{t}.name",
            description="No phonetic algorithm: matches like `name` on normalised text",
        ),
    ]


def _build() -> dict[str, dict[str, SearchParam]]:
    defs: dict[str, list[SearchParam]] = {
        "Slot": [
            _p("identifier", "token", "Slot.identifier"),
            _p("schedule", "reference", "Slot.schedule", targets=("Schedule",)),
            _p("start", "date", "Slot.start"),
            _p("end", "date", "Slot.end", description="Non-standard: Slot.end"),
            _p("status", "token", "Slot.status"),
            _p("service-type", "token", "Slot.serviceType"),
            _p("service-category", "token", "Slot.serviceCategory"),
            _p("specialty", "token", "Slot.specialty"),
            _p("appointment-type", "token", "Slot.appointmentType"),
        ],
        "Appointment": [
            _p("identifier", "token", "Appointment.identifier"),
            _p("actor", "reference", "Appointment.participant.actor", targets=_ACTORS),
            _p("patient", "reference", "Appointment.participant.actor", targets=("Patient",)),
            _p(
                "practitioner",
                "reference",
                "Appointment.participant.actor",
                targets=("Practitioner",),
            ),
            _p("location", "reference", "Appointment.participant.actor", targets=("Location",)),
            _p(
                "date",
                "date",
                "Appointment.start..end",
                description="The period Appointment.start .. Appointment.end",
            ),
            _p("end", "date", "Appointment.end", description="Non-standard: Appointment.end"),
            _p("status", "token", "Appointment.status"),
            _p("part-status", "token", "Appointment.participant.status"),
            _p("slot", "reference", "Appointment.slot", targets=("Slot",)),
            _p("service-type", "token", "Appointment.serviceType"),
            _p("service-category", "token", "Appointment.serviceCategory"),
            _p("specialty", "token", "Appointment.specialty"),
            _p("appointment-type", "token", "Appointment.appointmentType"),
            _p("reason-code", "token", "Appointment.reasonCode"),
            _p(
                "reason-reference",
                "reference",
                "Appointment.reasonReference",
                targets=("Condition", "Procedure", "Observation", "ImmunizationRecommendation"),
            ),
            _p("based-on", "reference", "Appointment.basedOn", targets=("ServiceRequest",)),
            _p("supporting-info", "reference", "Appointment.supportingInformation"),
        ],
        "Schedule": [
            _p("identifier", "token", "Schedule.identifier"),
            _p("actor", "reference", "Schedule.actor", targets=_ACTORS),
            _p("date", "date", "Schedule.planningHorizon"),
            _p("active", "token", "Schedule.active"),
            _p("service-type", "token", "Schedule.serviceType"),
            _p("service-category", "token", "Schedule.serviceCategory"),
            _p("specialty", "token", "Schedule.specialty"),
        ],
        "Practitioner": [
            _p("identifier", "token", "Practitioner.identifier"),
            *_name_params("Practitioner"),
            *_telecom_params("Practitioner"),
            *_address_params("Practitioner"),
            _p("gender", "token", "Practitioner.gender"),
            _p("active", "token", "Practitioner.active"),
            _p("communication", "token", "Practitioner.communication"),
        ],
        "PractitionerRole": [
            _p("identifier", "token", "PractitionerRole.identifier"),
            _p(
                "practitioner",
                "reference",
                "PractitionerRole.practitioner",
                targets=("Practitioner",),
            ),
            _p(
                "organization",
                "reference",
                "PractitionerRole.organization",
                targets=("Organization",),
            ),
            _p("location", "reference", "PractitionerRole.location", targets=("Location",)),
            _p(
                "service",
                "reference",
                "PractitionerRole.healthcareService",
                targets=("HealthcareService",),
            ),
            _p("endpoint", "reference", "PractitionerRole.endpoint", targets=("Endpoint",)),
            _p("specialty", "token", "PractitionerRole.specialty"),
            _p("role", "token", "PractitionerRole.code"),
            _p("active", "token", "PractitionerRole.active"),
            _p("date", "date", "PractitionerRole.period"),
            *_telecom_params("PractitionerRole"),
        ],
        "Patient": [
            _p("identifier", "token", "Patient.identifier"),
            *_name_params("Patient"),
            _p("birthdate", "date", "Patient.birthDate"),
            _p("gender", "token", "Patient.gender"),
            *_telecom_params("Patient"),
            *_address_params("Patient"),
            _p("active", "token", "Patient.active"),
            _p(
                "general-practitioner",
                "reference",
                "Patient.generalPractitioner",
                targets=("Organization", "Practitioner", "PractitionerRole"),
            ),
            _p(
                "organization",
                "reference",
                "Patient.managingOrganization",
                targets=("Organization",),
            ),
            _p("link", "reference", "Patient.link.other", targets=("Patient", "RelatedPerson")),
            _p("language", "token", "Patient.communication.language"),
        ],
        "Location": [
            _p("identifier", "token", "Location.identifier"),
            _p("name", "string", "Location.name", "Location.alias"),
            *_address_params("Location"),
            _p("status", "token", "Location.status"),
            _p("operational-status", "token", "Location.operationalStatus"),
            _p("type", "token", "Location.type"),
            _p(
                "organization",
                "reference",
                "Location.managingOrganization",
                targets=("Organization",),
            ),
            _p("partof", "reference", "Location.partOf", targets=("Location",)),
            _p("endpoint", "reference", "Location.endpoint", targets=("Endpoint",)),
            _p(
                "near",
                "special",
                "Location.position",
                description="lat|lng|distance|units; stored as {lat, lng}",
            ),
        ],
        "HealthcareService": [
            _p("identifier", "token", "HealthcareService.identifier"),
            _p("name", "string", "HealthcareService.name"),
            _p("active", "token", "HealthcareService.active"),
            _p("location", "reference", "HealthcareService.location", targets=("Location",)),
            _p(
                "organization",
                "reference",
                "HealthcareService.providedBy",
                targets=("Organization",),
            ),
            _p("service-type", "token", "HealthcareService.type"),
            _p("service-category", "token", "HealthcareService.category"),
            _p("specialty", "token", "HealthcareService.specialty"),
            _p("characteristic", "token", "HealthcareService.characteristic"),
            _p("program", "token", "HealthcareService.program"),
            _p(
                "coverage-area",
                "reference",
                "HealthcareService.coverageArea",
                targets=("Location",),
            ),
            _p("endpoint", "reference", "HealthcareService.endpoint", targets=("Endpoint",)),
        ],
        "Device": [
            _p("identifier", "token", "Device.identifier"),
            _p("type", "token", "Device.type"),
            _p("status", "token", "Device.status"),
            _p("location", "reference", "Device.location", targets=("Location",)),
            _p("organization", "reference", "Device.owner", targets=("Organization",)),
            _p("patient", "reference", "Device.patient", targets=("Patient",)),
            _p("model", "string", "Device.modelNumber"),
            _p("manufacturer", "string", "Device.manufacturer"),
            _p(
                "device-name",
                "string",
                "Device.deviceName.name",
                "Device.type.coding.display",
                "Device.type.text",
            ),
            _p("udi-carrier", "string", "Device.udiCarrier.carrierHRF"),
            _p("udi-di", "string", "Device.udiCarrier.deviceIdentifier"),
            _p("url", "uri", "Device.url"),
        ],
        "Organization": [
            _p("identifier", "token", "Organization.identifier"),
            _p("name", "string", "Organization.name", "Organization.alias"),
            _p("phonetic", "string", "Organization.name", description="Matches like `name`"),
            _p("active", "token", "Organization.active"),
            _p("type", "token", "Organization.type"),
            *_address_params("Organization"),
            _p("partof", "reference", "Organization.partOf", targets=("Organization",)),
            _p("endpoint", "reference", "Organization.endpoint", targets=("Endpoint",)),
        ],
        "AppointmentResponse": [
            _p("identifier", "token", "AppointmentResponse.identifier"),
            _p(
                "appointment",
                "reference",
                "AppointmentResponse.appointment",
                targets=("Appointment",),
            ),
            _p("actor", "reference", "AppointmentResponse.actor", targets=_ACTORS),
            _p("patient", "reference", "AppointmentResponse.actor", targets=("Patient",)),
            _p(
                "practitioner",
                "reference",
                "AppointmentResponse.actor",
                targets=("Practitioner",),
            ),
            _p("location", "reference", "AppointmentResponse.actor", targets=("Location",)),
            _p("part-status", "token", "AppointmentResponse.participantStatus"),
        ],
        # The audit trail (docs/audit.md): written by the server only, searched by auditors.
        "AuditEvent": [
            _p("date", "date", "AuditEvent.recorded"),
            _p("type", "token", "AuditEvent.type"),
            _p("subtype", "token", "AuditEvent.subtype"),
            _p("action", "token", "AuditEvent.action"),
            _p("outcome", "token", "AuditEvent.outcome"),
            _p("agent", "reference", "AuditEvent.agent.who"),
            _p("agent-role", "token", "AuditEvent.agent.role"),
            _p(
                "who",
                "token",
                "AuditEvent.agent.who.identifier",
                "AuditEvent.agent.altId",
                description="Non-standard: an agent's user name or client id "
                "(agent.who.identifier or agent.altId)",
            ),
            _p("address", "string", "AuditEvent.agent.network.address"),
            _p("policy", "uri", "AuditEvent.agent.policy", description="The access token's jti"),
            _p(
                "patient",
                "reference",
                "AuditEvent.entity.what",
                "AuditEvent.agent.who",
                targets=("Patient",),
            ),
            _p("entity", "reference", "AuditEvent.entity.what"),
            _p(
                "entity-identifier",
                "token",
                "AuditEvent.entity.what.identifier",
                description="Non-standard: entity.what.identifier (X-Request-Id, token jti)",
            ),
            _p("entity-role", "token", "AuditEvent.entity.role"),
        ],
    }
    out: dict[str, dict[str, SearchParam]] = {}
    for rtype, params in defs.items():
        assert rtype in RESOURCE_TYPES, rtype
        by_name: dict[str, SearchParam] = {}
        for sp in params:
            assert sp.name not in by_name, (rtype, sp.name)
            assert all(p.split(".", 1)[0] == rtype for p in sp.paths), (rtype, sp)
            by_name[sp.name] = sp
        out[rtype] = by_name
    assert set(out) == set(RESOURCE_TYPES)
    return out


SEARCH_PARAMS: dict[str, dict[str, SearchParam]] = _build()

# Implicit code systems of `code`-typed elements indexed as tokens (FHIR search: "code
# (implicit system)"), so `status=http://hl7.org/fhir/appointmentstatus|booked` works.
IMPLICIT_SYSTEMS: dict[str, str] = {
    "Appointment.status": "http://hl7.org/fhir/appointmentstatus",
    "Appointment.participant.status": "http://hl7.org/fhir/participationstatus",
    "AppointmentResponse.participantStatus": "http://hl7.org/fhir/participationstatus",
    "Slot.status": "http://hl7.org/fhir/slotstatus",
    "Location.status": "http://hl7.org/fhir/location-status",
    "Device.status": "http://hl7.org/fhir/device-status",
    "Patient.gender": "http://hl7.org/fhir/administrative-gender",
    "Practitioner.gender": "http://hl7.org/fhir/administrative-gender",
    "Patient.address.use": "http://hl7.org/fhir/address-use",
    "Practitioner.address.use": "http://hl7.org/fhir/address-use",
    "Location.address.use": "http://hl7.org/fhir/address-use",
    "Organization.address.use": "http://hl7.org/fhir/address-use",
    "AuditEvent.action": "http://hl7.org/fhir/audit-event-action",
    "AuditEvent.outcome": "http://hl7.org/fhir/audit-event-outcome",
}


def get_param(resource_type: str, name: str) -> SearchParam | None:
    """The search parameter `name` of `resource_type`, or None if unknown."""
    params = SEARCH_PARAMS.get(resource_type)
    if params is None:
        return None
    return params.get(name)


def index_fields(resource_type: str) -> list[str]:
    """Dotted document fields worth a MongoDB index for this type's search parameters.

    A helper for storage/ (migrations): one single-field multikey index per entry.
    """
    fields: list[str] = []
    for sp in SEARCH_PARAMS.get(resource_type, {}).values():
        base = f"idx.{sp.name}"
        if sp.type == "token":
            fields.append(f"{base}.c")
        elif sp.type == "string":
            fields.append(f"{base}.n")
        elif sp.type == "date":
            # instants (time-precision searches) and local days (date-precision searches)
            fields += [f"{base}.lo", f"{base}.hi", f"{base}.dl", f"{base}.dh"]
        elif sp.type == "quantity":
            fields.append(f"{base}.v")
        elif sp.type == "special":
            fields.append(f"{base}.lat")
        else:
            fields.append(base)
    return fields
