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
)


def is_supported(resource_type: str) -> bool:
    """True when `resource_type` is one this server stores."""
    return resource_type in RESOURCE_TYPES
