"""The demo data set: valid R4 resources, resolvable references, right times and offsets."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhirserver.demo.data import demo_resources
from fhirserver.demo.npi import is_valid_npi, make_npi
from fhirserver.scheduling.availability import Candidate, Interval, bookable_slots
from fhirserver.scheduling.rules import parse_rules

Resource = dict[str, Any]

TZ_EXT = "http://hl7.org/fhir/StructureDefinition/timezone"
RULE_URL = "http://fhirserver.dev/StructureDefinition/availability-rule"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
MRN_SYSTEM = "http://fhirserver.dev/sid/mrn"
VISIT_TYPE_SYSTEM = "http://fhirserver.dev/CodeSystem/visit-type"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# A spread of anchor days: every weekday, both US DST changes, year end.
TODAYS = [
    date(2026, 3, 6),  # Friday before DST starts (Sun 8 Mar 2026)
    date(2026, 10, 30),  # Friday before DST ends (Sun 1 Nov 2026)
    date(2026, 12, 30),
    *(date(2026, 6, 1) + timedelta(days=i) for i in range(7)),
]

# R4 required bindings on the elements the demo data uses: (type, dotted path) -> codes.
DAYS = set(WEEKDAYS)
CONTACT_SYSTEMS = {"phone", "fax", "email", "pager", "url", "sms", "other"}
CONTACT_USES = {"home", "work", "temp", "old", "mobile"}
REQUIRED_BINDINGS: dict[tuple[str, str], set[str]] = {
    ("Appointment", "status"): {
        "proposed",
        "pending",
        "booked",
        "arrived",
        "fulfilled",
        "cancelled",
        "noshow",
        "entered-in-error",
        "checked-in",
        "waitlist",
    },
    ("Appointment", "participant.status"): {"accepted", "declined", "tentative", "needs-action"},
    ("Appointment", "participant.required"): {"required", "optional", "information-only"},
    ("Slot", "status"): {"busy", "free", "busy-unavailable", "busy-tentative", "entered-in-error"},
    ("Location", "status"): {"active", "suspended", "inactive"},
    ("Location", "mode"): {"instance", "kind"},
    ("Location", "hoursOfOperation.daysOfWeek"): DAYS,
    ("PractitionerRole", "availableTime.daysOfWeek"): DAYS,
    ("HealthcareService", "availableTime.daysOfWeek"): DAYS,
    ("Device", "status"): {"active", "inactive", "entered-in-error", "unknown"},
    ("Device", "deviceName.type"): {
        "udi-label-name",
        "user-friendly-name",
        "patient-reported-name",
        "manufacturer-name",
        "model-name",
        "other",
    },
    ("Patient", "gender"): {"male", "female", "other", "unknown"},
    ("Practitioner", "gender"): {"male", "female", "other", "unknown"},
    ("Patient", "name.use"): {"usual", "official", "temp", "nickname", "anonymous", "old"},
    ("Practitioner", "name.use"): {"usual", "official", "temp", "nickname", "anonymous", "old"},
    ("Patient", "identifier.use"): {"usual", "official", "temp", "secondary", "old"},
    ("Practitioner", "identifier.use"): {"usual", "official", "temp", "secondary", "old"},
}
for _rt in ("Organization", "Location", "Practitioner", "PractitionerRole", "Patient"):
    REQUIRED_BINDINGS[(_rt, "telecom.system")] = CONTACT_SYSTEMS
    REQUIRED_BINDINGS[(_rt, "telecom.use")] = CONTACT_USES
for _rt, _path in (("Organization", "address"), ("Location", "address"), ("Patient", "address")):
    REQUIRED_BINDINGS[(_rt, f"{_path}.use")] = {"home", "work", "temp", "old", "billing"}
    REQUIRED_BINDINGS[(_rt, f"{_path}.type")] = {"postal", "physical", "both"}


@pytest.fixture(scope="module")
def resources() -> list[Resource]:
    return demo_resources(date(2026, 3, 6))


def by_key(resources: list[Resource]) -> dict[str, Resource]:
    return {f"{r['resourceType']}/{r['id']}": r for r in resources}


def of_type(resources: list[Resource], rt: str) -> list[Resource]:
    return [r for r in resources if r["resourceType"] == rt]


def walk(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (key, value) pair in a JSON tree; list items come with key None."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield None, v
            yield from walk(v)


def values_at(node: Any, path: str) -> Iterator[Any]:
    """Values at a dotted path, flattening lists at every step."""
    if isinstance(node, list):
        for item in node:
            yield from values_at(item, path)
        return
    head, _, rest = path.partition(".")
    if not isinstance(node, dict) or head not in node:
        return
    if rest:
        yield from values_at(node[head], rest)
    elif isinstance(node[head], list):
        yield from node[head]
    else:
        yield node[head]


def references(resource: Resource) -> list[str]:
    return [v for k, v in walk(resource) if k == "reference"]


def hospital_zone(index: dict[str, Resource], location_key: str) -> ZoneInfo:
    """The IANA zone of a Location, from its own timezone extension or its partOf chain."""
    loc = index[location_key]
    while True:
        for ext in loc.get("extension", []):
            if ext["url"] == TZ_EXT:
                return ZoneInfo(ext["valueCode"])
        loc = index[loc["partOf"]["reference"]]


def hospital_of(index: dict[str, Resource], location_key: str) -> Resource:
    loc = index[location_key]
    while "partOf" in loc:
        loc = index[loc["partOf"]["reference"]]
    return loc


def slot_location(index: dict[str, Resource], slot: Resource) -> str:
    schedule = index[slot["schedule"]["reference"]]
    for actor in schedule["actor"]:
        key = actor["reference"]
        if key.startswith("Location/"):
            return str(key)
        if key.startswith("PractitionerRole/"):
            return str(index[key]["location"][0]["reference"])
    raise AssertionError(f"no location for {slot['id']}")


def appointment_location(appt: Resource) -> str:
    for p in appt["participant"]:
        if p["actor"]["reference"].startswith("Location/"):
            return str(p["actor"]["reference"])
    raise AssertionError(f"no location for {appt['id']}")


def timed(resources: list[Resource]) -> Iterator[tuple[Resource, str]]:
    """(Slot or Appointment, its Location key)."""
    index = by_key(resources)
    for r in resources:
        if r["resourceType"] == "Slot":
            yield r, slot_location(index, r)
        elif r["resourceType"] == "Appointment":
            yield r, appointment_location(r)


def generated(resources: list[Resource], start: date, days: int) -> list[Candidate]:
    """Every slot the demo Schedules' rules offer from ``start`` for ``days`` days, as the
    server would before any booking (explicit Slots applied, no claims)."""
    locations = {r["id"]: r for r in of_type(resources, "Location")}
    window = Interval(
        datetime.combine(start, time(), tzinfo=ZoneInfo("UTC")),
        datetime.combine(start + timedelta(days=days), time(), tzinfo=ZoneInfo("UTC")),
    )
    now = window.start - timedelta(days=1)
    out: list[Candidate] = []
    for schedule in of_type(resources, "Schedule"):
        explicit = [
            s
            for s in of_type(resources, "Slot")
            if s["schedule"]["reference"] == f"Schedule/{schedule['id']}"
        ]
        out += bookable_slots(
            schedule, window=window, now=now, locations=locations, explicit_slots=explicit,
            busy=[],
        )
    return out


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def parse_time(value: str) -> time:
    return time.fromisoformat(value)


# --- structure ----------------------------------------------------------------


def test_every_resource_validates_against_r4b(resources: list[Resource]) -> None:
    for r in resources:
        get_fhir_model_class(r["resourceType"]).model_validate(r)


def test_expected_shape(resources: list[Resource]) -> None:
    counts = Counter(r["resourceType"] for r in resources)
    assert counts["Organization"] == 3
    assert counts["Practitioner"] >= 6
    assert counts["PractitionerRole"] >= counts["Practitioner"]
    assert counts["Schedule"] == counts["Practitioner"]
    assert counts["Patient"] >= 5
    assert counts["Device"] >= 1
    assert counts["HealthcareService"] >= 4
    assert counts["Slot"] >= 1
    for schedule in of_type(resources, "Schedule"):
        rules, issues = parse_rules(schedule)
        assert rules and not issues, schedule["id"]
    hospitals = [loc for loc in of_type(resources, "Location") if "partOf" not in loc]
    assert {h["id"] for h in hospitals} == {"loc-riverside-general", "loc-riverside-front-range"}
    for h in hospitals:
        assert h["mode"] == "instance" and h["status"] == "active"
        assert h["physicalType"]["coding"][0]["code"] == "bu"
        assert {"latitude", "longitude"} <= set(h["position"])
        assert h["hoursOfOperation"] and h["telecom"] and h["address"]
        rooms = [
            loc
            for loc in of_type(resources, "Location")
            if loc.get("partOf", {}).get("reference") == f"Location/{h['id']}"
        ]
        assert len(rooms) >= 3
        assert all(r["physicalType"]["coding"][0]["code"] == "ro" for r in rooms)
    zones = {e["valueCode"] for h in hospitals for e in h["extension"] if e["url"] == TZ_EXT}
    assert zones == {"America/New_York", "America/Denver"}
    statuses = Counter(a["status"] for a in of_type(resources, "Appointment"))
    assert statuses["booked"] >= 2 and statuses["cancelled"] == 1
    slot_statuses = {s["status"] for s in of_type(resources, "Slot")}
    assert slot_statuses == {"free", "busy-unavailable"}


def test_ids_unique_per_type(resources: list[Resource]) -> None:
    keys = [f"{r['resourceType']}/{r['id']}" for r in resources]
    assert len(keys) == len(set(keys))


def test_references_resolve_to_earlier_resources(resources: list[Resource]) -> None:
    seen: set[str] = set()
    for r in resources:
        for key in references(r):
            if key.startswith("Slot/g-"):
                continue  # a generated Slot: computed from rules, never stored
            assert key in seen, f"{r['resourceType']}/{r['id']} -> {key}"
        seen.add(f"{r['resourceType']}/{r['id']}")


def test_required_bindings_and_no_empty_values(resources: list[Resource]) -> None:
    for r in resources:
        for (rt, path), allowed in REQUIRED_BINDINGS.items():
            if r["resourceType"] == rt:
                for value in values_at(r, path):
                    assert value in allowed, f"{rt}/{r['id']} {path}={value!r}"
        for key, value in walk(r):
            assert value not in ("", [], {}), f"{r['resourceType']}/{r['id']} {key} is empty"
            if isinstance(value, str):
                assert value == value.strip()


def test_ids_are_valid_fhir_ids(resources: list[Resource]) -> None:
    for r in resources:
        assert 1 <= len(r["id"]) <= 64
        assert all(c.isalnum() or c in "-." for c in r["id"])


def test_codes_from_the_agreed_systems(resources: list[Resource]) -> None:
    codes = {
        c["code"]
        for r in resources
        for k, v in walk(r)
        if k == "coding"
        for c in v
        if c["system"] == VISIT_TYPE_SYSTEM
    }
    assert codes <= {"NEW_PATIENT", "FOLLOW_UP", "URGENT_CARE", "TELEHEALTH", "PROCEDURE"}
    assert {"NEW_PATIENT", "FOLLOW_UP", "TELEHEALTH"} <= codes
    for pt in of_type(resources, "Patient"):
        assert any(i["system"] == MRN_SYSTEM for i in pt["identifier"])
        assert pt["communication"][0]["language"]["coding"][0]["system"] == "urn:ietf:bcp:47"
    assert any("generalPractitioner" in pt for pt in of_type(resources, "Patient"))


# --- NPIs ---------------------------------------------------------------------


def test_npis_pass_luhn_with_80840_prefix(resources: list[Resource]) -> None:
    npis = [
        i["value"]
        for pr in of_type(resources, "Practitioner")
        for i in pr["identifier"]
        if i["system"] == NPI_SYSTEM
    ]
    assert len(npis) == len(of_type(resources, "Practitioner"))
    assert len(set(npis)) == len(npis)
    for npi in npis:
        assert len(npi) == 10 and npi.isdigit() and npi[0] in "12"
        assert luhn_ok("80840" + npi), npi
        assert is_valid_npi(npi)


def test_npi_helpers() -> None:
    assert make_npi("123456789") == "1234567893"  # the CMS worked example
    assert is_valid_npi("1234567893")
    assert not is_valid_npi("1234567894")
    assert not is_valid_npi("123456789")
    with pytest.raises(ValueError):
        make_npi("12345678")


# --- times --------------------------------------------------------------------


@pytest.mark.parametrize("today", TODAYS, ids=str)
def test_offsets_match_hospital_zone(today: date) -> None:
    resources = demo_resources(today)
    index = by_key(resources)
    items = list(timed(resources))
    assert items
    for item, location in items:
        zone = hospital_zone(index, location)
        for field in ("start", "end"):
            text = item[field]
            dt = datetime.fromisoformat(text)
            assert dt.tzinfo is not None and text[-6] in "+-", text
            local = dt.astimezone(zone)
            assert dt.utcoffset() == local.utcoffset(), f"{item['id']} {text} vs {zone}"
            assert dt.replace(tzinfo=None) == local.replace(tzinfo=None)
        start = datetime.fromisoformat(item["start"])
        assert today < start.date() <= today + timedelta(days=7)
        assert start < datetime.fromisoformat(item["end"])


def _offsets(resources: list[Resource], start: date, days: int) -> Counter[tuple[str, str]]:
    """(rule location, UTC offset) of every generated slot in the window, local-rendered."""
    return Counter(
        (str(c.location_id), c.start.astimezone(ZoneInfo(c.tz)).isoformat()[-6:])
        for c in generated(resources, start, days)
    )


def test_dst_start_week_has_both_offsets() -> None:
    resources = demo_resources(date(2026, 3, 6))
    offsets = _offsets(resources, date(2026, 3, 7), 7)
    assert offsets[("loc-riverside-general", "-05:00")] > 0  # Sat 7 Mar, before the change
    assert offsets[("loc-riverside-general", "-04:00")] > 0  # from Mon 9 Mar
    assert offsets[("loc-riverside-front-range", "-07:00")] > 0
    assert offsets[("loc-riverside-front-range", "-06:00")] > 0
    schedule = by_key(resources)["Schedule/sch-ana-garcia"]
    assert schedule["planningHorizon"] == {
        "start": "2026-03-06T00:00:00-05:00",
        "end": "2026-06-04T00:00:00-04:00",
    }


def test_dst_end_week_has_both_offsets() -> None:
    offsets = _offsets(demo_resources(date(2026, 10, 30)), date(2026, 10, 31), 7)
    assert {"-04:00", "-05:00", "-06:00", "-07:00"} <= {o for _, o in offsets}


def test_rules_offer_clinic_hours_with_lunch_and_notice() -> None:
    resources = demo_resources(date(2026, 6, 1))  # a Monday
    ana = [c for c in generated(resources, date(2026, 6, 2), 1) if "ana-garcia" in c.schedule_id]
    local = {(c.visit_type, c.start.astimezone(ZoneInfo(c.tz)).strftime("%H:%M")) for c in ana}
    assert ("NEW_PATIENT", "08:00") in local and ("NEW_PATIENT", "16:00") in local
    assert ("FOLLOW_UP", "11:30") in local and ("FOLLOW_UP", "13:00") in local
    assert not any("12:00" <= hhmm < "13:00" for _, hhmm in local)  # lunch break
    saturday = [
        c for c in generated(resources, date(2026, 6, 6), 1) if "ana-garcia" in c.schedule_id
    ]
    assert saturday and "NEW_PATIENT" not in {c.visit_type for c in saturday}


@pytest.mark.parametrize("today", TODAYS, ids=str)
def test_times_inside_hours_of_operation(today: date) -> None:
    resources = demo_resources(today)
    index = by_key(resources)
    for item, location in timed(resources):
        zone = hospital_zone(index, location)
        hospital = hospital_of(index, location)
        start = datetime.fromisoformat(item["start"]).astimezone(zone)
        end = datetime.fromisoformat(item["end"]).astimezone(zone)
        assert start.date() == end.date()
        day = WEEKDAYS[start.weekday()]
        assert any(
            day in h["daysOfWeek"]
            and parse_time(h["openingTime"]) <= start.time()
            and end.time() <= parse_time(h["closingTime"])
            for h in hospital["hoursOfOperation"]
        ), f"{item['resourceType']}/{item['id']} {start}-{end} outside {hospital['id']} hours"


@pytest.mark.parametrize("today", TODAYS, ids=str)
def test_appointments_sit_on_generated_slots(today: date) -> None:
    resources = demo_resources(today)
    offered = {c.slot_id: c for c in generated(resources, today, 15)}
    appointments = of_type(resources, "Appointment")
    assert len(appointments) == 3
    for appt in appointments:
        (slot_ref,) = appt["slot"]
        cand = offered[slot_ref["reference"].removeprefix("Slot/")]
        assert datetime.fromisoformat(appt["start"]) == cand.start
        assert datetime.fromisoformat(appt["end"]) == cand.end
        assert cand.visit_type == appt["serviceType"][0]["coding"][0]["code"]
        minutes = datetime.fromisoformat(appt["end"]) - datetime.fromisoformat(appt["start"])
        assert appt["minutesDuration"] * 60 == minutes.total_seconds()
        kinds = {p["actor"]["reference"].split("/")[0] for p in appt["participant"]}
        assert kinds == {"Patient", "Practitioner", "Location"}
        if appt["status"] == "booked":
            assert {p["status"] for p in appt["participant"]} == {"accepted"}
            assert "cancelationReason" not in appt
        else:
            assert appt["cancelationReason"]["coding"][0]["code"] == "pat"


@pytest.mark.parametrize("today", TODAYS, ids=str)
def test_free_and_blocked_slots_do_not_overlap(today: date) -> None:
    by_schedule: dict[str, list[tuple[datetime, datetime, str]]] = {}
    for slot in of_type(demo_resources(today), "Slot"):
        span = (datetime.fromisoformat(slot["start"]), datetime.fromisoformat(slot["end"]))
        by_schedule.setdefault(slot["schedule"]["reference"], []).append((*span, slot["id"]))
    for spans in by_schedule.values():
        spans.sort()
        for (_, end, a), (start, _, b) in pairwise(spans):
            assert end <= start, f"{a} overlaps {b}"


def test_blocked_slots_have_comments(resources: list[Resource]) -> None:
    blocked = [s for s in of_type(resources, "Slot") if s["status"] == "busy-unavailable"]
    comments = {s["comment"] for s in blocked}
    assert comments and all(c.startswith("CME") for c in comments)
    breaks = [
        sub
        for schedule in of_type(resources, "Schedule")
        for rule in schedule["extension"]
        if rule["url"] == RULE_URL
        for sub in rule["extension"]
        if sub["url"] == "break"
    ]
    assert breaks  # lunch is a rule break, not a stored Slot


# --- API behaviour --------------------------------------------------------------


def test_default_today_is_date_today() -> None:
    assert demo_resources() == demo_resources(date.today())


def test_deterministic_and_fresh() -> None:
    first = demo_resources(date(2026, 3, 6))
    snapshot = json.dumps(first, sort_keys=True)
    first[0]["name"] = "changed"
    first[-1]["participant"].clear()
    assert json.dumps(demo_resources(date(2026, 3, 6)), sort_keys=True) == snapshot
