"""The availability engine: bookable slots of one Schedule, from plain data.

Bookable = (rule blocks + free Slots) inside operating hours - blocked Slots - rule breaks
- claimed time widened by the buffer, cut per visit-type duration on a local grid, inside
the notice and advance windows. No database, no FastAPI: the caller loads the Schedule, its
Locations, its explicit Slots and the busy intervals; this module only computes. It works
with intervals (integer seconds, UTC), never minute by minute.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fhirserver.scheduling import visit_types as vt
from fhirserver.scheduling.criteria import MAX_YEAR, MIN_YEAR
from fhirserver.scheduling.hours import (
    Span,
    chain_hours,
    chain_timezone,
    day_pieces,
    hours_spans,
    intersect,
    local_dates,
    location_chain,
    merge,
    midnight,
    subtract,
    valid_zone,
    wall_to_utc,
    zone,
)
from fhirserver.scheduling.rules import (
    AvailabilityRule,
    default_location,
    free_slot_location,
    parse_rules,
)

Json = dict[str, Any]
BLOCKING = frozenset({"busy", "busy-unavailable", "busy-tentative"})
_SLOT_ID = re.compile(r"g-(\d{12})-(\d{1,5})-([A-Za-z0-9\-.]{1,64})")


@dataclass(frozen=True)
class Interval:
    """A half-open span of time [start, end), tz-aware UTC."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class Candidate:
    """One bookable (generated) slot."""

    schedule_id: str
    start: datetime  # UTC
    end: datetime  # UTC
    visit_type: str  # visit-type code
    location_id: str | None  # the Location the rule names (or the Schedule's Location actor)
    tz: str  # IANA zone used, to render times with the local offset
    slot_id: str  # generated id (docs/scheduling.md)


@dataclass(frozen=True)
class _Policy:
    """How blocks of one visit type are cut: everything two blocks must share to merge."""

    visit_type: str
    minutes: int
    align: int
    buffer: int
    min_notice: int
    max_advance_days: int | None
    location_id: str | None
    tz: str


@dataclass(frozen=True)
class _Place:
    """A Location as the engine needs it: its zone and its open time in the window."""

    location_id: str | None
    tz: str
    open_spans: list[Span] | None  # None: no hoursOfOperation anywhere in the chain


def _ts(dt: datetime, *, up: bool = False) -> int:
    """Epoch seconds (naive datetimes are read as UTC); `up` rounds up, else down."""
    aware = dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)
    value = aware.timestamp()
    return math.ceil(value) if up else math.floor(value)


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def generated_slot_id(start: datetime, minutes: int, schedule_id: str) -> str:
    """``g-<YYYYMMDDHHMM UTC>-<minutes>-<schedule id>``, e.g. g-202612011400-30-sch-ana."""
    return f"g-{start.astimezone(UTC):%Y%m%d%H%M}-{minutes}-{schedule_id}"


def parse_generated_slot_id(slot_id: str) -> tuple[datetime, int, str] | None:
    """(start UTC, minutes, schedule id) of a generated slot id; None for any other id."""
    m = _SLOT_ID.fullmatch(slot_id)
    if m is None:
        return None
    try:
        start = datetime.strptime(m.group(1), "%Y%m%d%H%M").replace(tzinfo=UTC)
    except ValueError:
        return None
    minutes = int(m.group(2))
    if not MIN_YEAR <= start.year < MAX_YEAR:  # no schedule offers time there
        return None
    return (start, minutes, m.group(3)) if minutes > 0 else None


def render_local(ts: datetime, tz: str) -> str:
    """A FHIR instant with the zone's offset: 2026-11-23T14:00Z in New York ->
    ``2026-11-23T09:00:00-05:00`` (an unknown zone renders in UTC)."""
    info = zone(tz) if valid_zone(tz) else UTC
    return ts.astimezone(info).isoformat(timespec="seconds")


def _place(loc: str | None, locations: Mapping[str, Json], lo: int, hi: int) -> _Place:
    chain = location_chain(loc, locations) if loc else []
    tz = chain_timezone(chain) or "UTC"
    return _Place(loc, tz, hours_spans(chain_hours(chain), tz, lo, hi))


def _bound(value: Any, tz: str, *, end: bool) -> int | None:
    """A planningHorizon bound: an instant as given; a bare date is local midnight in `tz`
    (an end date is inclusive: it bounds at the following midnight)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        if len(value) > 10:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=zone(tz))
            return _ts(parsed)
        day = date.fromisoformat((value + "-01-01")[:10] if len(value) < 10 else value)
    except ValueError:
        return None
    if end:
        day += timedelta(days=1)
    return day_pieces(tz, day)[0][0]


def _rule_spans(
    rule: AvailabilityRule, place: _Place, schedule: Json, lo: int, hi: int
) -> list[Span]:
    """UTC spans of one rule inside [lo, hi), the planning horizon and the operating hours.

    Recurrence is per local calendar date in the rule's zone: a rule Mon-Fri 09:00-17:00
    with a 12:00-12:30 break at a New York clinic gives, on Monday 2026-11-23,
    14:00Z-17:00Z and 17:30Z-22:00Z; on Monday 2026-06-01 (EDT) one hour earlier in UTC.
    """
    horizon = schedule.get("planningHorizon") or {}
    h_lo = _bound(horizon.get("start"), place.tz, end=False)
    h_hi = _bound(horizon.get("end"), place.tz, end=True)
    lo, hi = max(lo, h_lo) if h_lo is not None else lo, min(hi, h_hi) if h_hi is not None else hi
    spans: list[Span] = []
    wall = rule.open_minutes()
    for day in local_dates(place.tz, lo, hi):
        if rule.applies_on(day):
            for a, b in wall:
                spans.extend(wall_to_utc(place.tz, day, a, b))
    out = intersect(merge(spans), [(lo, hi)])
    return out if place.open_spans is None else intersect(out, place.open_spans)


def _policy(
    rule: AvailabilityRule | None,
    code: str,
    place: _Place,
    overrides: Mapping[str, tuple[int, int | None]] | None,
) -> _Policy | None:
    """Length and grid of `code` in `rule`: the rule's own duration entry, else the
    HealthcareService override, else the CodeSystem default; the grid defaults to the
    length (a 60-minute NEW_PATIENT starts on the hour)."""
    own = rule.duration_of(code) if rule else None
    align: int | None
    if own is not None:
        minutes, align = own.minutes, own.align
    elif overrides and code in overrides:
        minutes, align = overrides[code]
    else:
        default = vt.default_minutes(code)
        if default is None:
            return None
        minutes, align = default, None
    align = align or (rule.align if rule else None) or minutes
    return _Policy(
        visit_type=code,
        minutes=minutes,
        align=align,
        buffer=rule.buffer if rule else 0,
        min_notice=rule.min_notice if rule else 0,
        max_advance_days=rule.max_advance_days if rule else None,
        location_id=place.location_id,
        tz=place.tz,
    )


def _slot_span(slot: Json) -> Span | None:
    try:
        start = datetime.fromisoformat(str(slot["start"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(slot["end"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return (_ts(start), _ts(end, up=True))


def _slot_types(slot: Json) -> list[str]:
    """Visit types a free Slot is for (serviceType, appointmentType); [] = no restriction."""
    codes = vt.concept_codes(slot.get("serviceType", []))
    appt_type = slot.get("appointmentType")
    if isinstance(appt_type, dict):
        codes += [c for c in vt.concept_codes([appt_type]) if c not in codes]
    return codes


def _cut(spans: Sequence[Span], p: _Policy, min_start: int, max_start: int | None) -> Iterator[int]:
    """Start instants of the slots of policy `p` inside `spans`.

    A start is an instant whose local wall clock is a multiple of ``align`` minutes from
    local midnight, and the whole visit must fit before the span ends. Example: a span
    09:10-11:00 local, 30-minute visits on a 30-minute grid -> 09:30, 10:00, 10:30. On the
    fall-back day both 01:30 EDT and 01:30 EST are on the grid (two different instants).
    """
    dur, step = p.minutes * 60, p.align * 60
    for s0, e in spans:
        s = max(s0, min_start)
        last = e - dur if max_start is None else min(e - dur, max_start)
        if last < s:
            continue
        for day in local_dates(p.tz, s, last + 1):
            base = midnight(day)
            for ps, pe, off in day_pieces(p.tz, day):
                a, b = max(s, ps), min(last + 1, pe)
                if a >= b:
                    continue
                u = base - off + -(-(a + off - base) // step) * step
                while u < b:
                    yield u
                    u += step


def bookable_slots(
    schedule: Json,
    *,
    window: Interval,
    now: datetime,
    locations: Mapping[str, Json],
    explicit_slots: Sequence[Json],
    busy: Sequence[Interval],
    visit_types: Collection[str] | None = None,
    service_durations: Mapping[str, tuple[int, int | None]] | None = None,
) -> list[Candidate]:
    """Bookable slots of `schedule` lying wholly inside `window`, sorted by start then
    visit type (one candidate per start and visit type).

    - Rules recur per local date in their Location's zone (``timezone`` extension on it or
      its ``partOf`` chain; no rule location: the Schedule's first Location actor; else UTC)
      and are cut by that chain's hoursOfOperation: a rule 09:00-17:00 at a hospital open
      10:00-16:00 only offers 10:00-16:00.
    - Free Slots add blocks, still inside operating hours (a free Saturday 10:00-14:00 at a
      hospital open Saturday 08:00-12:00 offers 10:00-12:00). They sit at the Schedule's
      first Location actor (else the first rule Location) and take buffer, notice and
      advance from the first rule allowing the visit type. Busy Slots (busy,
      busy-unavailable, busy-tentative) and rule breaks are removed; entered-in-error
      Slots are ignored.
    - `busy` (claimed time) is widened by the rule's ``bufferMinutes`` on both sides: with a
      10-minute buffer, a claim 10:00-10:30 blocks 09:50-10:40, so 30-minute slots resume
      at 11:00.
    - A slot starts no sooner than now + minNoticeMinutes and no later than now +
      maxAdvanceDays.
    - DST: local times map to the instants whose wall clock shows them. On spring-forward
      (America/New_York 2026-03-08) 02:00-03:00 does not exist: a rule 01:00-04:00 offers
      01:00, 01:30 EST then 03:00, 03:30 EDT. On fall-back (2026-11-01) 01:00-02:00 happens
      twice and both are offered: 01:00, 01:30 EDT (05:00Z, 05:30Z) and 01:00, 01:30 EST
      (06:00Z, 06:30Z) are four distinct slots of a rule 00:00-03:00.
    """
    lo, hi = _ts(window.start, up=True), _ts(window.end)
    if hi <= lo:
        return []
    schedule_id = str(schedule.get("id", ""))
    rules, _ = parse_rules(schedule)
    wanted = set(visit_types) if visit_types is not None else None
    schedule_types = vt.concept_codes(schedule.get("serviceType", [])) or list(vt.codes())
    actor_loc = default_location(schedule)
    places: dict[str | None, _Place] = {}

    def place_of(loc: str | None) -> _Place:
        if loc not in places:
            places[loc] = _place(loc, locations, lo, hi)
        return places[loc]

    blocks: dict[_Policy, list[Span]] = {}
    first_policy: dict[str, _Policy] = {}
    for rule in rules:
        place = place_of(rule.location_id or actor_loc)
        spans: list[Span] | None = None
        for code in rule.visit_types or schedule_types:
            if wanted is not None and code not in wanted:
                continue
            policy = _policy(rule, code, place, service_durations)
            if policy is None:
                continue
            first_policy.setdefault(code, policy)
            if spans is None:
                spans = _rule_spans(rule, place, schedule, lo, hi)
            blocks.setdefault(policy, []).extend(spans)

    free_place = place_of(free_slot_location(schedule, rules))
    blocked: list[Span] = []
    for slot in explicit_slots:
        span = _slot_span(slot)
        status = slot.get("status")
        if span is None:
            continue
        if status in BLOCKING:
            blocked.append(span)
            continue
        if status != "free":
            continue
        free = intersect([span], [(lo, hi)])
        if free_place.open_spans is not None:
            free = intersect(free, free_place.open_spans)
        if not free:
            continue
        for code in _slot_types(slot) or schedule_types:
            if wanted is not None and code not in wanted:
                continue
            base = first_policy.get(code) or _policy(None, code, free_place, service_durations)
            if base is not None:
                policy = replace(base, location_id=free_place.location_id, tz=free_place.tz)
                blocks.setdefault(policy, []).extend(free)

    return _candidates(schedule_id, blocks, merge(blocked), busy, _ts(now))


def _candidates(
    schedule_id: str,
    blocks: Mapping[_Policy, list[Span]],
    blocked: list[Span],
    busy: Sequence[Interval],
    now: int,
) -> list[Candidate]:
    """Subtract blocked and buffered busy time per policy, cut, sort, keep one per start and
    visit type (the first rule's policy wins)."""
    claimed = [(_ts(b.start), _ts(b.end, up=True)) for b in busy]
    found: list[tuple[int, str, int, _Policy]] = []
    for order, (policy, spans) in enumerate(blocks.items()):
        avail = subtract(merge(spans), blocked)
        if claimed:
            pad = policy.buffer * 60
            avail = subtract(avail, merge([(s - pad, e + pad) for s, e in claimed]))
        max_start = (
            None if policy.max_advance_days is None else now + policy.max_advance_days * 86400
        )
        for start in _cut(avail, policy, now + policy.min_notice * 60, max_start):
            found.append((start, policy.visit_type, order, policy))
    found.sort(key=lambda f: (f[0], f[1], f[2]))
    out: list[Candidate] = []
    last: tuple[int, str] | None = None
    for start, code, _, policy in found:
        if (start, code) == last:
            continue
        last = (start, code)
        begin = _dt(start)
        out.append(
            Candidate(
                schedule_id=schedule_id,
                start=begin,
                end=_dt(start + policy.minutes * 60),
                visit_type=code,
                location_id=policy.location_id,
                tz=policy.tz,
                slot_id=generated_slot_id(begin, policy.minutes, schedule_id),
            )
        )
    return out
