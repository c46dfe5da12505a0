"""Static tables describing the demo health system (Riverside Health).

Everything here is fictional: names, addresses, phone numbers (555-01xx) and
identifiers. `fhirserver.demo.data` turns these rows into FHIR R4 resources.
Row tables are kept one row per few lines (``# fmt: off``) to stay readable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MON_FRI = ("mon", "tue", "wed", "thu", "fri")

# (days of week, opening "HH:MM", closing "HH:MM")
Hours: TypeAlias = tuple[tuple[str, ...], str, str]
# (day of week, local start "HH:MM", minutes, comment or "")
SlotRow: TypeAlias = tuple[str, str, int, str]

SNOMED = "http://snomed.info/sct"
VISIT_TYPE_SYSTEM = "http://fhirserver.dev/CodeSystem/visit-type"
MRN_SYSTEM = "http://fhirserver.dev/sid/mrn"
BCP47 = "urn:ietf:bcp:47"

SPECIALTIES: dict[str, str] = {
    "394802001": "General medicine",
    "394579002": "Cardiology",
    "394582007": "Dermatology",
    "394537008": "Pediatric specialty",
    "394585009": "Obstetrics and gynecology",
    "394801008": "Trauma and orthopedics",
}

VISIT_TYPES: dict[str, str] = {
    "NEW_PATIENT": "New patient visit",
    "FOLLOW_UP": "Follow-up visit",
    "URGENT_CARE": "Urgent care visit",
    "TELEHEALTH": "Telehealth visit",
    "PROCEDURE": "Procedure",
}

LANGUAGES: dict[str, str] = {
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "zh": "Chinese",
    "it": "Italian",
    "yo": "Yoruba",
}

PARENT_ORG_ID = "org-riverside"
PARENT_ORG_NAME = "Riverside Health"


@dataclass(frozen=True)
class Hospital:
    """A hospital: one Organization plus one building Location."""

    org_id: str
    location_id: str
    name: str
    alias: str
    tz: str
    line: str
    city: str
    state: str
    postal_code: str
    phone: str
    lat: float
    lng: float
    hours: tuple[Hours, ...]


HOSPITALS: tuple[Hospital, ...] = (
    Hospital(
        org_id="org-riverside-general",
        location_id="loc-riverside-general",
        name="Riverside General Hospital",
        alias="RGH",
        tz="America/New_York",
        line="55 Charles River Parkway",
        city="Boston",
        state="MA",
        postal_code="02114",
        phone="+1-617-555-0100",
        lat=42.3626,
        lng=-71.0686,
        hours=((MON_FRI, "07:00", "19:00"), (("sat",), "08:00", "12:00")),
    ),
    Hospital(
        org_id="org-riverside-front-range",
        location_id="loc-riverside-front-range",
        name="Riverside Front Range Hospital",
        alias="RFRH",
        tz="America/Denver",
        line="1200 Colfax Mesa Avenue",
        city="Denver",
        state="CO",
        postal_code="80218",
        phone="+1-303-555-0100",
        lat=39.7401,
        lng=-104.9719,
        hours=((MON_FRI, "07:00", "18:00"), (("sat",), "08:00", "12:00")),
    ),
)


@dataclass(frozen=True)
class Room:
    """A room (Location, physicalType ro) inside a hospital building."""

    id: str
    hospital: str  # Hospital.location_id
    name: str
    description: str


ROOMS: tuple[Room, ...] = (
    Room("loc-rg-exam-101", "loc-riverside-general", "Exam Room 101", "Primary care exam room"),
    Room("loc-rg-exam-102", "loc-riverside-general", "Exam Room 102", "Dermatology exam room"),
    Room("loc-rg-echo-lab", "loc-riverside-general", "Echo Lab", "Cardiac ultrasound room"),
    Room("loc-fr-exam-a", "loc-riverside-front-range", "Exam Room A", "Women's health exam room"),
    Room("loc-fr-peds", "loc-riverside-front-range", "Pediatric Exam Room", "Child-friendly"),
    Room("loc-fr-procedure", "loc-riverside-front-range", "Procedure Room", "Orthopedic casting"),
    Room("loc-fr-mri-suite", "loc-riverside-front-range", "MRI Suite", "Shielded MRI room"),
)


@dataclass(frozen=True)
class DeviceRow:
    """A piece of schedulable equipment located in a room."""

    id: str
    name: str
    type_text: str
    manufacturer: str
    model: str
    serial: str
    room: str
    owner: str  # Organization id


# fmt: off
DEVICES: tuple[DeviceRow, ...] = (
    DeviceRow(
        "dev-rg-echo-ultrasound", "Echo Lab ultrasound", "Cardiac ultrasound system",
        "Acme Imaging", "SonoView 500", "SV5-00412", "loc-rg-echo-lab", "org-riverside-general",
    ),
    DeviceRow(
        "dev-fr-mri", "Front Range 1.5T MRI", "Magnetic resonance imaging scanner",
        "Acme Imaging", "MagnaScan 1.5T", "MS15-20931", "loc-fr-mri-suite",
        "org-riverside-front-range",
    ),
)
# fmt: on


@dataclass(frozen=True)
class ServiceRow:
    """A bookable visit type (HealthcareService)."""

    id: str
    name: str
    visit_type: str
    specialty: str
    provided_by: str  # Organization id
    locations: tuple[str, ...]
    hours: tuple[Hours, ...]
    comment: str


# fmt: off
SERVICES: tuple[ServiceRow, ...] = (
    ServiceRow(
        "hs-primary-care-new", "Primary care - new patient", "NEW_PATIENT", "394802001",
        "org-riverside-general", ("loc-riverside-general",), ((MON_FRI, "08:00", "17:00"),),
        "60-minute intake visit for patients new to Riverside primary care.",
    ),
    ServiceRow(
        "hs-follow-up", "Follow-up visit", "FOLLOW_UP", "394802001", PARENT_ORG_ID,
        ("loc-riverside-general", "loc-riverside-front-range"), ((MON_FRI, "08:00", "17:00"),),
        "20 to 30-minute visit for established patients.",
    ),
    ServiceRow(
        "hs-cardiology-consult", "Cardiology consult", "NEW_PATIENT", "394579002",
        "org-riverside-general", ("loc-riverside-general",),
        ((("mon", "tue", "thu"), "08:00", "16:00"),),
        "Referral recommended. Bring a list of current medications.",
    ),
    ServiceRow(
        "hs-telehealth", "Telehealth visit", "TELEHEALTH", "394802001", PARENT_ORG_ID,
        ("loc-riverside-general", "loc-riverside-front-range"), ((MON_FRI, "08:00", "17:00"),),
        "Video visit; a link is sent by e-mail 15 minutes before the start.",
    ),
    ServiceRow(
        "hs-urgent-care", "Urgent care visit", "URGENT_CARE", "394537008",
        "org-riverside-front-range", ("loc-riverside-front-range",),
        ((MON_FRI, "07:00", "18:00"), (("sat",), "08:00", "12:00")),
        "Same-day visits for non-life-threatening problems.",
    ),
    ServiceRow(
        "hs-procedure", "Outpatient procedure", "PROCEDURE", "394801008",
        "org-riverside-front-range", ("loc-riverside-front-range",),
        ((("tue", "thu"), "07:00", "15:00"),),
        "Casting, joint injections and minor orthopedic procedures.",
    ),
)
# fmt: on


@dataclass(frozen=True)
class PractitionerRow:
    """A clinician, their one PractitionerRole and the explicit Slots of their Schedule."""

    id: str
    prefix: str
    given: str
    family: str
    gender: str
    birth_date: str
    npi_base: str  # 9 digits; the check digit is computed
    degree: tuple[str, str]  # v2-0360 code, display
    languages: tuple[str, ...]
    specialty: str
    role: tuple[str, str]  # practitioner-role code, display
    hospital: str  # Hospital.location_id
    room: str  # home room
    services: tuple[str, ...]
    clinic: tuple[Hours, ...]
    accepting_new: bool
    free: tuple[SlotRow, ...]
    blocked: tuple[SlotRow, ...] = ()  # busy-unavailable besides the daily lunch
    schedule_room: bool = False  # the room is also an actor of the Schedule


MD = ("MD", "Doctor of Medicine")
DO = ("DO", "Doctor of Osteopathy")
DOCTOR = ("doctor", "Doctor")

# fmt: off
PRACTITIONERS: tuple[PractitionerRow, ...] = (
    PractitionerRow(
        "pr-ana-garcia", "Dr.", "Ana", "Garcia", "female", "1979-04-18", "104523871", MD,
        ("en", "es"), "394802001", DOCTOR, "loc-riverside-general", "loc-rg-exam-101",
        ("hs-primary-care-new", "hs-follow-up", "hs-telehealth"),
        ((MON_FRI, "08:00", "17:00"), (("sat",), "08:00", "12:00")), True,
        free=(("mon", "09:00", 30, ""), ("mon", "09:30", 30, ""), ("wed", "14:00", 30, ""),
              ("sat", "08:00", 30, "Saturday clinic"), ("sat", "08:30", 30, "Saturday clinic")),
        blocked=(("thu", "08:00", 240, "CME: annual diabetes management update"),),
    ),
    PractitionerRow(
        "pr-david-chen", "Dr.", "David", "Chen", "male", "1971-09-02", "113876502", MD,
        ("en", "zh"), "394579002", DOCTOR, "loc-riverside-general", "loc-rg-echo-lab",
        ("hs-cardiology-consult", "hs-follow-up"),
        ((("mon", "tue", "thu"), "08:00", "16:00"),), False,
        free=(("mon", "10:00", 60, ""), ("tue", "13:00", 60, ""),
              ("thu", "17:00", 60, "Extra evening clinic")),
        schedule_room=True,
    ),
    PractitionerRow(
        "pr-claire-dubois", "Dr.", "Claire", "Dubois", "female", "1985-01-27", "128340915", MD,
        ("en", "fr"), "394582007", DOCTOR, "loc-riverside-general", "loc-rg-exam-102",
        ("hs-follow-up", "hs-telehealth"),
        ((("tue", "wed", "fri"), "09:00", "17:00"),), True,
        free=(("tue", "09:00", 20, ""), ("wed", "11:00", 20, ""), ("fri", "15:00", 30, "")),
        blocked=(("wed", "13:00", 240, "CME: dermoscopy workshop"),),
    ),
    PractitionerRow(
        "pr-samuel-okafor", "Dr.", "Samuel", "Okafor", "male", "1982-06-11", "136927480", MD,
        ("en", "yo"), "394537008", DOCTOR, "loc-riverside-front-range", "loc-fr-peds",
        ("hs-follow-up", "hs-urgent-care", "hs-telehealth"),
        ((MON_FRI, "08:00", "16:00"), (("sat",), "08:00", "12:00")), True,
        free=(("mon", "08:30", 30, ""), ("tue", "10:00", 30, ""),
              ("sat", "09:00", 30, "Saturday walk-in hours")),
    ),
    PractitionerRow(
        "pr-giulia-rossi", "Dr.", "Giulia", "Rossi", "female", "1976-12-05", "145209337", MD,
        ("en", "it", "es"), "394585009", DOCTOR, "loc-riverside-front-range", "loc-fr-exam-a",
        ("hs-follow-up", "hs-telehealth"),
        ((("mon", "wed", "fri"), "08:00", "16:00"),), True,
        free=(("mon", "13:00", 30, ""), ("wed", "09:00", 30, ""), ("fri", "10:30", 30, "")),
        blocked=(("wed", "14:00", 120, "CME: obstetric emergencies simulation"),),
    ),
    PractitionerRow(
        "pr-james-walker", "Dr.", "James", "Walker", "male", "1969-03-22", "152748016", DO,
        ("en",), "394801008", DOCTOR, "loc-riverside-front-range", "loc-fr-procedure",
        ("hs-follow-up", "hs-procedure"),
        ((("tue", "thu"), "07:00", "15:00"),), False,
        free=(("tue", "07:30", 30, ""), ("thu", "11:00", 60, "Procedure block")),
        schedule_room=True,
    ),
)
# fmt: on


@dataclass(frozen=True)
class PatientRow:
    """A demo patient."""

    id: str
    given: str
    family: str
    gender: str
    birth_date: str
    mrn: str
    language: str
    phone: str
    email: str
    line: str
    city: str
    state: str
    postal_code: str
    gp: str  # Practitioner id, or "" for none


# fmt: off
PATIENTS: tuple[PatientRow, ...] = (
    PatientRow(
        "pat-maria-lopez", "Maria", "Lopez", "female", "1984-07-12", "RH-100001", "es",
        "+1-617-555-0142", "maria.lopez@example.org", "14 Tremont Street", "Boston", "MA",
        "02108", "pr-ana-garcia",
    ),
    PatientRow(
        "pat-wei-zhang", "Wei", "Zhang", "male", "1958-02-03", "RH-100002", "zh",
        "+1-617-555-0173", "wei.zhang@example.org", "220 Harrison Avenue", "Boston", "MA",
        "02111", "pr-ana-garcia",
    ),
    PatientRow(
        "pat-luc-martin", "Luc", "Martin", "male", "1990-11-30", "RH-100003", "fr",
        "+1-617-555-0188", "luc.martin@example.org", "9 Beacon Hill Row", "Boston", "MA",
        "02108", "",
    ),
    PatientRow(
        "pat-emma-johnson", "Emma", "Johnson", "female", "2019-05-21", "RH-200001", "en",
        "+1-303-555-0121", "johnson.family@example.org", "480 Pearl Street", "Denver", "CO",
        "80203", "pr-samuel-okafor",
    ),
    PatientRow(
        "pat-priya-patel", "Priya", "Patel", "female", "1992-09-14", "RH-200002", "en",
        "+1-303-555-0164", "priya.patel@example.org", "77 Larimer Square", "Denver", "CO",
        "80202", "",
    ),
)
# fmt: on


@dataclass(frozen=True)
class AppointmentRow:
    """An appointment placed on the first free Slot of the practitioner's Schedule."""

    id: str
    patient: str
    practitioner: str
    service: str
    appointment_type: tuple[str, str]  # v2-0276 code, display
    description: str
    reason: str
    cancel_reason: tuple[str, str, str] = ("", "", "")  # code, display, text; "" = booked


# fmt: off
APPOINTMENTS: tuple[AppointmentRow, ...] = (
    AppointmentRow(
        "appt-maria-lopez-follow-up", "pat-maria-lopez", "pr-ana-garcia", "hs-follow-up",
        ("FOLLOWUP", "A follow up visit from a previous appointment"),
        "Blood pressure follow-up", "Review home blood pressure readings",
    ),
    AppointmentRow(
        "appt-wei-zhang-cardiology", "pat-wei-zhang", "pr-david-chen", "hs-cardiology-consult",
        ("ROUTINE", "Routine appointment - default if not valued"),
        "Cardiology consult", "Intermittent palpitations",
    ),
    AppointmentRow(
        "appt-emma-johnson-cancelled", "pat-emma-johnson", "pr-samuel-okafor", "hs-follow-up",
        ("FOLLOWUP", "A follow up visit from a previous appointment"),
        "Ear infection follow-up", "Recheck after antibiotic course",
        cancel_reason=("pat", "Patient", "Family travelling; will rebook next week"),
    ),
)
# fmt: on
