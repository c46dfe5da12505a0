"""The availability engine (availability.py): bookable slots from plain data, no servers.

Dates used: Monday 2026-11-23 (New York on EST, -05:00), Monday 2026-06-01 (EDT, -04:00),
Sunday 2026-03-08 (spring forward) and Sunday 2026-11-01 (fall back).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fhirserver.scheduling.availability import (
    Candidate,
    Interval,
    bookable_slots,
    generated_slot_id,
    parse_generated_slot_id,
    render_local,
)
from fhirserver.scheduling.hours import TIMEZONE_EXTENSION
from fhirserver.scheduling.rules import RULE_URL
from fhirserver.scheduling.visit_types import VISIT_TYPE_SYSTEM

NY = "America/New_York"
DENVER = "America/Denver"
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
NOW = datetime(2026, 1, 1, tzinfo=UTC)  # long before every window


def utc(text: str) -> datetime:
    """A tz-aware instant from ISO text (``Z`` or an offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def hospital(
    lid: str = "hosp",
    tz: str = NY,
    hours: list[tuple[list[str], str, str]] | None = None,
    part_of: str | None = None,
) -> dict[str, Any]:
    """A Location; `hours` = [(days, opening, closing)], None = no hoursOfOperation."""
    loc: dict[str, Any] = {"resourceType": "Location", "id": lid}
    if tz:
        loc["extension"] = [{"url": TIMEZONE_EXTENSION, "valueCode": tz}]
    if hours is not None:
        loc["hoursOfOperation"] = [
            {"daysOfWeek": d, "openingTime": o, "closingTime": c} for d, o, c in hours
        ]
    if part_of:
        loc["partOf"] = {"reference": f"Location/{part_of}"}
    return loc


def rule(
    days: list[str],
    start: str,
    end: str,
    *,
    location: str | None = "hosp",
    visit_types: tuple[str, ...] = (),
    durations: tuple[tuple[str, int, int | None], ...] = (),
    align: int | None = None,
    buffer: int | None = None,
    breaks: tuple[tuple[str, str], ...] = (),
    min_notice: int | None = None,
    max_advance: int | None = None,
    effective: tuple[str | None, str | None] | None = None,
) -> dict[str, Any]:
    """An availability-rule extension (times as HH:MM)."""
    subs: list[dict[str, Any]] = [{"url": "daysOfWeek", "valueCode": d} for d in days]
    subs += [{"url": "start", "valueTime": f"{start}:00"}, {"url": "end", "valueTime": f"{end}:00"}]
    if location:
        subs.append({"url": "location", "valueReference": {"reference": f"Location/{location}"}})
    subs += [
        {"url": "visitType", "valueCoding": {"system": VISIT_TYPE_SYSTEM, "code": v}}
        for v in visit_types
    ]
    for code, minutes, grid in durations:
        parts: list[dict[str, Any]] = [
            {"url": "visitType", "valueCoding": {"system": VISIT_TYPE_SYSTEM, "code": code}},
            {"url": "minutes", "valueInteger": minutes},
        ]
        if grid is not None:
            parts.append({"url": "alignMinutes", "valueInteger": grid})
        subs.append({"url": "duration", "extension": parts})
    for url, value in (
        ("alignMinutes", align),
        ("bufferMinutes", buffer),
        ("minNoticeMinutes", min_notice),
        ("maxAdvanceDays", max_advance),
    ):
        if value is not None:
            subs.append({"url": url, "valueInteger": value})
    for bs, be in breaks:
        subs.append(
            {
                "url": "break",
                "extension": [
                    {"url": "start", "valueTime": f"{bs}:00"},
                    {"url": "end", "valueTime": f"{be}:00"},
                ],
            }
        )
    if effective is not None:
        period = {k: v for k, v in zip(("start", "end"), effective, strict=True) if v}
        subs.append({"url": "effective", "valuePeriod": period})
    return {"url": RULE_URL, "extension": subs}


def schedule(
    *rules: dict[str, Any],
    service_types: tuple[str, ...] = ("FOLLOW_UP",),
    actors: tuple[str, ...] = ("Practitioner/p1",),
    horizon: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Schedule carrying `rules`."""
    out: dict[str, Any] = {
        "resourceType": "Schedule",
        "id": "s1",
        "active": True,
        "actor": [{"reference": a} for a in actors],
        "serviceType": [
            {"coding": [{"system": VISIT_TYPE_SYSTEM, "code": c}]} for c in service_types
        ],
        "extension": list(rules),
    }
    if horizon is not None:
        out["planningHorizon"] = horizon
    return out


def slot(start: str, end: str, status: str = "free", code: str | None = None) -> dict[str, Any]:
    """An explicit Slot of s1."""
    out: dict[str, Any] = {
        "resourceType": "Slot",
        "schedule": {"reference": "Schedule/s1"},
        "status": status,
        "start": start,
        "end": end,
    }
    if code is not None:
        out["serviceType"] = [{"coding": [{"system": VISIT_TYPE_SYSTEM, "code": code}]}]
    return out


def compute(
    sched: dict[str, Any],
    start: str,
    end: str,
    *,
    now: datetime = NOW,
    locations: dict[str, dict[str, Any]] | None = None,
    explicit: list[dict[str, Any]] | None = None,
    busy: list[tuple[str, str]] | None = None,
    visit_types: list[str] | None = None,
    service_durations: dict[str, tuple[int, int | None]] | None = None,
) -> list[Candidate]:
    """bookable_slots over [start, end) with the default New York hospital."""
    return bookable_slots(
        sched,
        window=Interval(utc(start), utc(end)),
        now=now,
        locations=locations if locations is not None else {"hosp": hospital()},
        explicit_slots=explicit or [],
        busy=[Interval(utc(s), utc(e)) for s, e in busy or []],
        visit_types=visit_types,
        service_durations=service_durations,
    )


def local(cands: list[Candidate]) -> list[str]:
    """Local start times with offset, e.g. ``2026-11-23T09:00:00-05:00``."""
    return [render_local(c.start, c.tz) for c in cands]


def hhmm(cands: list[Candidate]) -> list[str]:
    """Local start wall-clock HH:MM of each candidate."""
    return [render_local(c.start, c.tz)[11:16] for c in cands]


def typed(cands: list[Candidate]) -> list[tuple[str, str, int]]:
    """(local HH:MM, visit type, minutes) of each candidate."""
    return [
        (render_local(c.start, c.tz)[11:16], c.visit_type, int((c.end - c.start).seconds // 60))
        for c in cands
    ]


MON = ("2026-11-23T05:00Z", "2026-11-24T05:00Z")  # Monday 2026-11-23, New York local day
WEEK = ("2026-11-23T05:00Z", "2026-11-30T05:00Z")  # Monday 23 .. Sunday 29


# ---- basics -------------------------------------------------------------------------------


def test_local_start_end_and_offset() -> None:
    cands = compute(schedule(rule(["mon"], "09:00", "11:00")), *MON)
    assert local(cands) == [
        "2026-11-23T09:00:00-05:00",
        "2026-11-23T09:30:00-05:00",
        "2026-11-23T10:00:00-05:00",
        "2026-11-23T10:30:00-05:00",
    ]
    first, last = cands[0], cands[-1]
    assert first.start == utc("2026-11-23T14:00Z") and first.end == utc("2026-11-23T14:30Z")
    assert last.end == utc("2026-11-23T16:00Z")  # 11:00 local: the end is exclusive
    assert {(c.visit_type, c.tz, c.location_id, c.schedule_id) for c in cands} == {
        ("FOLLOW_UP", NY, "hosp", "s1")
    }
    # the same rule in summer (EDT) is one hour earlier in UTC
    summer = compute(
        schedule(rule(["mon"], "09:00", "10:00")), "2026-06-01T04:00Z", "2026-06-02T04:00Z"
    )
    assert local(summer) == ["2026-06-01T09:00:00-04:00", "2026-06-01T09:30:00-04:00"]
    assert summer[0].start == utc("2026-06-01T13:00Z")


def test_days_of_week() -> None:
    cands = compute(schedule(rule(["mon", "wed", "sat"], "09:00", "10:00")), *WEEK)
    assert local(cands) == [
        "2026-11-23T09:00:00-05:00",
        "2026-11-23T09:30:00-05:00",
        "2026-11-25T09:00:00-05:00",
        "2026-11-25T09:30:00-05:00",
        "2026-11-28T09:00:00-05:00",
        "2026-11-28T09:30:00-05:00",
    ]


def test_effective_period_start_inclusive_end_exclusive() -> None:
    sched = schedule(rule(ALL_DAYS, "09:00", "09:30", effective=("2026-11-24", "2026-11-27")))
    assert local(compute(sched, *WEEK)) == [
        "2026-11-24T09:00:00-05:00",
        "2026-11-25T09:00:00-05:00",
        "2026-11-26T09:00:00-05:00",
    ]
    open_ended = schedule(rule(ALL_DAYS, "09:00", "09:30", effective=("2026-11-28", None)))
    assert [s[:10] for s in local(compute(open_ended, *WEEK))] == ["2026-11-28", "2026-11-29"]


def test_planning_horizon_bounds_the_rules() -> None:
    sched = schedule(
        rule(ALL_DAYS, "09:00", "09:30"), horizon={"start": "2026-11-25", "end": "2026-11-26"}
    )
    # the horizon end date is inclusive
    assert [s[:10] for s in local(compute(sched, *WEEK))] == ["2026-11-25", "2026-11-26"]


def test_window_clips_slots_that_do_not_fit_wholly() -> None:
    sched = schedule(rule(["mon"], "09:00", "12:00"))
    cands = compute(sched, "2026-11-23T14:10Z", "2026-11-23T16:00Z")
    assert hhmm(cands) == ["09:30", "10:00", "10:30"]
    assert compute(sched, "2026-11-23T16:00Z", "2026-11-23T16:00Z") == []


# ---- visit types, durations and the grid --------------------------------------------------


def test_visit_types_per_block() -> None:
    sched = schedule(
        rule(["mon"], "09:00", "11:00", visit_types=("NEW_PATIENT",)),
        rule(["tue"], "09:00", "10:00", visit_types=("FOLLOW_UP",)),
        service_types=("NEW_PATIENT", "FOLLOW_UP"),
    )
    cands = compute(sched, *WEEK)
    assert [(s[:16], c.visit_type) for s, c in zip(local(cands), cands, strict=True)] == [
        ("2026-11-23T09:00", "NEW_PATIENT"),
        ("2026-11-23T10:00", "NEW_PATIENT"),
        ("2026-11-24T09:00", "FOLLOW_UP"),
        ("2026-11-24T09:30", "FOLLOW_UP"),
    ]


def test_rule_without_visit_types_offers_the_schedule_service_types_else_all() -> None:
    sched = schedule(rule(["mon"], "09:00", "10:00"), service_types=("FOLLOW_UP", "TELEHEALTH"))
    assert {c.visit_type for c in compute(sched, *MON)} == {"FOLLOW_UP", "TELEHEALTH"}
    everything = schedule(rule(["mon"], "09:00", "12:00"), service_types=())
    assert {c.visit_type for c in compute(everything, *MON)} == {
        "NEW_PATIENT",
        "FOLLOW_UP",
        "URGENT_CARE",
        "TELEHEALTH",
        "PROCEDURE",
        "ANNUAL_PHYSICAL",
        "CONSULT",
    }


def test_per_visit_type_duration_sorted_by_start_then_visit_type() -> None:
    sched = schedule(rule(["mon"], "09:00", "11:00"), service_types=("NEW_PATIENT", "FOLLOW_UP"))
    assert typed(compute(sched, *MON)) == [
        ("09:00", "FOLLOW_UP", 30),
        ("09:00", "NEW_PATIENT", 60),
        ("09:30", "FOLLOW_UP", 30),
        ("10:00", "FOLLOW_UP", 30),
        ("10:00", "NEW_PATIENT", 60),
        ("10:30", "FOLLOW_UP", 30),
    ]


def test_visit_type_filter() -> None:
    sched = schedule(rule(["mon"], "09:00", "11:00"), service_types=("NEW_PATIENT", "FOLLOW_UP"))
    assert typed(compute(sched, *MON, visit_types=["NEW_PATIENT"])) == [
        ("09:00", "NEW_PATIENT", 60),
        ("10:00", "NEW_PATIENT", 60),
    ]
    assert compute(sched, *MON, visit_types=["PROCEDURE"]) == []


def test_duration_override_sub_extension() -> None:
    sched = schedule(rule(["mon"], "09:00", "10:00", durations=(("FOLLOW_UP", 20, None),)))
    assert typed(compute(sched, *MON)) == [
        ("09:00", "FOLLOW_UP", 20),
        ("09:20", "FOLLOW_UP", 20),
        ("09:40", "FOLLOW_UP", 20),
    ]
    assert compute(sched, *MON)[0].slot_id == "g-202611231400-20-s1"
    # the override may carry its own grid
    gridded = schedule(rule(["mon"], "09:00", "10:00", durations=(("FOLLOW_UP", 20, 30),)))
    assert typed(compute(gridded, *MON)) == [("09:00", "FOLLOW_UP", 20), ("09:30", "FOLLOW_UP", 20)]


def test_healthcare_service_durations_apply_when_the_rule_has_none() -> None:
    sched = schedule(rule(["mon"], "09:00", "10:00"))
    assert typed(compute(sched, *MON, service_durations={"FOLLOW_UP": (15, None)})) == [
        ("09:00", "FOLLOW_UP", 15),
        ("09:15", "FOLLOW_UP", 15),
        ("09:30", "FOLLOW_UP", 15),
        ("09:45", "FOLLOW_UP", 15),
    ]
    own = schedule(rule(["mon"], "09:00", "10:00", durations=(("FOLLOW_UP", 20, None),)))
    assert [
        m for _, _, m in typed(compute(own, *MON, service_durations={"FOLLOW_UP": (15, None)}))
    ] == [20, 20, 20]


def test_align_exactly_one_hour_on_the_hour() -> None:
    sched = schedule(
        rule(["mon"], "09:15", "12:00", visit_types=("NEW_PATIENT",), align=60),
        service_types=("NEW_PATIENT",),
    )
    cands = compute(sched, *MON)
    assert local(cands) == ["2026-11-23T10:00:00-05:00", "2026-11-23T11:00:00-05:00"]
    assert all(c.end - c.start == timedelta(hours=1) for c in cands)


def test_default_alignment_is_the_duration_from_local_midnight() -> None:
    # 45-minute visits on a 45-minute grid from midnight: 09:00 is 12 x 45 minutes
    sched = schedule(rule(["mon"], "09:00", "12:00"), service_types=("ANNUAL_PHYSICAL",))
    assert hhmm(compute(sched, *MON)) == ["09:00", "09:45", "10:30", "11:15"]
    # a block starting off the grid starts at the next grid point
    late = schedule(rule(["mon"], "09:10", "11:00"))
    assert hhmm(compute(late, *MON)) == ["09:30", "10:00", "10:30"]


def test_finer_alignment_gives_overlapping_choices() -> None:
    sched = schedule(rule(["mon"], "09:00", "10:00", align=15))
    assert hhmm(compute(sched, *MON)) == ["09:00", "09:15", "09:30"]


# ---- breaks, buffers, busy time and explicit Slots ----------------------------------------


def test_break_is_never_offered() -> None:
    sched = schedule(rule(["mon"], "11:00", "14:00", breaks=(("12:00", "12:30"),)))
    assert hhmm(compute(sched, *MON)) == ["11:00", "11:30", "12:30", "13:00", "13:30"]
    hourly = schedule(
        rule(["mon"], "11:00", "14:00", breaks=(("12:00", "12:30"),)),
        service_types=("NEW_PATIENT",),
    )
    assert hhmm(compute(hourly, *MON)) == ["11:00", "13:00"]


def test_busy_intervals_subtract() -> None:
    sched = schedule(rule(["mon"], "09:00", "11:00"))
    cands = compute(sched, *MON, busy=[("2026-11-23T14:30Z", "2026-11-23T15:00Z")])
    assert hhmm(cands) == ["09:00", "10:00", "10:30"]
    partial = compute(sched, *MON, busy=[("2026-11-23T14:40Z", "2026-11-23T14:45Z")])
    assert hhmm(partial) == ["09:00", "10:00", "10:30"]


def test_buffer_around_busy_time() -> None:
    sched = schedule(rule(["mon"], "09:00", "12:00", buffer=10))
    busy = [("2026-11-23T15:00Z", "2026-11-23T15:30Z")]  # 10:00-10:30 local
    # 09:50-10:40 blocked: 09:30 would end at the claim, 10:30 would start at it
    assert hhmm(compute(sched, *MON, busy=busy)) == ["09:00", "11:00", "11:30"]
    no_buffer = schedule(rule(["mon"], "09:00", "12:00"))
    assert hhmm(compute(no_buffer, *MON, busy=busy)) == [
        "09:00",
        "09:30",
        "10:30",
        "11:00",
        "11:30",
    ]
    # without claimed time the buffer changes nothing
    assert len(compute(sched, *MON)) == 6


def test_busy_unavailable_slot_removes_time() -> None:
    sched = schedule(rule(["mon"], "09:00", "12:00"))
    explicit = [slot("2026-11-23T10:00:00-05:00", "2026-11-23T11:00:00-05:00", "busy-unavailable")]
    assert hhmm(compute(sched, *MON, explicit=explicit)) == ["09:00", "09:30", "11:00", "11:30"]
    ignored = [slot("2026-11-23T10:00:00-05:00", "2026-11-23T11:00:00-05:00", "entered-in-error")]
    assert len(compute(sched, *MON, explicit=ignored)) == 6
    tentative = [slot("2026-11-23T09:00:00-05:00", "2026-11-23T11:30:00-05:00", "busy-tentative")]
    assert hhmm(compute(sched, *MON, explicit=tentative)) == ["11:30"]


def test_free_slot_adds_a_block() -> None:
    sched = schedule(rule(["mon"], "09:00", "10:00"))
    explicit = [slot("2026-11-28T10:00:00-05:00", "2026-11-28T11:00:00-05:00")]  # a Saturday
    cands = compute(sched, *WEEK, explicit=explicit)
    assert local(cands) == [
        "2026-11-23T09:00:00-05:00",
        "2026-11-23T09:30:00-05:00",
        "2026-11-28T10:00:00-05:00",
        "2026-11-28T10:30:00-05:00",
    ]
    assert {(c.location_id, c.tz) for c in cands} == {("hosp", NY)}
    # adjacent to the rule block it just extends it
    extend = [slot("2026-11-23T10:00:00-05:00", "2026-11-23T11:00:00-05:00")]
    assert hhmm(compute(sched, *MON, explicit=extend)) == ["09:00", "09:30", "10:00", "10:30"]


def test_free_slot_for_one_visit_type() -> None:
    sched = schedule(rule(["mon"], "09:00", "10:00"), service_types=("FOLLOW_UP", "NEW_PATIENT"))
    explicit = [slot("2026-11-23T13:00:00-05:00", "2026-11-23T14:00:00-05:00", code="NEW_PATIENT")]
    assert typed(compute(sched, *MON, explicit=explicit, visit_types=["NEW_PATIENT"])) == [
        ("09:00", "NEW_PATIENT", 60),
        ("13:00", "NEW_PATIENT", 60),
    ]
    assert ("13:00", "FOLLOW_UP", 30) not in typed(compute(sched, *MON, explicit=explicit))


def test_free_slot_with_blocked_slot_inside() -> None:
    sched = schedule(rule(["tue"], "09:00", "10:00"))
    explicit = [
        slot("2026-11-23T13:00:00-05:00", "2026-11-23T15:00:00-05:00"),
        slot("2026-11-23T13:30:00-05:00", "2026-11-23T14:00:00-05:00", "busy-unavailable"),
    ]
    assert hhmm(compute(sched, *MON, explicit=explicit)) == ["13:00", "14:00", "14:30"]


# ---- notice and advance windows -----------------------------------------------------------


def test_min_notice() -> None:
    sched = schedule(rule(["mon"], "09:00", "12:00", min_notice=60))
    now = utc("2026-11-23T14:10Z")  # 09:10 local: nothing before 10:10
    assert hhmm(compute(sched, *MON, now=now)) == ["10:30", "11:00", "11:30"]
    exact = utc("2026-11-23T14:00Z")  # 09:00 local: 10:00 is exactly an hour away
    assert hhmm(compute(sched, *MON, now=exact)) == ["10:00", "10:30", "11:00", "11:30"]


def test_max_advance_days() -> None:
    sched = schedule(rule(ALL_DAYS, "09:00", "10:00", max_advance=1))
    now = utc("2026-11-23T14:00Z")  # Monday 09:00 local
    cands = compute(sched, *WEEK, now=now)
    # Monday 09:00 and 09:30 and Tuesday 09:00 (exactly one day later); nothing after
    assert local(cands) == [
        "2026-11-23T09:00:00-05:00",
        "2026-11-23T09:30:00-05:00",
        "2026-11-24T09:00:00-05:00",
    ]


# ---- operating hours ----------------------------------------------------------------------


def test_rule_wider_than_operating_hours_is_clipped() -> None:
    locations = {"hosp": hospital(hours=[(ALL_DAYS, "10:00:00", "12:00:00")])}
    sched = schedule(rule(["mon"], "08:00", "18:00"))
    assert hhmm(compute(sched, *MON, locations=locations)) == ["10:00", "10:30", "11:00", "11:30"]


def test_closed_day_gives_nothing() -> None:
    weekdays = ["mon", "tue", "wed", "thu", "fri"]
    locations = {"hosp": hospital(hours=[(weekdays, "06:00:00", "22:00:00")])}
    sched = schedule(rule(ALL_DAYS, "09:00", "10:00"))
    dates = {s[:10] for s in local(compute(sched, *WEEK, locations=locations))}
    assert dates == {"2026-11-23", "2026-11-24", "2026-11-25", "2026-11-26", "2026-11-27"}


def test_room_inherits_zone_and_hours_from_its_hospital() -> None:
    locations = {
        "room": hospital("room", tz="", part_of="hosp"),
        "hosp": hospital("hosp", hours=[(ALL_DAYS, "10:00:00", "11:00:00")]),
    }
    sched = schedule(rule(["mon"], "09:00", "12:00", location="room"))
    cands = compute(sched, *MON, locations=locations)
    assert local(cands) == ["2026-11-23T10:00:00-05:00", "2026-11-23T10:30:00-05:00"]
    assert {c.location_id for c in cands} == {"room"}


def test_free_slot_is_clipped_by_operating_hours() -> None:
    locations = {"hosp": hospital(hours=[(["sat"], "08:00:00", "12:00:00")])}
    sched = schedule(rule(["mon"], "09:00", "10:00"))
    explicit = [slot("2026-11-28T10:00:00-05:00", "2026-11-28T14:00:00-05:00")]
    cands = compute(sched, *WEEK, locations=locations, explicit=explicit)
    assert local(cands) == [
        "2026-11-28T10:00:00-05:00",
        "2026-11-28T10:30:00-05:00",
        "2026-11-28T11:00:00-05:00",
        "2026-11-28T11:30:00-05:00",
    ]


# ---- locations and zones ------------------------------------------------------------------


def test_rules_at_different_locations_each_in_its_own_zone() -> None:
    locations = {"hosp": hospital(), "denver": hospital("denver", tz=DENVER)}
    sched = schedule(
        rule(["mon"], "09:00", "10:00", location="hosp"),
        rule(["tue"], "09:00", "10:00", location="denver"),
    )
    cands = compute(sched, *WEEK, locations=locations)
    assert local(cands) == [
        "2026-11-23T09:00:00-05:00",
        "2026-11-23T09:30:00-05:00",
        "2026-11-24T09:00:00-07:00",
        "2026-11-24T09:30:00-07:00",
    ]
    assert [c.start for c in cands] == [
        utc("2026-11-23T14:00Z"),
        utc("2026-11-23T14:30Z"),
        utc("2026-11-24T16:00Z"),
        utc("2026-11-24T16:30Z"),
    ]
    assert [(c.location_id, c.tz) for c in cands] == [
        ("hosp", NY),
        ("hosp", NY),
        ("denver", DENVER),
        ("denver", DENVER),
    ]


def test_rule_without_location_uses_the_schedule_location_actor_else_utc() -> None:
    at_actor = schedule(
        rule(["mon"], "09:00", "10:00", location=None),
        actors=("Practitioner/p1", "Location/hosp"),
    )
    cands = compute(at_actor, *MON)
    assert local(cands) == ["2026-11-23T09:00:00-05:00", "2026-11-23T09:30:00-05:00"]
    assert cands[0].location_id == "hosp"
    nowhere = schedule(rule(["mon"], "09:00", "10:00", location=None))
    cands = compute(nowhere, "2026-11-23T00:00Z", "2026-11-24T00:00Z", locations={})
    assert local(cands) == ["2026-11-23T09:00:00+00:00", "2026-11-23T09:30:00+00:00"]
    assert (cands[0].location_id, cands[0].tz) == (None, "UTC")


def test_malformed_rules_offer_nothing() -> None:
    sched = schedule(rule(["mon"], "10:00", "09:00"), rule(["mon"], "09:00", "10:00"))
    assert hhmm(compute(sched, *MON)) == ["09:00", "09:30"]


# ---- DST ----------------------------------------------------------------------------------


def test_spring_forward_has_no_0200_local_slot() -> None:
    sched = schedule(rule(["sun"], "01:00", "04:00"))
    cands = compute(sched, "2026-03-08T05:00Z", "2026-03-09T04:00Z")
    assert local(cands) == [
        "2026-03-08T01:00:00-05:00",
        "2026-03-08T01:30:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-08T03:30:00-04:00",
    ]
    assert [c.start for c in cands] == [
        utc("2026-03-08T06:00Z"),
        utc("2026-03-08T06:30Z"),
        utc("2026-03-08T07:00Z"),
        utc("2026-03-08T07:30Z"),
    ]
    assert not any("T02:" in s for s in local(cands))
    # the 01:30 EST visit ends at 03:00 EDT: 30 real minutes
    assert render_local(cands[1].end, NY) == "2026-03-08T03:00:00-04:00"
    hourly = schedule(rule(["sun"], "01:00", "04:00"), service_types=("NEW_PATIENT",))
    assert local(compute(hourly, "2026-03-08T05:00Z", "2026-03-09T04:00Z")) == [
        "2026-03-08T01:00:00-05:00",
        "2026-03-08T03:00:00-04:00",
    ]


def test_fall_back_repeated_hour_offered_twice_without_duplicates() -> None:
    sched = schedule(rule(["sun"], "00:00", "03:00"))
    cands = compute(sched, "2026-11-01T04:00Z", "2026-11-02T05:00Z")
    assert local(cands) == [
        "2026-11-01T00:00:00-04:00",
        "2026-11-01T00:30:00-04:00",
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T01:30:00-05:00",
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T02:30:00-05:00",
    ]
    starts = [c.start for c in cands]
    assert starts == sorted(starts)
    assert len(set(starts)) == len(starts) == 8
    assert len({c.slot_id for c in cands}) == 8
    assert all(c.end - c.start == timedelta(minutes=30) for c in cands)
    hourly = schedule(rule(["sun"], "00:00", "03:00"), service_types=("NEW_PATIENT",))
    assert local(compute(hourly, "2026-11-01T04:00Z", "2026-11-02T05:00Z")) == [
        "2026-11-01T00:00:00-04:00",
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00",
    ]


def test_dst_days_later_in_the_day_keep_their_wall_clock() -> None:
    sched = schedule(rule(["sun"], "09:00", "10:00"))
    spring = compute(sched, "2026-03-08T05:00Z", "2026-03-09T04:00Z")
    fall = compute(sched, "2026-11-01T04:00Z", "2026-11-02T05:00Z")
    assert local(spring) == ["2026-03-08T09:00:00-04:00", "2026-03-08T09:30:00-04:00"]
    assert local(fall) == ["2026-11-01T09:00:00-05:00", "2026-11-01T09:30:00-05:00"]


def test_operating_hours_on_dst_days() -> None:
    locations = {"hosp": hospital(hours=[(ALL_DAYS, "01:30:00", "03:30:00")])}
    sched = schedule(rule(["sun"], "00:00", "05:00"))
    spring = compute(sched, "2026-03-08T05:00Z", "2026-03-09T04:00Z", locations=locations)
    assert local(spring) == ["2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00"]
    fall = compute(sched, "2026-11-01T04:00Z", "2026-11-02T05:00Z", locations=locations)
    assert local(fall) == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:30:00-05:00",  # 01:00-01:30 EST is before the 01:30 opening
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T02:30:00-05:00",
        "2026-11-01T03:00:00-05:00",
    ]


# ---- generated slot ids -------------------------------------------------------------------


def test_generated_slot_ids_round_trip() -> None:
    sched = schedule(rule(["mon"], "09:00", "11:00"), service_types=("NEW_PATIENT", "FOLLOW_UP"))
    cands = compute(sched, *MON)
    assert cands[0].slot_id == "g-202611231400-30-s1"
    for c in cands:
        minutes = int((c.end - c.start).total_seconds() // 60)
        assert parse_generated_slot_id(c.slot_id) == (c.start, minutes, "s1")
    fall = compute(
        schedule(rule(["sun"], "01:00", "02:00")), "2026-11-01T04:00Z", "2026-11-02T05:00Z"
    )
    assert [c.slot_id for c in fall] == [
        "g-202611010500-30-s1",
        "g-202611010530-30-s1",
        "g-202611010600-30-s1",
        "g-202611010630-30-s1",
    ]
    assert [parse_generated_slot_id(c.slot_id) for c in fall] == [(c.start, 30, "s1") for c in fall]


def test_generated_slot_id_format_and_parse() -> None:
    local_start = datetime.fromisoformat("2026-12-01T09:00:00-05:00")
    assert (
        generated_slot_id(local_start, 30, "sch-ana-garcia") == "g-202612011400-30-sch-ana-garcia"
    )
    assert parse_generated_slot_id("g-202612011400-30-sch-ana-garcia") == (
        utc("2026-12-01T14:00Z"),
        30,
        "sch-ana-garcia",
    )
    assert parse_generated_slot_id("g-202612011400-30-a.b-C9") == (
        utc("2026-12-01T14:00Z"),
        30,
        "a.b-C9",
    )
    for bad in (
        "slot-1",
        "g-202612011400-30-",
        "g-2026120114-30-s1",
        "g-202613011400-30-s1",  # month 13
        "g-202612011400-0-s1",
        "g-202612011400-x-s1",
        "g-202612011400-30-s1/x",
        "x-g-202612011400-30-s1",
    ):
        assert parse_generated_slot_id(bad) is None, bad


def test_render_local() -> None:
    instant = utc("2026-11-23T14:00Z")
    assert render_local(instant, NY) == "2026-11-23T09:00:00-05:00"
    assert render_local(instant, DENVER) == "2026-11-23T07:00:00-07:00"
    assert render_local(instant, "UTC") == "2026-11-23T14:00:00+00:00"
    assert render_local(instant, "Mars/Olympus_Mons") == "2026-11-23T14:00:00+00:00"


def test_interval_and_candidate_are_values() -> None:
    a = Interval(utc("2026-11-23T14:00Z"), utc("2026-11-23T14:30Z"))
    assert a == Interval(utc("2026-11-23T09:00:00-05:00"), utc("2026-11-23T09:30:00-05:00"))
    c = compute(schedule(rule(["mon"], "09:00", "09:30")), *MON)
    assert c == [
        Candidate(
            schedule_id="s1",
            start=a.start,
            end=a.end,
            visit_type="FOLLOW_UP",
            location_id="hosp",
            tz=NY,
            slot_id="g-202611231400-30-s1",
        )
    ]


def test_naive_window_is_read_as_utc() -> None:
    sched = schedule(rule(["mon"], "09:00", "10:00"))
    cands = bookable_slots(
        sched,
        window=Interval(datetime(2026, 11, 23, 14, 0), datetime(2026, 11, 23, 15, 0)),
        now=datetime(2026, 1, 1),
        locations={"hosp": hospital()},
        explicit_slots=[],
        busy=[],
    )
    assert hhmm(cands) == ["09:00", "09:30"]
