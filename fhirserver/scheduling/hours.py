"""Operating hours and time zones of Locations, and local wall-clock time -> UTC.

Everything here is pure: Locations come in as JSON dicts (a Location and its ``partOf``
ancestors), instants as integer seconds since the epoch (UTC). No database access.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

TIMEZONE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/timezone"
DAY_CODES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # date.weekday() order
DAY_MINUTES = 1440
_EPOCH_DATE = date(1970, 1, 1)
_SAMPLE = 6 * 3600  # DST transitions are months apart; sampling every 6 h finds them

Span = tuple[int, int]  # [start, end) in seconds since the epoch (UTC) or in minutes of a day
Json = dict[str, Any]


def ref_id(reference: Any, rtype: str = "Location") -> str | None:
    """The id of a literal Reference ``{"reference": "Location/x"}`` to `rtype`, else None."""
    if not isinstance(reference, dict):
        return None
    text = reference.get("reference")
    if not isinstance(text, str):
        return None
    parts = text.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == rtype and parts[-1]:
        return parts[-1]
    return None


def location_chain(location_id: str, locations: Mapping[str, Json]) -> list[Json]:
    """The Location `location_id` then its ``partOf`` ancestors (those present), nearest first."""
    chain: list[Json] = []
    seen: set[str] = set()
    current: str | None = location_id
    while current is not None and current not in seen and current in locations:
        seen.add(current)
        loc = locations[current]
        chain.append(loc)
        current = ref_id(loc.get("partOf"))
    return chain


def valid_zone(name: str) -> bool:
    """True when `name` is an IANA time zone known to zoneinfo."""
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def chain_timezone(chain: Sequence[Json]) -> str | None:
    """The IANA zone of a Location chain: the nearest ``timezone`` extension that names one.

    A room has no zone of its own; it inherits its building's: for the chain
    ``[Exam Room 101, Riverside General (America/New_York)]`` the zone is America/New_York.
    """
    for loc in chain:
        for ext in loc.get("extension", []):
            if isinstance(ext, dict) and ext.get("url") == TIMEZONE_EXTENSION:
                name = ext.get("valueCode")
                if isinstance(name, str) and valid_zone(name):
                    return name
    return None


def parse_time(value: Any) -> int | None:
    """Minutes from midnight of a FHIR ``time`` ("09:30:00"); None when malformed.

    Seconds round up to the next minute, so a closing time of 23:59:59 means the end of
    the day (1440) and an opening at 08:00:30 opens at 08:01.
    """
    if not isinstance(value, str):
        return None
    parts = value.split(":")
    if len(parts) != 3 or len(parts[0]) != 2 or len(parts[1]) != 2:
        return None
    try:
        hh, mm, ss = int(parts[0]), int(parts[1]), float(parts[2])
    except ValueError:
        return None
    if not (0 <= hh <= 23 and 0 <= mm <= 59 and 0 <= ss < 60):
        return None
    minutes = hh * 60 + mm
    return minutes + math.ceil(ss / 60)


def format_minutes(minutes: int) -> str:
    """Minutes from midnight as "HH:MM" (1440 -> "24:00")."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def merge(spans: Sequence[Span]) -> list[Span]:
    """Sorted, non-overlapping, non-empty union of half-open spans."""
    out: list[Span] = []
    for s, e in sorted(spans):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def intersect(a: Sequence[Span], b: Sequence[Span]) -> list[Span]:
    """Intersection of two merged span lists."""
    out: list[Span] = []
    i = j = 0
    while i < len(a) and j < len(b):
        s, e = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if s < e:
            out.append((s, e))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: Sequence[Span], b: Sequence[Span]) -> list[Span]:
    """Parts of merged spans `a` not covered by merged spans `b`."""
    out: list[Span] = []
    j = 0
    for s, e in a:
        while j < len(b) and b[j][1] <= s:
            j += 1
        k, cur = j, s
        while k < len(b) and b[k][0] < e:
            if b[k][0] > cur:
                out.append((cur, b[k][0]))
            cur = max(cur, b[k][1])
            k += 1
        if cur < e:
            out.append((cur, e))
    return out


@dataclass(frozen=True)
class WeeklyHours:
    """Open spans (minutes of the local day) per weekday, Monday first.

    An overnight entry (opening 22:00, closing 06:00) opens 22:00-24:00 on its day and
    00:00-06:00 on the next day.
    """

    days: tuple[tuple[Span, ...], ...]

    def on(self, day: date) -> tuple[Span, ...]:
        """Open spans on the local date `day`."""
        return self.days[day.weekday()]


def parse_hours_of_operation(location: Json) -> WeeklyHours | None:
    """The weekly opening hours of one Location; None when it has no hoursOfOperation.

    Example: ``{"daysOfWeek": ["mon"], "openingTime": "08:00:00", "closingTime":
    "17:00:00"}`` opens Monday 08:00-17:00; ``allDay: true`` opens the whole day; a missing
    opening (closing) time means from midnight (until midnight). Days not listed are closed.
    """
    entries = location.get("hoursOfOperation")
    if not isinstance(entries, list) or not entries:
        return None
    days: list[list[Span]] = [[] for _ in DAY_CODES]
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        if entry.get("allDay") is True:
            opening, closing = 0, DAY_MINUTES
        else:
            opening = parse_time(entry.get("openingTime")) or 0
            closing_t = parse_time(entry.get("closingTime"))
            closing = DAY_MINUTES if closing_t is None else closing_t
        for code in entry.get("daysOfWeek", []):
            if code not in DAY_CODES:
                continue
            d = DAY_CODES.index(code)
            if opening < closing:
                days[d].append((opening, closing))
            elif closing < opening or closing == 0:  # overnight
                days[d].append((opening, DAY_MINUTES))
                days[(d + 1) % 7].append((0, closing))
    return WeeklyHours(tuple(tuple(merge(d)) for d in days))


def chain_hours(chain: Sequence[Json]) -> WeeklyHours | None:
    """Operating hours of a Location chain: the intersection of every level that has hours.

    A room (no hoursOfOperation) inside a hospital open Mon-Fri 07:00-19:00 is open exactly
    then; a Location chain with no hours anywhere is unrestricted (None).
    """
    result: WeeklyHours | None = None
    for loc in chain:
        hours = parse_hours_of_operation(loc)
        if hours is None:
            continue
        if result is None:
            result = hours
        else:
            result = WeeklyHours(
                tuple(tuple(intersect(a, b)) for a, b in zip(result.days, hours.days, strict=True))
            )
    return result


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """The ZoneInfo of an IANA name (cached; raises ZoneInfoNotFoundError when unknown)."""
    return ZoneInfo(name)


def _offset(info: ZoneInfo, ts: int) -> int:
    off = datetime.fromtimestamp(ts, UTC).astimezone(info).utcoffset()
    return int(off.total_seconds()) if off is not None else 0


def midnight(day: date) -> int:
    """Seconds from the epoch to the naive wall-clock midnight of `day` read as UTC."""
    return (day - _EPOCH_DATE).days * 86400


@lru_cache(maxsize=8192)
def day_pieces(tz: str, day: date) -> tuple[tuple[int, int, int], ...]:
    """The instants whose local date in `tz` is `day`, as (start, end, UTC offset) pieces.

    Each piece is a UTC span [start, end) with one constant offset (seconds). A normal day
    is one 24-hour piece; on a DST change day there are two. Example (America/New_York,
    spring-forward Sunday 2026-03-08): 05:00Z-07:00Z at -05:00 then 07:00Z-04:00Z(+1) at
    -04:00, 23 hours in all; on fall-back 2026-11-01 the day is 25 hours.
    """
    info = zone(tz)
    base = midnight(day)
    lo, hi = base - 18 * 3600, base + 86400 + 18 * 3600
    # constant-offset runs of [lo, hi): sample, then bisect each change to the second
    runs: list[tuple[int, int, int]] = []
    start, off = lo, _offset(info, lo)
    t = lo
    while t < hi:
        nxt = min(t + _SAMPLE, hi)
        off_next = _offset(info, nxt)
        if off_next != off:
            a, b = t, nxt  # offset(a) == off, offset(b) != off
            while b - a > 1:
                mid = (a + b) // 2
                if _offset(info, mid) == off:
                    a = mid
                else:
                    b = mid
            runs.append((start, b, off))
            start, off = b, off_next
        t = nxt
    runs.append((start, hi, off))
    pieces: list[tuple[int, int, int]] = []
    for s, e, o in runs:  # keep the instants whose wall clock falls on `day`
        ps, pe = max(s, base - o), min(e, base + 86400 - o)
        if ps < pe:
            pieces.append((ps, pe, o))
    return tuple(pieces)


def wall_to_utc(tz: str, day: date, start_min: int, end_min: int) -> list[Span]:
    """UTC spans of the instants whose local wall clock on `day` reads in [start, end).

    This is how a local block becomes real time, and it makes DST days real days:

    - America/New_York, spring-forward 2026-03-08, block 01:00-04:00: 02:00-03:00 does not
      exist, so the block is 06:00Z-08:00Z (two real hours); a block 02:30-05:00 starts at
      the first existing instant, 03:00 EDT (07:00Z).
    - fall-back 2026-11-01, block 00:00-03:00: 01:00-02:00 happens twice, both times are
      inside, so the block is 04:00Z-08:00Z (four real hours).
    """
    spans: list[Span] = []
    base = midnight(day)
    for ps, pe, off in day_pieces(tz, day):
        s, e = max(ps, base + start_min * 60 - off), min(pe, base + end_min * 60 - off)
        if s < e:
            spans.append((s, e))
    return merge(spans)


def local_date(tz: str, ts: int) -> date:
    """The local calendar date of instant `ts` in `tz`."""
    return datetime.fromtimestamp(ts, UTC).astimezone(zone(tz)).date()


def local_dates(tz: str, lo: int, hi: int) -> Iterator[date]:
    """Every local date in `tz` that has an instant in [lo, hi)."""
    if hi <= lo:
        return
    day, last = local_date(tz, lo), local_date(tz, hi - 1)
    while day <= last:
        yield day
        day += timedelta(days=1)


def hours_spans(hours: WeeklyHours | None, tz: str, lo: int, hi: int) -> list[Span] | None:
    """Open time within [lo, hi) as merged UTC spans (None: no restriction)."""
    if hours is None:
        return None
    spans: list[Span] = []
    for day in local_dates(tz, lo, hi):
        for a, b in hours.on(day):
            spans.extend(wall_to_utc(tz, day, a, b))
    return intersect(merge(spans), [(lo, hi)])
