"""The resource types this server stores and serves."""

from __future__ import annotations

RESOURCE_TYPES: tuple[str, ...] = (
    "Practitioner",
    "PractitionerRole",
    "Patient",
    "Location",
    "HealthcareService",
    "Device",
    "Organization",
    "Schedule",
    "Slot",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
)

#: Types the server writes itself and serves read-only (read, search-type): every create,
#: update, patch or delete through the API answers 405 (docs/audit.md).
READ_ONLY_TYPES: frozenset[str] = frozenset({"AuditEvent"})


def is_supported(resource_type: str) -> bool:
    """True when `resource_type` is one this server stores."""
    return resource_type in RESOURCE_TYPES


def is_read_only(resource_type: str) -> bool:
    """True for the server-written types the API may only read and search (AuditEvent)."""
    return resource_type in READ_ONLY_TYPES
