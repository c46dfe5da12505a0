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
    VISIT_TYPE_SYSTEM,
    WEEKDAYS,
    AppointmentRow,
    Hours,
    PractitionerRow,
    SlotRow,
)
from fhirserver.scheduling.availability import generated_slot_id
from fhirserver.scheduling.visit_types import default_minutes

PLANNING_HORIZON_DAYS = 90
SLOT_WINDOW_DAYS = 7
LUNCH = ("12:00", "13:00")
MIN_NOTICE_MINUTES = 120
RULE_URL = "http://fhirserver.dev/StructureDefinition/availability-rule"

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


def _has_lunch(days: tuple[str, ...], opening: str, closing: str) -> bool:
    """Weekday blocks (not Saturday) spanning the 12:00-13:00 lunch hour get a lunch break."""
    return any(d != "sat" for d in days) and opening <= LUNCH[0] and closing >= LUNCH[1]


def _rule(p: PractitionerRow, hours: Hours) -> Resource:
    """One availability-rule extension for a clinic block of ``p`` at their hospital.

    Weekday blocks offer every visit type of the practitioner, with a lunch break;
    Saturday blocks offer no new-patient visits. Slots need two hours' notice and are
    offered up to the 90-day planning horizon.
    """
    days, opening, closing = hours
    types = _visit_types(p)
    if days == ("sat",):
        types = [t for t in types if t != "NEW_PATIENT"]
    subs: list[Resource] = [{"url": "daysOfWeek", "valueCode": d} for d in days]
    subs += [
        {"url": "start", "valueTime": f"{opening}:00"},
        {"url": "end", "valueTime": f"{closing}:00"},
        {"url": "location", "valueReference": location_ref(p.hospital)},
    ]
    subs += [
        {"url": "visitType", "valueCoding": {"system": VISIT_TYPE_SYSTEM, "code": t}}
        for t in types
    ]
    if _has_lunch(days, opening, closing):
        subs.append(
            {
                "url": "break",
                "extension": [
                    {"url": "start", "valueTime": f"{LUNCH[0]}:00"},
                    {"url": "end", "valueTime": f"{LUNCH[1]}:00"},
                ],
            }
        )
    subs += [
        {"url": "minNoticeMinutes", "valueInteger": MIN_NOTICE_MINUTES},
        {"url": "maxAdvanceDays", "valueInteger": PLANNING_HORIZON_DAYS},
    ]
    return {"url": RULE_URL, "extension": subs}


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
                "extension": [_rule(p, hours) for hours in p.clinic],
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


def _in_clinic(p: PractitionerRow, row: SlotRow) -> bool:
    """Whether the rules of ``p`` already offer the whole of ``row``."""
    wd, hhmm, minutes, _ = row
    end = _add_minutes(hhmm, minutes)
    return any(wd in days and opening <= hhmm and end <= close for days, opening, close in p.clinic)


def _add_minutes(hhmm: str, minutes: int) -> str:
    total = int(hhmm[:2]) * 60 + int(hhmm[3:]) + minutes
    return f"{total // 60:02d}:{total % 60:02d}"


def _slot_plan(p: PractitionerRow, day: date) -> list[tuple[SlotRow, str]]:
    """The explicit (row, status) pairs of ``p`` on ``day``, earliest first: free blocks
    the rules do not already offer (extra clinics) and busy-unavailable blocks (CME)."""
    wd = WEEKDAYS[day.weekday()]
    plan = [(row, "free") for row in p.free if row[0] == wd and not _in_clinic(p, row)]
    plan += [(row, "busy-unavailable") for row in p.blocked if row[0] == wd]
    return sorted(plan, key=lambda item: item[0][1])


def slots(today: date) -> list[Resource]:
    """Explicit Slots for the 7 days after ``today``: extra free blocks and CME blocks."""
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


def _first_bookable(p: PractitionerRow, today: date, minutes: int) -> datetime:
    """The first weekday clinic time of ``p`` after ``today`` (one hour after opening, on
    the visit's grid) clear of CME blocks: where the demo puts the practitioner's visit."""
    tz = _tz(p)
    for offset in range(1, 15):
        day = today + timedelta(days=offset)
        wd = WEEKDAYS[day.weekday()]
        for days, opening, _closing in p.clinic:
            if wd not in days or wd == "sat":
                continue
            start = local(day, _add_minutes(opening, 60), tz)
            end = start + timedelta(minutes=minutes)
            blocked = any(
                row[0] == wd
                and local(day, row[1], tz) < end
                and start < local(day, row[1], tz) + timedelta(minutes=row[2])
                for row in p.blocked
            )
            if not blocked:
                return start
    raise ValueError(f"no clinic time for {p.id}")


def _appointment(row: AppointmentRow, today: date) -> Resource:
    p = _PRACTITIONERS[row.practitioner]
    pt = _PATIENTS[row.patient]
    service = _SERVICES[row.service]
    cancelled = bool(row.cancel_reason[0])
    minutes = default_minutes(service.visit_type) or 30
    start = _first_bookable(p, today, minutes)
    end = start + timedelta(minutes=minutes)
    slot_id = generated_slot_id(start, minutes, schedule_id(p))
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
        "start": instant(start),
        "end": instant(end),
        "minutesDuration": minutes,
        "slot": [ref("Slot", slot_id)],
        "created": today.isoformat(),
        "comment": f"Visit type: {SERVICE_NAMES[row.service]}.",
        "patientInstruction": "Please arrive 15 minutes early and bring your insurance card.",
        "participant": participants,
    }
    return resource


def appointments(today: date) -> list[Resource]:
    """The demo appointments, each at its practitioner's first weekday clinic time after
    ``today`` (a slot the rules generate, so its Slot id is a generated one)."""
    return [_appointment(row, today) for row in APPOINTMENTS]
