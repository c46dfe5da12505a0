"""Expansion of one Schedule into its rule-offered starts, by the availability engine itself.

The index never re-implements the availability rules: it asks `bookable_slots` for every
slot the Schedule offers over the index's coverage with no claimed time, and with the
rules' ``minNoticeMinutes``/``maxAdvanceDays`` removed (those depend on "now", so the index
applies them per query). What claims take away is applied per query too, from the busy
bitmaps. That split is exact when every slot of a visit type shares one policy (length,
buffer, notice, advance): then "offered with busy" = "offered without busy, minus the
slots whose buffered span meets claimed time". A Schedule where two rules give one visit
type different policies, or whose slots do not start on the claim granule, is *irregular*:
the index hands it to the engine per query instead (exact, slower).

Expansions are cached by the Schedule's content (without id): thousands of providers
share a few hundred rule templates, so a full build expands each template once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from fhirserver.scheduling import visit_types as vt
from fhirserver.scheduling.availability import Interval, bookable_slots
from fhirserver.scheduling.hours import chain_timezone, location_chain, ref_id
from fhirserver.scheduling.rules import RULE_URL, default_location, parse_rules

Json = dict[str, Any]
I32 = npt.NDArray[np.int32]
I16 = npt.NDArray[np.int16]
_NOW_DEPENDENT = frozenset({"minNoticeMinutes", "maxAdvanceDays"})


@dataclass(frozen=True)
class Policy:
    """What the index needs of one visit type's slots on a Schedule."""

    minutes: int
    buffer: int
    notice: int  # minutes
    advance: int | None  # days


@dataclass(frozen=True)
class Expansion:
    """Rule-offered slots of one Schedule over the coverage (busy ignored), sorted by
    start: start (seconds from the index base), visit type and location (indexes into the
    index's tables; a location's zone is `Tables.loc_tz`, a visit's length the policy's)."""

    start: I32
    visit: npt.NDArray[np.uint8]
    loc: I16


def policies(schedule: Json) -> dict[str, Policy] | None:
    """The policy of each visit type the Schedule offers; None when one visit type gets two
    different policies from different rules (irregular: the engine decides per query)."""
    rules, _ = parse_rules(schedule)
    schedule_types = vt.concept_codes(schedule.get("serviceType", [])) or list(vt.codes())
    out: dict[str, Policy] = {}
    for rule in rules:
        for code in rule.visit_types or schedule_types:
            own = rule.duration_of(code)
            minutes = own.minutes if own is not None else vt.default_minutes(code)
            if minutes is None:
                continue
            pol = Policy(minutes, rule.buffer, rule.min_notice, rule.max_advance_days)
            if out.setdefault(code, pol) != pol:
                return None
    for code in schedule_types:  # free Slots without a rule for the code: the defaults
        minutes = vt.default_minutes(code)
        if code not in out and minutes is not None:
            out[code] = Policy(minutes, 0, 0, None)
    return out


def strip_now_dependent(schedule: Json) -> Json:
    """The Schedule without minNoticeMinutes/maxAdvanceDays in its availability rules."""
    out = dict(schedule)
    exts: list[Any] = []
    for ext in schedule.get("extension", []):
        if isinstance(ext, dict) and ext.get("url") == RULE_URL:
            ext = {**ext, "extension": [s for s in ext.get("extension", [])
                                        if not (isinstance(s, dict)
                                                and s.get("url") in _NOW_DEPENDENT)]}
        exts.append(ext)
    out["extension"] = exts
    return out


def template_key(schedule: Json, locations: Mapping[str, Json], slots: Sequence[Json],
                 lo: int, hi: int) -> str | None:
    """A cache key for everything the expansion depends on but the Schedule's identity;
    None when it has explicit Slots (those are per Schedule: not worth sharing)."""
    if slots:
        return None
    body = {k: v for k, v in schedule.items()
            if k in ("extension", "serviceType", "planningHorizon", "active")}
    locs = sorted({r for r in _schedule_location_ids(schedule)})
    chains = [[orjson.dumps(loc, option=orjson.OPT_SORT_KEYS)
               for loc in location_chain(i, locations)] for i in locs]
    first = default_location(schedule)
    digest = hashlib.sha1(orjson.dumps([body, locs, first, lo, hi], option=orjson.OPT_SORT_KEYS))
    for chain in chains:
        for raw in chain:
            digest.update(raw)
    return digest.hexdigest()


def _schedule_location_ids(schedule: Json) -> set[str]:
    out: set[str] = set()
    for a in schedule.get("actor", []):
        loc = ref_id(a)
        if loc:
            out.add(loc)
    for ext in schedule.get("extension", []):
        for sub in ext.get("extension", []) if isinstance(ext, dict) else []:
            if isinstance(sub, dict) and sub.get("url") == "location":
                loc = ref_id(sub.get("valueReference"))
                if loc:
                    out.add(loc)
    return out


def location_ids(schedule: Json) -> set[str]:
    """Locations a Schedule names (actors and rule locations)."""
    return _schedule_location_ids(schedule)


class Tables:
    """Interned values shared by every expansion: visit types, location ids, zones."""

    def __init__(self) -> None:
        self.visits: list[str] = list(vt.codes())
        self.visit_ix = {c: i for i, c in enumerate(self.visits)}
        self.locs: list[str | None] = [None]
        self.loc_ix: dict[str | None, int] = {None: 0}
        self.tzs: list[str] = ["UTC"]
        self.tz_ix = {"UTC": 0}
        self.loc_tz: list[int] = [0]

    def visit(self, code: str) -> int:
        """Index of a visit-type code."""
        if code not in self.visit_ix:
            self.visit_ix[code] = len(self.visits)
            self.visits.append(code)
        return self.visit_ix[code]

    def loc(self, loc_id: str | None) -> int:
        """Index of a location id (0: none)."""
        if loc_id not in self.loc_ix:
            self.loc_ix[loc_id] = len(self.locs)
            self.locs.append(loc_id)
            self.loc_tz.append(0)
        return self.loc_ix[loc_id]

    def tz(self, name: str) -> int:
        """Index of an IANA zone name."""
        if name not in self.tz_ix:
            self.tz_ix[name] = len(self.tzs)
            self.tzs.append(name)
        return self.tz_ix[name]


def expand(schedule: Json, locations: Mapping[str, Json], slots: Sequence[Json],
           base: int, end: int, granule: int, tables: Tables,
           pols: Mapping[str, Policy]) -> Expansion | None:
    """Every slot the rules and free Slots offer in [base, end) (epoch seconds) with no
    claims, notice or advance applied; None when the index cannot represent them exactly
    (a start off the claim granule, a length other than its visit type's policy, or one
    location in two zones)."""
    window = Interval(datetime.fromtimestamp(base, UTC), datetime.fromtimestamp(end, UTC))
    cands = bookable_slots(strip_now_dependent(schedule), window=window, now=window.start,
                           locations=locations, explicit_slots=slots, busy=[])
    n = len(cands)
    start = np.empty(n, np.int32)
    visit = np.empty(n, np.uint8)
    loc = np.empty(n, np.int16)
    for i, c in enumerate(cands):
        s = int(c.start.timestamp())
        pol = pols.get(c.visit_type)
        if s % granule or pol is None or int((c.end - c.start).total_seconds()) != pol.minutes * 60:
            return None
        li = tables.loc(c.location_id)
        zi = tables.tz(c.tz)
        if tables.loc_tz[li] != zi:
            if tables.loc_tz[li] != 0 and c.location_id is not None:
                return None
            tables.loc_tz[li] = zi
        start[i] = s - base
        visit[i] = tables.visit(c.visit_type)
        loc[i] = li
    return Expansion(start, visit, loc)


def zone_of(location_id: str | None, locations: Mapping[str, Json]) -> str:
    """The IANA zone of a Location chain (UTC when none)."""
    if location_id is None:
        return "UTC"
    return chain_timezone(location_chain(location_id, locations)) or "UTC"
