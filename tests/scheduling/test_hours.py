"""Operating hours, time zones and DST helpers of scheduling/hours.py (pure, no servers)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from fhirserver.scheduling.hours import (
    DAY_CODES,
    DAY_MINUTES,
    TIMEZONE_EXTENSION,
    WeeklyHours,
    chain_hours,
    chain_timezone,
    day_pieces,
    format_minutes,
    hours_spans,
    intersect,
    local_date,
    local_dates,
    location_chain,
    merge,
    midnight,
    parse_hours_of_operation,
    parse_time,
    ref_id,
    subtract,
    valid_zone,
    wall_to_utc,
)

NY = "America/New_York"
H = 3600
DAY_CODES_LIST = list(DAY_CODES)


def ts(text: str) -> int:
    """Epoch seconds of an ISO instant."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def iso(seconds: int) -> str:
    """An epoch instant as ``YYYY-MM-DDTHH:MMZ``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%MZ")


def spans_iso(spans: list[tuple[int, int]]) -> list[tuple[str, str]]:
    """UTC spans rendered for readable assertions."""
    return [(iso(s), iso(e)) for s, e in spans]


def location(
    lid: str,
    *,
    tz: str | None = None,
    hours: list[dict[str, Any]] | None = None,
    part_of: str | None = None,
) -> dict[str, Any]:
    """A Location dict with optional zone, hours and parent."""
    loc: dict[str, Any] = {"resourceType": "Location", "id": lid}
    if tz is not None:
        loc["extension"] = [{"url": TIMEZONE_EXTENSION, "valueCode": tz}]
    if hours is not None:
        loc["hoursOfOperation"] = hours
    if part_of is not None:
        loc["partOf"] = {"reference": f"Location/{part_of}"}
    return loc


def hours_entry(days: list[str], opening: str | None, closing: str | None) -> dict[str, Any]:
    """One hoursOfOperation entry."""
    entry: dict[str, Any] = {"daysOfWeek": days}
    if opening is not None:
        entry["openingTime"] = opening
    if closing is not None:
        entry["closingTime"] = closing
    return entry


# ---- references, chains and zones -------------------------------------------------------


def test_ref_id_reads_literal_references_of_one_type() -> None:
    assert ref_id({"reference": "Location/loc-1"}) == "loc-1"
    assert ref_id({"reference": "http://x.example/fhir/Location/loc-1"}) == "loc-1"
    assert ref_id({"reference": "Location/loc-1/"}) == "loc-1"
    assert ref_id({"reference": "Practitioner/p1"}) is None
    assert ref_id({"reference": "Practitioner/p1"}, "Practitioner") == "p1"
    assert ref_id({"display": "somewhere"}) is None
    assert ref_id("Location/loc-1") is None
    assert ref_id(None) is None


def test_location_chain_follows_part_of_nearest_first_and_stops_on_cycles() -> None:
    locs = {
        "room": location("room", part_of="wing"),
        "wing": location("wing", part_of="hosp"),
        "hosp": location("hosp", tz=NY),
    }
    assert [x["id"] for x in location_chain("room", locs)] == ["room", "wing", "hosp"]
    assert [x["id"] for x in location_chain("wing", locs)] == ["wing", "hosp"]
    assert location_chain("absent", locs) == []
    # a missing ancestor just ends the chain
    assert [x["id"] for x in location_chain("r2", {"r2": location("r2", part_of="x")})] == ["r2"]
    cyclic = {"a": location("a", part_of="b"), "b": location("b", part_of="a")}
    assert [x["id"] for x in location_chain("a", cyclic)] == ["a", "b"]


def test_chain_timezone_is_the_nearest_valid_timezone_extension() -> None:
    hosp = location("hosp", tz=NY)
    room = location("room", part_of="hosp")
    assert chain_timezone([room, hosp]) == NY
    assert chain_timezone([location("r", tz="America/Denver"), hosp]) == "America/Denver"
    assert chain_timezone([location("r", tz="Mars/Olympus_Mons"), hosp]) == NY
    assert chain_timezone([room]) is None
    assert chain_timezone([]) is None


def test_valid_zone() -> None:
    assert valid_zone(NY)
    assert valid_zone("UTC")
    assert not valid_zone("Mars/Olympus_Mons")
    assert not valid_zone("")
    assert not valid_zone("../etc/passwd")


# ---- times and spans ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("00:00:00", 0),
        ("09:30:00", 570),
        ("12:00:00.000", 720),
        ("08:00:30", 481),  # seconds round up to the next minute
        ("23:59:59", DAY_MINUTES),  # "until the end of the day"
        ("23:59:00", 1439),
    ],
)
def test_parse_time(text: str, minutes: int) -> None:
    assert parse_time(text) == minutes


@pytest.mark.parametrize(
    "text", ["9:00:00", "09:00", "24:00:00", "12:60:00", "12:00:61", "ab:cd:ef", "", None, 900]
)
def test_parse_time_rejects_malformed(text: Any) -> None:
    assert parse_time(text) is None


def test_format_minutes() -> None:
    assert format_minutes(0) == "00:00"
    assert format_minutes(570) == "09:30"
    assert format_minutes(DAY_MINUTES) == "24:00"


def test_merge_intersect_subtract() -> None:
    assert merge([(5, 8), (1, 3), (3, 4), (7, 10), (12, 12), (20, 15)]) == [(1, 4), (5, 10)]
    assert intersect([(0, 10), (20, 30)], [(5, 25)]) == [(5, 10), (20, 25)]
    assert intersect([(0, 10)], []) == []
    assert subtract([(0, 10), (20, 30)], [(2, 4), (8, 22), (29, 40)]) == [
        (0, 2),
        (4, 8),
        (22, 29),
    ]
    assert subtract([(0, 10)], [(0, 10)]) == []
    assert subtract([(0, 10)], []) == [(0, 10)]


# ---- hoursOfOperation ---------------------------------------------------------------------


def test_hours_of_operation_per_weekday() -> None:
    loc = location(
        "h",
        hours=[
            hours_entry(["mon", "tue", "wed", "thu", "fri"], "07:00:00", "19:00:00"),
            hours_entry(["sat"], "08:00:00", "12:00:00"),
        ],
    )
    hours = parse_hours_of_operation(loc)
    assert hours is not None
    assert hours.days[0] == ((420, 1140),)
    assert hours.days[5] == ((480, 720),)
    assert hours.days[6] == ()  # Sunday not listed: closed
    assert hours.on(date(2026, 11, 23)) == ((420, 1140),)  # a Monday
    assert hours.on(date(2026, 11, 29)) == ()  # a Sunday


def test_hours_of_operation_all_day_missing_times_and_split_days() -> None:
    loc = location(
        "h",
        hours=[
            {"daysOfWeek": ["sun"], "allDay": True},
            hours_entry(["mon"], None, "12:00:00"),
            hours_entry(["tue"], "13:00:00", None),
            hours_entry(["wed"], "08:00:00", "12:00:00"),
            hours_entry(["wed"], "13:00:00", "17:00:00"),
            hours_entry(["wed"], "11:00:00", "13:30:00"),
            hours_entry(["thu", "funday"], "09:00:00", "10:00:00"),
            "not an entry",
        ],
    )
    hours = parse_hours_of_operation(loc)
    assert hours is not None
    assert hours.days[6] == ((0, DAY_MINUTES),)
    assert hours.days[0] == ((0, 720),)
    assert hours.days[1] == ((780, DAY_MINUTES),)
    assert hours.days[2] == ((480, 1020),)  # overlapping entries merge
    assert hours.days[3] == ((540, 600),)


def test_hours_of_operation_overnight_entry_spills_into_next_day() -> None:
    hours = parse_hours_of_operation(
        location("er", hours=[hours_entry(["sun", "fri"], "22:00:00", "06:00:00")])
    )
    assert hours is not None
    assert hours.days[DAY_CODES.index("sun")] == ((1320, DAY_MINUTES),)
    assert hours.days[DAY_CODES.index("mon")] == ((0, 360),)  # Sunday night spills to Monday
    assert hours.days[DAY_CODES.index("fri")] == ((1320, DAY_MINUTES),)
    assert hours.days[DAY_CODES.index("sat")] == ((0, 360),)


def test_no_hours_of_operation_means_unrestricted() -> None:
    assert parse_hours_of_operation(location("h")) is None
    assert parse_hours_of_operation({"hoursOfOperation": []}) is None
    assert chain_hours([location("room"), location("hosp")]) is None
    assert chain_hours([]) is None


def test_chain_hours_intersects_every_level_with_hours() -> None:
    hosp = location("hosp", hours=[hours_entry(DAY_CODES_LIST, "06:00:00", "22:00:00")])
    clinic = location(
        "clinic", part_of="hosp", hours=[hours_entry(["mon", "sat"], "05:00:00", "12:00:00")]
    )
    room = location("room", part_of="clinic")
    hours = chain_hours([room, clinic, hosp])
    assert hours is not None
    assert hours.days[0] == ((360, 720),)
    assert hours.days[5] == ((360, 720),)
    assert hours.days[1] == ()
    # a room without hours inside the hospital is open exactly when the hospital is
    only_hosp = chain_hours([room, hosp])
    assert only_hosp is not None and only_hosp.days[3] == ((360, 1320),)


# ---- DST and local time -------------------------------------------------------------------


def test_midnight_is_naive_midnight_read_as_utc() -> None:
    assert midnight(date(1970, 1, 2)) == 86400
    assert iso(midnight(date(2026, 11, 23))) == "2026-11-23T00:00Z"


def test_day_pieces_normal_day_is_one_24_hour_piece() -> None:
    assert day_pieces(NY, date(2026, 11, 23)) == (
        (ts("2026-11-23T05:00Z"), ts("2026-11-24T05:00Z"), -5 * H),
    )
    assert day_pieces(NY, date(2026, 6, 1)) == (
        (ts("2026-06-01T04:00Z"), ts("2026-06-02T04:00Z"), -4 * H),
    )
    assert day_pieces("UTC", date(2026, 3, 8)) == (
        (ts("2026-03-08T00:00Z"), ts("2026-03-09T00:00Z"), 0),
    )


def test_day_pieces_spring_forward_is_23_hours() -> None:
    pieces = day_pieces(NY, date(2026, 3, 8))
    assert pieces == (
        (ts("2026-03-08T05:00Z"), ts("2026-03-08T07:00Z"), -5 * H),
        (ts("2026-03-08T07:00Z"), ts("2026-03-09T04:00Z"), -4 * H),
    )
    assert sum(e - s for s, e, _ in pieces) == 23 * H


def test_day_pieces_fall_back_is_25_hours() -> None:
    pieces = day_pieces(NY, date(2026, 11, 1))
    assert pieces == (
        (ts("2026-11-01T04:00Z"), ts("2026-11-01T06:00Z"), -4 * H),
        (ts("2026-11-01T06:00Z"), ts("2026-11-02T05:00Z"), -5 * H),
    )
    assert sum(e - s for s, e, _ in pieces) == 25 * H


def test_day_pieces_when_dst_starts_at_midnight() -> None:
    # Chile springs forward at 24:00: 2026-09-06 starts at 01:00 local, 23 hours long
    pieces = day_pieces("America/Santiago", date(2026, 9, 6))
    assert pieces == ((ts("2026-09-06T04:00Z"), ts("2026-09-07T03:00Z"), -3 * H),)
    assert wall_to_utc("America/Santiago", date(2026, 9, 6), 0, 120) == [
        (ts("2026-09-06T04:00Z"), ts("2026-09-06T05:00Z"))
    ]


def test_wall_to_utc_plain_day() -> None:
    assert spans_iso(wall_to_utc(NY, date(2026, 11, 23), 9 * 60, 17 * 60)) == [
        ("2026-11-23T14:00Z", "2026-11-23T22:00Z")
    ]
    assert spans_iso(wall_to_utc(NY, date(2026, 6, 1), 9 * 60, 17 * 60)) == [
        ("2026-06-01T13:00Z", "2026-06-01T21:00Z")
    ]
    assert spans_iso(wall_to_utc(NY, date(2026, 11, 23), 0, DAY_MINUTES)) == [
        ("2026-11-23T05:00Z", "2026-11-24T05:00Z")
    ]


def test_wall_to_utc_skips_the_missing_spring_forward_hour() -> None:
    day = date(2026, 3, 8)
    # 01:00-04:00 local: 02:00-03:00 does not exist, two real hours remain
    assert spans_iso(wall_to_utc(NY, day, 60, 240)) == [("2026-03-08T06:00Z", "2026-03-08T08:00Z")]
    # a block starting inside the gap starts at the first existing instant (03:00 EDT)
    assert spans_iso(wall_to_utc(NY, day, 150, 300)) == [("2026-03-08T07:00Z", "2026-03-08T09:00Z")]
    # a block wholly inside the gap is empty
    assert wall_to_utc(NY, day, 120, 180) == []


def test_wall_to_utc_keeps_both_copies_of_the_fall_back_hour() -> None:
    day = date(2026, 11, 1)
    assert spans_iso(wall_to_utc(NY, day, 0, 180)) == [("2026-11-01T04:00Z", "2026-11-01T08:00Z")]
    # 01:00-02:00 local happens at 05:00Z (EDT) and again at 06:00Z (EST)
    assert spans_iso(wall_to_utc(NY, day, 60, 120)) == [("2026-11-01T05:00Z", "2026-11-01T07:00Z")]
    assert spans_iso(wall_to_utc(NY, day, 120, 240)) == [("2026-11-01T07:00Z", "2026-11-01T09:00Z")]


def test_local_date_and_local_dates() -> None:
    assert local_date(NY, ts("2026-11-24T04:59Z")) == date(2026, 11, 23)
    assert local_date(NY, ts("2026-11-24T05:00Z")) == date(2026, 11, 24)
    assert list(local_dates(NY, ts("2026-11-23T12:00Z"), ts("2026-11-25T05:00Z"))) == [
        date(2026, 11, 23),
        date(2026, 11, 24),
    ]
    assert list(local_dates(NY, ts("2026-11-23T12:00Z"), ts("2026-11-23T12:00Z"))) == []


def test_hours_spans_in_utc_within_the_window() -> None:
    hours = parse_hours_of_operation(
        location("h", hours=[hours_entry(["mon", "tue"], "08:00:00", "17:00:00")])
    )
    lo, hi = ts("2026-11-23T00:00Z"), ts("2026-11-25T00:00Z")  # Mon 23 and Tue 24 (UTC)
    assert spans_iso(hours_spans(hours, NY, lo, hi) or []) == [
        ("2026-11-23T13:00Z", "2026-11-23T22:00Z"),
        ("2026-11-24T13:00Z", "2026-11-24T22:00Z"),
    ]
    # clipped to the window
    assert spans_iso(
        hours_spans(hours, NY, ts("2026-11-23T15:00Z"), ts("2026-11-23T16:00Z")) or []
    ) == [("2026-11-23T15:00Z", "2026-11-23T16:00Z")]
    assert hours_spans(None, NY, lo, hi) is None


def test_hours_spans_overnight_and_dst() -> None:
    er = parse_hours_of_operation(
        location("er", hours=[hours_entry(["sat"], "22:00:00", "06:00:00")])
    )
    # Saturday 2026-10-31 22:00 EDT until Sunday 2026-11-01 06:00 EST: 9 real hours
    spans = hours_spans(er, NY, ts("2026-10-31T00:00Z"), ts("2026-11-03T00:00Z")) or []
    assert spans_iso(spans) == [("2026-11-01T02:00Z", "2026-11-01T11:00Z")]
    weekly = WeeklyHours(tuple(((0, DAY_MINUTES),) for _ in DAY_CODES))
    spring = hours_spans(weekly, NY, ts("2026-03-08T05:00Z"), ts("2026-03-09T04:00Z")) or []
    assert spans_iso(spring) == [("2026-03-08T05:00Z", "2026-03-09T04:00Z")]
