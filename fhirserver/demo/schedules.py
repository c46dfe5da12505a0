"""Demo Schedules, explicit Slots and Appointments, built relative to a given day."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from fhirserver.demo.helpers import (
    HOSPITALS_BY_LOCATION,
    Resource,
    concept,
    instant,
    local,
    location_ref,
    ref,
    slug,
    specialty,
    visit_type,
)
from fhirserver.demo.people import SERVICE_NAMES, practitioner_name, practitioner_ref, role_id
from fhirserver.demo.tables import (
    APPOINTMENTS,
    PATIENTS,
    PRACTITIONERS,
    SERVICES,
    SPECIALTIES,
    WEEKDAYS,
    AppointmentRow,
    PractitionerRow,
    SlotRow,
)

PLANNING_HORIZON_DAYS = 90
SLOT_WINDOW_DAYS = 7
LUNCH = ("12:00", 60, "Lunch")

_APPOINTMENT_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0276"
_CANCEL_REASON = "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason"
_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
_SERVICES = {s.id: s for s in SERVICES}
_PRACTITIONERS = {p.id: p for p in PRACTITIONERS}
_PATIENTS = {p.id: p for p in PATIENTS}


def schedule_id(p: PractitionerRow) -> str:
    """Id of the practitioner's Schedule: "sch-ana-garcia"."""
    return f"sch-{slug(p.id)}"


def _tz(p: PractitionerRow) -> str:
    return HOSPITALS_BY_LOCATION[p.hospital].tz


def _visit_types(p: PractitionerRow) -> list[str]:
    return list(dict.fromkeys(_SERVICES[s].visit_type for s in p.services))


def _lunch_days(p: PractitionerRow) -> set[str]:
    """Weekdays (not Saturday) whose clinic hours span the 12:00-13:00 lunch hour."""
    return {
        d
        for days, opening, closing in p.clinic
        for d in days
        if d != "sat" and opening <= "12:00" and closing >= "13:00"
    }


def schedules(today: date) -> list[Resource]:
    """One active Schedule per practitioner, planning horizon today + 90 days (local)."""
    out: list[Resource] = []
    for p in PRACTITIONERS:
        tz = _tz(p)
        horizon_end = today + timedelta(days=PLANNING_HORIZON_DAYS)
        actors = [practitioner_ref(p), ref("PractitionerRole", role_id(p))]
        if p.schedule_room:
            actors.append(location_ref(p.room))
        hospital = HOSPITALS_BY_LOCATION[p.hospital]
        out.append(
            {
                "resourceType": "Schedule",
                "id": schedule_id(p),
                "active": True,
                "serviceType": [visit_type(v) for v in _visit_types(p)],
                "specialty": [specialty(p.specialty)],
                "actor": actors,
                "planningHorizon": {
                    "start": instant(local(today, "00:00", tz)),
                    "end": instant(local(horizon_end, "00:00", tz)),
                },
                "comment": (
                    f"{practitioner_name(p)}: {SPECIALTIES[p.specialty]} at {hospital.name}"
                ),
            }
        )
    return out


def _slot_plan(p: PractitionerRow, day: date) -> list[tuple[SlotRow, str]]:
    """The (row, status) pairs of ``p`` on ``day``, earliest first."""
    wd = WEEKDAYS[day.weekday()]
    plan = [(row, "free") for row in p.free if row[0] == wd]
    plan += [(row, "busy-unavailable") for row in p.blocked if row[0] == wd]
    if wd in _lunch_days(p):
        plan.append(((wd, *LUNCH), "busy-unavailable"))
    return sorted(plan, key=lambda item: item[0][1])


def slots(today: date) -> list[Resource]:
    """Explicit Slots for the 7 days after ``today``: free blocks, lunch and CME blocks."""
    out: list[Resource] = []
    for p in PRACTITIONERS:
        tz = _tz(p)
        for offset in range(1, SLOT_WINDOW_DAYS + 1):
            day = today + timedelta(days=offset)
            for (_, hhmm, minutes, comment), status in _slot_plan(p, day):
                start = local(day, hhmm, tz)
                slot: Resource = {
                    "resourceType": "Slot",
                    "id": f"slot-{slug(p.id)}-{day:%Y%m%d}-{hhmm.replace(':', '')}",
                }
                if status == "free":
                    slot["serviceType"] = [visit_type(v) for v in _visit_types(p)]
                slot |= {
                    "specialty": [specialty(p.specialty)],
                    "schedule": ref("Schedule", schedule_id(p)),
                    "status": status,
                    "start": instant(start),
                    "end": instant(start + timedelta(minutes=minutes)),
                }
                if comment:
                    slot["comment"] = comment
                out.append(slot)
    return out


def _first_free_slot(p: PractitionerRow, slot_list: list[Resource]) -> Resource:
    schedule = f"Schedule/{schedule_id(p)}"
    free = [
        s for s in slot_list if s["schedule"]["reference"] == schedule and s["status"] == "free"
    ]
    return min(free, key=lambda s: datetime.fromisoformat(s["start"]))


def _appointment(row: AppointmentRow, today: date, slot: Resource) -> Resource:
    p = _PRACTITIONERS[row.practitioner]
    pt = _PATIENTS[row.patient]
    service = _SERVICES[row.service]
    cancelled = bool(row.cancel_reason[0])
    start = datetime.fromisoformat(slot["start"])
    end = datetime.fromisoformat(slot["end"])
    participants: list[dict[str, Any]] = [
        {
            "actor": ref("Patient", pt.id, f"{pt.given} {pt.family}"),
            "required": "required",
            "status": "declined" if cancelled else "accepted",
        },
        {
            "type": [concept(_PARTICIPATION, "PPRF", "primary performer")],
            "actor": practitioner_ref(p),
            "required": "required",
            "status": "accepted",
        },
        {"actor": location_ref(p.room), "required": "required", "status": "accepted"},
    ]
    resource: Resource = {
        "resourceType": "Appointment",
        "id": row.id,
        "status": "cancelled" if cancelled else "booked",
    }
    if cancelled:
        code, display, text = row.cancel_reason
        reason = concept(_CANCEL_REASON, code, display)
        resource["cancelationReason"] = reason | {"text": text}
    resource |= {
        "serviceType": [visit_type(service.visit_type)],
        "specialty": [specialty(p.specialty)],
        "appointmentType": concept(_APPOINTMENT_TYPE, *row.appointment_type),
        "reasonCode": [{"text": row.reason}],
        "description": row.description,
        "start": slot["start"],
        "end": slot["end"],
        "minutesDuration": int((end - start).total_seconds() // 60),
        "slot": [ref("Slot", slot["id"])],
        "created": today.isoformat(),
        "comment": f"Visit type: {SERVICE_NAMES[row.service]}.",
        "patientInstruction": "Please arrive 15 minutes early and bring your insurance card.",
        "participant": participants,
    }
    return resource


def appointments(today: date, slot_list: list[Resource]) -> list[Resource]:
    """The demo appointments, each on its practitioner's first free Slot in ``slot_list``."""
    return [
        _appointment(row, today, _first_free_slot(_PRACTITIONERS[row.practitioner], slot_list))
        for row in APPOINTMENTS
    ]
