"""Parsing and checking availability rules (rules.py) and the visit-type catalogue
(visit_types.py): pure unit tests, no servers."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from fhirserver.fhir.errors import Unprocessable
from fhirserver.scheduling import visit_types
from fhirserver.scheduling.hours import TIMEZONE_EXTENSION
from fhirserver.scheduling.rules import (
    RULE_URL,
    VISIT_DURATION_URL,
    AvailabilityRule,
    VisitDuration,
    check_schedule,
    check_service,
    default_location,
    hours_issues,
    parse_rules,
    rule_errors,
    service_durations,
)

VISIT = visit_types.VISIT_TYPE_SYSTEM
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def coding(code: str, system: str | None = VISIT) -> dict[str, Any]:
    """A visit-type Coding."""
    out: dict[str, Any] = {"code": code}
    if system is not None:
        out["system"] = system
    return out


def rule(
    days: list[str] | None = None,
    start: str | None = "09:00:00",
    end: str | None = "17:00:00",
    *extra: dict[str, Any],
) -> dict[str, Any]:
    """An availability-rule extension; `extra` sub-extensions are appended."""
    subs: list[dict[str, Any]] = [
        {"url": "daysOfWeek", "valueCode": d} for d in (days if days is not None else ["mon"])
    ]
    if start is not None:
        subs.append({"url": "start", "valueTime": start})
    if end is not None:
        subs.append({"url": "end", "valueTime": end})
    subs.extend(extra)
    return {"url": RULE_URL, "extension": subs}


def sched(*rules: dict[str, Any], actors: list[str] | None = None) -> dict[str, Any]:
    """A Schedule with the given extensions."""
    return {
        "resourceType": "Schedule",
        "id": "s1",
        "actor": [{"reference": a} for a in (actors or ["Practitioner/p1"])],
        "extension": list(rules),
    }


def loc_ref(lid: str) -> dict[str, Any]:
    """A rule's location sub-extension."""
    return {"url": "location", "valueReference": {"reference": f"Location/{lid}"}}


def integer(url: str, value: Any) -> dict[str, Any]:
    """An integer sub-extension."""
    return {"url": url, "valueInteger": value}


def brk(start: str, end: str) -> dict[str, Any]:
    """A break sub-extension."""
    return {
        "url": "break",
        "extension": [{"url": "start", "valueTime": start}, {"url": "end", "valueTime": end}],
    }


def duration(code: str, minutes: Any, align: int | None = None) -> dict[str, Any]:
    """A duration sub-extension."""
    subs: list[dict[str, Any]] = [
        {"url": "visitType", "valueCoding": coding(code)},
        {"url": "minutes", "valueInteger": minutes},
    ]
    if align is not None:
        subs.append({"url": "alignMinutes", "valueInteger": align})
    return {"url": "duration", "extension": subs}


def hospital(
    lid: str = "hosp",
    opening: str = "06:00:00",
    closing: str = "22:00:00",
    days: list[str] | None = None,
) -> dict[str, Any]:
    """A Location open `days` (default every day) opening-closing local."""
    return {
        "resourceType": "Location",
        "id": lid,
        "extension": [{"url": TIMEZONE_EXTENSION, "valueCode": "America/New_York"}],
        "hoursOfOperation": [
            {"daysOfWeek": days or ALL_DAYS, "openingTime": opening, "closingTime": closing}
        ],
    }


def only_rule(schedule: dict[str, Any]) -> AvailabilityRule:
    """The single well-formed rule of a Schedule (asserting there are no issues)."""
    rules, issues = parse_rules(schedule)
    assert issues == []
    assert len(rules) == 1
    return rules[0]


def diagnostics(schedule: dict[str, Any]) -> list[str]:
    """The diagnostics of every rule issue."""
    return [i.diagnostics for i in parse_rules(schedule)[1]]


# ---- parsing ------------------------------------------------------------------------------


def test_parse_full_rule() -> None:
    ext = rule(
        ["mon", "wed", "mon"],
        "08:00:00",
        "17:30:00",
        loc_ref("hosp"),
        {"url": "effective", "valuePeriod": {"start": "2026-11-01", "end": "2027-02"}},
        {"url": "visitType", "valueCoding": coding("NEW_PATIENT")},
        {"url": "visitType", "valueCoding": coding("FOLLOW_UP", None)},
        {"url": "visitType", "valueCoding": coding("NEW_PATIENT")},
        duration("FOLLOW_UP", 20, 10),
        integer("alignMinutes", 60),
        integer("bufferMinutes", 5),
        brk("12:00:00", "12:30:00"),
        brk("10:00:00", "10:15:00"),
        integer("minNoticeMinutes", 120),
        integer("maxAdvanceDays", 60),
    )
    r = only_rule(sched({"url": "http://example.org/other", "valueString": "x"}, ext))
    assert r == AvailabilityRule(
        index=1,
        days=frozenset({"mon", "wed"}),
        start=480,
        end=1050,
        location_id="hosp",
        effective_start=date(2026, 11, 1),
        effective_end=date(2027, 2, 1),
        visit_types=("NEW_PATIENT", "FOLLOW_UP"),
        durations=(VisitDuration("FOLLOW_UP", 20, 10),),
        align=60,
        buffer=5,
        breaks=((600, 615), (720, 750)),
        min_notice=120,
        max_advance_days=60,
    )
    assert r.duration_of("FOLLOW_UP") == VisitDuration("FOLLOW_UP", 20, 10)
    assert r.duration_of("NEW_PATIENT") is None
    assert r.open_minutes() == [(480, 600), (615, 720), (750, 1050)]


def test_minimal_rule_defaults() -> None:
    r = only_rule(sched(rule()))
    assert r.days == frozenset({"mon"})
    assert (r.start, r.end) == (540, 1020)
    assert r.location_id is None
    assert r.visit_types == () and r.durations == () and r.breaks == ()
    assert r.align is None and r.buffer == 0 and r.min_notice == 0
    assert r.max_advance_days is None
    assert r.open_minutes() == [(540, 1020)]


def test_applies_on_weekday_and_effective_period() -> None:
    r = only_rule(
        sched(
            rule(
                ["mon", "tue"],
                "09:00:00",
                "10:00:00",
                {
                    "url": "effective",
                    "valuePeriod": {"start": "2026-11-24", "end": "2026-12-01T00:00:00Z"},
                },
            )
        )
    )
    assert not r.applies_on(date(2026, 11, 23))  # Monday before the start
    assert r.applies_on(date(2026, 11, 24))  # Tuesday: first effective day (inclusive)
    assert not r.applies_on(date(2026, 11, 25))  # Wednesday: not a rule day
    assert r.applies_on(date(2026, 11, 30))  # Monday
    assert not r.applies_on(date(2026, 12, 1))  # Tuesday: end is exclusive


def test_rules_keep_extension_order_and_skip_malformed_ones() -> None:
    schedule = sched(
        rule(["mon"]),
        rule(["tue"], "10:00:00", "09:00:00"),
        {"url": "http://example.org/x", "valueString": "ignored"},
        rule(["wed"]),
    )
    rules, issues = parse_rules(schedule)
    assert [r.index for r in rules] == [0, 3]
    assert [r.days for r in rules] == [frozenset({"mon"}), frozenset({"wed"})]
    assert len(issues) == 1
    assert issues[0].expression == "Schedule.extension[1]"
    assert issues[0].diagnostics == "start 10:00 must be before end 09:00"


def test_schedule_without_rules() -> None:
    assert parse_rules({"resourceType": "Schedule"}) == ([], [])


@pytest.mark.parametrize(
    ("ext", "expression", "message"),
    [
        (rule(["mon"], "17:00:00", "09:00:00"), "Schedule.extension[0]", "must be before end"),
        (rule(["mon"], "09:00:00", "09:00:00"), "Schedule.extension[0]", "must be before end"),
        (rule(["monday"]), "Schedule.extension[0].extension[0]", "unknown day code 'monday'"),
        (rule([]), "Schedule.extension[0]", "at least one daysOfWeek"),
        (rule(["mon"], None), "Schedule.extension[0]", "needs start and end"),
        (rule(["mon"], "9am"), "Schedule.extension[0].extension[1]", "valueTime"),
        (
            rule(["mon"], "09:00:00", "17:00:00", {"url": "start", "valueTime": "10:00:00"}),
            "Schedule.extension[0].extension[3]",
            "start given twice",
        ),
        (
            rule(["mon"], "09:00:00", "17:00:00", {"url": "visitType", "valueCoding": coding("X")}),
            "Schedule.extension[0].extension[3]",
            "unknown visit type 'X'",
        ),
        (
            rule(
                ["mon"],
                "09:00:00",
                "17:00:00",
                {"url": "visitType", "valueCoding": coding("FOLLOW_UP", "http://snomed.info/sct")},
            ),
            "Schedule.extension[0].extension[3]",
            "unknown visit type 'FOLLOW_UP'",
        ),
        (
            rule(["mon"], "09:00:00", "17:00:00", duration("FOLLOW_UP", 0)),
            "Schedule.extension[0].extension[3].extension[1]",
            "must be >= 1",
        ),
        (
            rule(["mon"], "09:00:00", "17:00:00", duration("NOPE", 30)),
            "Schedule.extension[0].extension[3].extension[0]",
            "unknown visit type 'NOPE'",
        ),
        (
            rule(
                ["mon"],
                "09:00:00",
                "17:00:00",
                {"url": "duration", "extension": [{"url": "minutes", "valueInteger": 30}]},
            ),
            "Schedule.extension[0].extension[3]",
            "needs visitType and minutes",
        ),
        (
            rule(["mon"], "09:00:00", "17:00:00", integer("bufferMinutes", -5)),
            "Schedule.extension[0].extension[3]",
            "must be >= 0",
        ),
        (
            rule(["mon"], "09:00:00", "17:00:00", integer("alignMinutes", 0)),
            "Schedule.extension[0].extension[3]",
            "must be >= 1",
        ),
        (
            rule(["mon"], "09:00:00", "17:00:00", integer("maxAdvanceDays", "30")),
            "Schedule.extension[0].extension[3]",
            "needs valueInteger",
        ),
        (
            rule(["mon"], "09:00:00", "17:00:00", integer("minNoticeMinutes", True)),
            "Schedule.extension[0].extension[3]",
            "needs valueInteger",
        ),
        (
            rule(["mon"], "09:00:00", "17:00:00", brk("12:30:00", "12:00:00")),
            "Schedule.extension[0].extension[3]",
            "break start must be before its end",
        ),
        (
            rule(["mon"], "09:00:00", "17:00:00", brk("08:00:00", "09:30:00")),
            "Schedule.extension[0]",
            "break 08:00-09:30 lies outside the block 09:00-17:00",
        ),
        (
            rule(["mon"], "09:00:00", "17:00:00", {"url": "break", "extension": []}),
            "Schedule.extension[0].extension[3]",
            "a break needs start and end",
        ),
        (
            rule(
                ["mon"],
                "09:00:00",
                "17:00:00",
                {"url": "effective", "valuePeriod": {"start": "2026-12-01", "end": "2026-11-01"}},
            ),
            "Schedule.extension[0].extension[3]",
            "effective start must be before",
        ),
        (
            rule(["mon"], "09:00:00", "17:00:00", {"url": "effective", "valueString": "always"}),
            "Schedule.extension[0].extension[3]",
            "effective needs valuePeriod",
        ),
        (
            rule(
                ["mon"],
                "09:00:00",
                "17:00:00",
                {"url": "location", "valueReference": {"reference": "Practitioner/p1"}},
            ),
            "Schedule.extension[0].extension[3]",
            "location needs valueReference to a Location",
        ),
        (
            rule(["mon"], "09:00:00", "17:00:00", {"url": "colour", "valueCode": "red"}),
            "Schedule.extension[0].extension[3]",
            "unknown availability-rule sub-extension 'colour'",
        ),
        (
            {**rule(), "valueString": "09:00-17:00"},
            "Schedule.extension[0]",
            "no value[x]",
        ),
    ],
)
def test_malformed_rules_are_reported_with_their_path(
    ext: dict[str, Any], expression: str, message: str
) -> None:
    rules, issues = parse_rules(sched(ext))
    assert rules == []
    assert any(i.expression == expression and message in i.diagnostics for i in issues), issues


def test_effective_with_unparseable_dates_is_reported() -> None:
    ext = rule(
        ["mon"],
        "09:00:00",
        "17:00:00",
        {"url": "effective", "valuePeriod": {"start": "next monday"}},
    )
    assert any("effective start" in d for d in diagnostics(sched(ext)))


def test_rule_issue_as_operation_outcome_issue() -> None:
    _, issues = parse_rules(sched(rule(["xyz"])))
    assert issues[0].as_issue() == {
        "severity": "error",
        "code": "business-rule",
        "diagnostics": "unknown day code 'xyz' (use mon..sun)",
        "expression": ["Schedule.extension[0].extension[0]"],
    }


# ---- operating hours ----------------------------------------------------------------------


def test_default_location_is_the_first_location_actor() -> None:
    assert default_location(sched(actors=["Practitioner/p1", "Location/a", "Location/b"])) == "a"
    assert default_location(sched(actors=["Practitioner/p1"])) is None


def test_rule_inside_operating_hours_is_fine() -> None:
    schedule = sched(rule(ALL_DAYS, "06:00:00", "22:00:00", loc_ref("hosp")))
    assert rule_errors(schedule, {"hosp": hospital()}) == []
    check_schedule(schedule, {"hosp": hospital()})


def test_rule_wider_than_operating_hours_is_refused_per_day() -> None:
    schedule = sched(rule(["mon", "sat"], "05:00:00", "10:00:00", loc_ref("hosp")))
    locations = {"hosp": hospital(opening="06:00:00", closing="22:00:00", days=["mon", "tue"])}
    issues = rule_errors(schedule, locations)
    assert [(i.expression, i.diagnostics) for i in issues] == [
        (
            "Schedule.extension[0]",
            "on mon 05:00-06:00 lies outside the operating hours of Location/hosp",
        ),
        (
            "Schedule.extension[0]",
            "on sat 05:00-10:00 lies outside the operating hours of Location/hosp",
        ),
    ]
    with pytest.raises(Unprocessable) as err:
        check_schedule(schedule, locations)
    outcome = err.value.outcome()
    assert err.value.status == 422
    assert outcome["issue"][0]["expression"] == ["Schedule.extension[0]"]
    assert "on mon 05:00-06:00" in outcome["issue"][0]["diagnostics"]
    assert "on sat 05:00-10:00" in outcome["issue"][1]["diagnostics"]


def test_hours_check_ignores_the_rule_breaks() -> None:
    # the hospital closes for lunch; a rule whose break covers the closure fits
    hosp = hospital()
    hosp["hoursOfOperation"] = [
        {"daysOfWeek": ["mon"], "openingTime": "08:00:00", "closingTime": "12:00:00"},
        {"daysOfWeek": ["mon"], "openingTime": "13:00:00", "closingTime": "18:00:00"},
    ]
    ok = sched(rule(["mon"], "09:00:00", "17:00:00", loc_ref("hosp"), brk("12:00:00", "13:00:00")))
    assert rule_errors(ok, {"hosp": hosp}) == []
    bad = sched(rule(["mon"], "09:00:00", "17:00:00", loc_ref("hosp")))
    assert [i.diagnostics for i in rule_errors(bad, {"hosp": hosp})] == [
        "on mon 12:00-13:00 lies outside the operating hours of Location/hosp"
    ]


def test_hours_come_from_the_default_location_and_the_part_of_chain() -> None:
    room = {"resourceType": "Location", "id": "room", "partOf": {"reference": "Location/hosp"}}
    locations = {"room": room, "hosp": hospital()}
    schedule = sched(rule(["mon"], "21:00:00", "23:00:00"), actors=["Location/room"])
    assert [i.diagnostics for i in rule_errors(schedule, locations)] == [
        "on mon 22:00-23:00 lies outside the operating hours of Location/room"
    ]


def test_locations_without_hours_or_unknown_restrict_nothing() -> None:
    schedule = sched(rule(ALL_DAYS, "00:00:00", "23:59:59", loc_ref("open")))
    assert rule_errors(schedule, {"open": {"resourceType": "Location", "id": "open"}}) == []
    assert rule_errors(schedule, {}) == []
    assert rule_errors(schedule) == []
    assert hours_issues(parse_rules(schedule)[0][0], schedule, {}) == []


# ---- visit types and durations ------------------------------------------------------------


def test_visit_type_catalogue_defaults() -> None:
    assert visit_types.codes() == (
        "NEW_PATIENT",
        "FOLLOW_UP",
        "URGENT_CARE",
        "TELEHEALTH",
        "PROCEDURE",
        "ANNUAL_PHYSICAL",
        "CONSULT",
    )
    minutes = {code: visit_types.default_minutes(code) for code in visit_types.codes()}
    assert minutes == {
        "NEW_PATIENT": 60,
        "FOLLOW_UP": 30,
        "URGENT_CARE": 20,
        "TELEHEALTH": 20,
        "PROCEDURE": 90,
        "ANNUAL_PHYSICAL": 45,
        "CONSULT": 45,
    }
    assert visit_types.catalogue()["NEW_PATIENT"].display == "New patient visit"
    assert visit_types.default_minutes("NOPE") is None
    assert visit_types.is_known("FOLLOW_UP") and not visit_types.is_known("follow_up")


def test_visit_type_codings() -> None:
    assert visit_types.coding_code(coding("FOLLOW_UP")) == "FOLLOW_UP"
    assert visit_types.coding_code(coding("FOLLOW_UP", None)) == "FOLLOW_UP"
    assert visit_types.coding_code(coding("NOPE", None)) is None
    assert visit_types.coding_code(coding("FOLLOW_UP", "http://snomed.info/sct")) is None
    assert visit_types.coding_code({"system": VISIT}) is None
    assert visit_types.coding_code("FOLLOW_UP") is None
    concepts = [
        {"coding": [coding("CONSULT"), {"system": "http://snomed.info/sct", "code": "1"}]},
        {"text": "no coding"},
        {"coding": [coding("FOLLOW_UP"), coding("CONSULT")]},
        "junk",
    ]
    assert visit_types.concept_codes(concepts) == ["CONSULT", "FOLLOW_UP"]


def visit_duration(code: str, minutes: Any, align: int | None = None) -> dict[str, Any]:
    """A HealthcareService visit-duration extension."""
    ext = duration(code, minutes, align)
    return {**ext, "url": VISIT_DURATION_URL}


def test_service_durations() -> None:
    service = {
        "resourceType": "HealthcareService",
        "extension": [
            visit_duration("NEW_PATIENT", 40),
            visit_duration("FOLLOW_UP", 15, 30),
            visit_duration("NEW_PATIENT", 90),  # first one wins
            {"url": "http://example.org/other", "valueString": "x"},
        ],
    }
    assert service_durations(service) == {"NEW_PATIENT": (40, None), "FOLLOW_UP": (15, 30)}
    check_service(service)
    assert service_durations({"resourceType": "HealthcareService"}) == {}


def test_malformed_service_duration_is_422() -> None:
    service = {"resourceType": "HealthcareService", "extension": [visit_duration("NOPE", 40)]}
    with pytest.raises(Unprocessable) as err:
        check_service(service)
    assert err.value.expression == ["HealthcareService.extension[0].extension[0]"]
    assert "unknown visit type 'NOPE'" in err.value.diagnostics
