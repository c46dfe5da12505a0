"""The availability index: an in-memory read model that answers $find without the database.

Two structures, both numpy:

- **offers**: for each UTC day of the coverage, every slot the Schedules' rules offer that
  day (claims ignored), sorted by start: start (seconds from the base), schedule, visit
  type, location. Built by the availability engine itself (expand.py).
- **busy**: for each claimed actor (Practitioner, Location, Device), one byte per claim
  granule of the coverage: 0 free, 1 booked, 2 held (holds also sit in a heap by expiry
  and are freed lazily once "now" passes it).

A query masks one day's offers by the criteria (schedule, visit type, location, window,
notice, advance), checks the survivors' buffered spans against the busy bytes, and walks
day after day until it has `_count` results: earliest first across providers, the
patient's own providers first. It returns exactly what the engine-per-request path
(Finder) returns; tests/scheduling/test_index.py checks that on random data.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from fhirserver.fhir.search import distance_km
from fhirserver.scheduling.availability import (
    Candidate,
    Interval,
    bookable_slots,
    generated_slot_id,
)
from fhirserver.scheduling.claims_policy import plan_claims
from fhirserver.scheduling.criteria import FindCriteria
from fhirserver.scheduling.finder import Proposal
from fhirserver.scheduling.hours import location_chain, ref_id
from fhirserver.scheduling.index.expand import (
    Expansion,
    Policy,
    Tables,
    expand,
    location_ids,
    policies,
    template_key,
)
from fhirserver.scheduling.role_terms import accepted_plans, accepts_new_patients

Json = dict[str, Any]
Bool = npt.NDArray[np.bool_]
DAY = 86400
CHUNK = 4096
NO_ADVANCE = np.int32(2**31 - 1)


def _codes(concepts: Any) -> frozenset[str]:
    out: set[str] = set()
    for cc in concepts if isinstance(concepts, list) else []:
        for coding in cc.get("coding", []) if isinstance(cc, dict) else []:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                out.add(coding["code"])
    return frozenset(out)


def _refs(schedule: Json) -> tuple[str, ...]:
    return tuple(str(a.get("reference", "")) for a in schedule.get("actor", [])
                 if isinstance(a, dict) and a.get("reference"))


@dataclass
class _Role:
    practitioner: str | None  # practitioner id
    specialties: frozenset[str]
    organizations: frozenset[str]
    accepting_new: bool = True
    plans: frozenset[str] = frozenset()


@dataclass
class _Entry:
    """One Schedule as the index sees it."""

    sid: str
    active: bool
    refs: tuple[str, ...]
    service_codes: frozenset[str]
    claimed: tuple[str, ...]
    specialty: Any
    loc_actors: tuple[str, ...]
    pols: dict[str, Policy] | None
    irregular: bool = False
    json: Json | None = None  # kept for irregular schedules (the engine needs it)
    slots: list[Json] = field(default_factory=list)
    offer_locs: frozenset[int] = frozenset()  # location (table index, 0: none) of its offers


@dataclass
class _Day:
    start: npt.NDArray[np.int32]
    sched: npt.NDArray[np.int32]
    visit: npt.NDArray[np.uint8]
    loc: npt.NDArray[np.int16]

    @classmethod
    def empty(cls) -> _Day:
        return cls(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.uint8),
                   np.empty(0, np.int16))

    def nbytes(self) -> int:
        return int(self.start.nbytes + self.sched.nbytes + self.visit.nbytes + self.loc.nbytes)


@dataclass(frozen=True)
class _Masks:
    """What a query's criteria select, before the window and the busy bytes: by Schedule
    row, by visit type and by location (None: no location criterion)."""

    sched_ok: Bool
    visit_ok: Bool
    allowed: set[str] | None
    loc_ok: Bool | None
    sched_loc_ok: Bool | None


# Criteria masks kept between queries: most $find traffic repeats a few criteria.
_MASKS_KEPT = 512


@dataclass(frozen=True)
class IndexStats:
    """Size and shape of the index."""

    schedules: int
    irregular: int
    offers: int
    actors: int
    bytes: int
    coverage_days: int


class AvailabilityIndex:
    """Offers and busy bitmaps for every Schedule over a coverage of whole UTC days."""

    def __init__(self, base: datetime, coverage_days: int, granule_minutes: int) -> None:
        self.granule = granule_minutes * 60
        if granule_minutes <= 0 or DAY % self.granule:
            raise ValueError("the availability index needs a claim granule that divides a day")
        self.base = int(base.astimezone(UTC).timestamp()) // DAY * DAY
        self.days_n = coverage_days
        self.end = self.base + coverage_days * DAY
        self.n = (self.end - self.base) // self.granule
        self.tables = Tables()
        # busy: row 0 is an always-free sentinel used to pad schedules with fewer actors
        self.busy = np.zeros((64, self.n), np.uint8)
        self.actor_row: dict[str, int] = {}
        self.holds: dict[str, tuple[list[int], int, int, float]] = {}
        self.hold_heap: list[tuple[float, str]] = []
        self.entries: list[_Entry] = []
        self.sched_ix: dict[str, int] = {}
        self.days: list[_Day] = [_Day.empty() for _ in range(coverage_days)]
        nv = 32
        self.rows = np.zeros((64, 1), np.int32)
        self.par_buf = np.zeros((64, nv), np.int32)
        self.par_min = np.ones((64, nv), np.int32)
        self.par_notice = np.zeros((64, nv), np.int32)
        self.par_adv = np.full((64, nv), NO_ADVANCE, np.int32)
        self.active = np.zeros(64, np.bool_)
        self.rank = np.zeros(64, np.int64)
        self.roles: dict[str, _Role] = {}
        self.langs: dict[str, frozenset[str]] = {}
        self.locations: dict[str, Json] = {}
        self.children: dict[str, set[str]] = defaultdict(set)
        self.cache: dict[str, Expansion | None] = {}
        self.rule_locs: dict[str, tuple[str, ...]] = {}
        # lookups that keep a query from looping over every Schedule or role
        self.by_prac: dict[str, set[int]] = defaultdict(set)
        self.by_code: dict[str, set[int]] = defaultdict(set)
        self.by_loc_actor: dict[str, set[int]] = defaultdict(set)
        self.irregular: set[int] = set()
        self.roles_by_spec: dict[str, set[str]] = defaultdict(set)
        self.build_seconds = 0.0
        # Criteria masks by criteria; any change of the facts they read clears them.
        self._masks: dict[tuple[Any, ...], _Masks] = {}

    # ---- facts: roles, practitioners, locations -----------------------------

    def set_role(self, role_id: str, role: Json | None) -> None:
        """Record (or forget) a PractitionerRole."""
        self._masks.clear()
        old = self.roles.pop(role_id, None)
        if old is not None:
            for code in old.specialties:
                self.roles_by_spec[code].discard(role_id)
        if role is None:
            return
        prac = ref_id(role.get("practitioner"), "Practitioner")
        orgs = frozenset(o for o in [ref_id(role.get("organization"), "Organization")] if o)
        self.roles[role_id] = _Role(
            prac, _codes(role.get("specialty")), orgs,
            accepts_new_patients(role), frozenset(accepted_plans(role)),
        )
        for code in self.roles[role_id].specialties:
            self.roles_by_spec[code].add(role_id)

    def set_practitioner(self, pid: str, prac: Json | None) -> None:
        """Record (or forget) a Practitioner's languages."""
        self._masks.clear()
        if prac is None:
            self.langs.pop(pid, None)
        else:
            self.langs[pid] = _codes(prac.get("communication"))

    def set_location(self, loc_id: str, loc: Json | None) -> None:
        """Record (or forget) a Location (position, zone, hours, partOf)."""
        self._masks.clear()
        old = self.locations.pop(loc_id, None)
        if old is not None:
            parent = ref_id(old.get("partOf"))
            if parent:
                self.children[parent].discard(loc_id)
        if loc is not None:
            self.locations[loc_id] = loc
            parent = ref_id(loc.get("partOf"))
            if parent:
                self.children[parent].add(loc_id)
        ix = self.tables.loc_ix.get(loc_id)
        if ix is not None:
            self.tables.loc_tz[ix] = 0
        self.cache.clear()

    def schedules_at(self, loc_id: str) -> list[str]:
        """Schedules whose expansion depends on a Location (named or an ancestor)."""
        out: list[str] = []
        for e in self.entries:
            if e.json is None and e.pols is None:
                continue
            for lid in self.rule_locs.get(e.sid, ()):
                if lid == loc_id or any(c.get("id") == loc_id
                                        for c in location_chain(lid, self.locations)):
                    out.append(e.sid)
                    break
        return out

    # ---- schedules ------------------------------------------------------------

    def _grow(self, rows_needed: int) -> None:
        cap = self.active.shape[0]
        if rows_needed <= cap:
            return
        new = max(rows_needed, cap * 2)

        def grow(a: npt.NDArray[Any], fill: Any) -> npt.NDArray[Any]:
            out = np.full((new, *a.shape[1:]), fill, a.dtype)
            out[:cap] = a
            return out

        self.rows = grow(self.rows, 0)
        self.par_buf = grow(self.par_buf, 0)
        self.par_min = grow(self.par_min, 1)
        self.par_notice = grow(self.par_notice, 0)
        self.par_adv = grow(self.par_adv, NO_ADVANCE)
        self.active = grow(self.active, False)
        self.rank = grow(self.rank, 0)

    def _actor(self, ref: str) -> int:
        row = self.actor_row.get(ref)
        if row is None:
            row = len(self.actor_row) + 1
            if row >= self.busy.shape[0]:
                bigger = np.zeros((self.busy.shape[0] * 2, self.n), np.uint8)
                bigger[: self.busy.shape[0]] = self.busy
                self.busy = bigger
            self.actor_row[ref] = row
        return row

    def claimed_actors(self, schedule: Json) -> tuple[str, ...]:
        """What a booking on the Schedule claims (a role claims its practitioner)."""
        out: list[str] = []
        for ref in _refs(schedule):
            rtype, _, rid = ref.partition("/")
            if rtype == "PractitionerRole":
                role = self.roles.get(rid)
                if role is not None and role.practitioner:
                    out.append(f"Practitioner/{role.practitioner}")
            elif rtype in ("Practitioner", "Location", "Device"):
                out.append(ref)
        return tuple(dict.fromkeys(out))

    def set_schedule(self, sid: str, schedule: Json | None, slots: Sequence[Json] = ()) -> None:
        """Add, replace or remove one Schedule (with its explicit Slots) and its offers."""
        ix, exp = self._install(sid, schedule, slots)
        if exp is not None:
            self._add_offers(ix, exp)

    def _install(self, sid: str, schedule: Json | None, slots: Sequence[Json]
                 ) -> tuple[int, Expansion | None]:
        """Record a Schedule's facts (its old offers removed); returns its new offers."""
        self._masks.clear()
        ix = self.sched_ix.get(sid)
        if ix is None:
            if schedule is None:
                return -1, None
            ix = len(self.entries)
            self._grow(ix + 1)
            self.sched_ix[sid] = ix
            self.entries.append(_Entry(sid, False, (), frozenset(), (), None, (), None))
            self._rerank()
        else:
            self._remove_offers(ix)
            self._unlink(ix)
        if schedule is None:
            self.entries[ix] = _Entry(sid, False, (), frozenset(), (), None, (), None)
            self.active[ix] = False
            self.rule_locs.pop(sid, None)
            return ix, None
        self.rule_locs[sid] = tuple(location_ids(schedule))
        claimed = self.claimed_actors(schedule)
        pols = policies(schedule)
        entry = _Entry(
            sid=sid,
            active=schedule.get("active") is not False,
            refs=_refs(schedule),
            service_codes=_codes(schedule.get("serviceType")),
            claimed=claimed,
            specialty=schedule.get("specialty"),
            loc_actors=tuple(r.split("/", 1)[1] for r in _refs(schedule)
                             if r.startswith("Location/")),
            pols=pols,
            slots=list(slots),
        )
        self.entries[ix] = entry
        self.active[ix] = entry.active
        self._link(ix)
        rows = [self._actor(a) for a in claimed]
        if len(rows) > self.rows.shape[1]:
            wider = np.zeros((self.rows.shape[0], len(rows)), np.int32)
            wider[:, : self.rows.shape[1]] = self.rows
            self.rows = wider
        self.rows[ix] = 0
        self.rows[ix, : len(rows)] = rows
        exp = None
        if pols is not None:
            for code, pol in pols.items():
                v = self.tables.visit(code)
                self.par_buf[ix, v] = pol.buffer
                self.par_min[ix, v] = pol.minutes
                self.par_notice[ix, v] = pol.notice
                self.par_adv[ix, v] = NO_ADVANCE if pol.advance is None else pol.advance
            key = template_key(schedule, self.locations, slots, self.base, self.end)
            if key is not None and key in self.cache:
                exp = self.cache[key]
            else:
                exp = expand(schedule, self.locations, slots, self.base, self.end,
                             self.granule, self.tables, pols)
                if key is not None:
                    self.cache[key] = exp
        if exp is None:
            entry.irregular = True
            entry.json = schedule
            self.irregular.add(ix)
        else:
            entry.offer_locs = frozenset(np.unique(exp.loc).tolist())
        return ix, exp

    def _link(self, ix: int) -> None:
        e = self.entries[ix]
        for r in e.refs:
            p = self._ref_practitioner(r)
            if p:
                self.by_prac[p].add(ix)
        for code in e.service_codes:
            self.by_code[code].add(ix)
        for loc in e.loc_actors:
            self.by_loc_actor[loc].add(ix)

    def _unlink(self, ix: int) -> None:
        for table in (self.by_prac, self.by_code, self.by_loc_actor):
            for members in table.values():
                members.discard(ix)
        self.irregular.discard(ix)

    def _rerank(self) -> None:
        order = sorted(range(len(self.entries)), key=lambda i: self.entries[i].sid)
        self.rank[order] = np.arange(len(order))

    def _add_offers(self, ix: int, exp: Expansion) -> None:
        if exp.start.size == 0:
            return
        day_of = exp.start // DAY
        for d in np.unique(day_of):
            if not 0 <= d < self.days_n:
                continue
            sel = day_of == d
            old = self.days[d]
            start = np.concatenate([old.start, exp.start[sel]])
            order = np.argsort(start, kind="stable")
            self.days[d] = _Day(
                start[order],
                np.concatenate([old.sched, np.full(int(sel.sum()), ix, np.int32)])[order],
                np.concatenate([old.visit, exp.visit[sel]])[order],
                np.concatenate([old.loc, exp.loc[sel]])[order],
            )

    def _remove_offers(self, ix: int) -> None:
        for d, day in enumerate(self.days):
            keep = day.sched != ix
            if not keep.all():
                self.days[d] = _Day(day.start[keep], day.sched[keep], day.visit[keep],
                                    day.loc[keep])

    def bulk_load(self, schedules: Iterable[Json], slots: Mapping[str, list[Json]]) -> None:
        """Add many Schedules at once (one sort per day instead of one per Schedule)."""
        parts: list[tuple[int, Expansion]] = []
        for s in schedules:
            ix, exp = self._install(str(s["id"]), s, slots.get(str(s["id"]), []))
            if exp is not None:
                parts.append((ix, exp))
        if not parts:
            return
        start = np.concatenate([e.start for _, e in parts])
        sched = np.concatenate([np.full(e.start.size, ix, np.int32) for ix, e in parts])
        visit = np.concatenate([e.visit for _, e in parts])
        loc = np.concatenate([e.loc for _, e in parts])
        order = np.argsort(start, kind="stable")
        start, sched, visit, loc = start[order], sched[order], visit[order], loc[order]
        bounds = np.searchsorted(start, np.arange(self.days_n + 1) * DAY)
        for d in range(self.days_n):
            a, b = int(bounds[d]), int(bounds[d + 1])
            self.days[d] = _Day(start[a:b].copy(), sched[a:b].copy(), visit[a:b].copy(),
                                loc[a:b].copy())

    # ---- claims ---------------------------------------------------------------

    def _span(self, start: datetime, end: datetime) -> tuple[int, int]:
        g0 = (math.floor(start.timestamp()) - self.base) // self.granule
        g1 = -((self.base - math.ceil(end.timestamp())) // self.granule)
        return max(0, g0), min(self.n, g1)

    def set_claims(self, actors: Iterable[str], start: datetime, end: datetime, value: int,
                   owner: str | None = None, exp: datetime | None = None) -> None:
        """Mark [start, end) of each actor booked (1), held (2, until `exp`) or free (0)."""
        g0, g1 = self._span(start, end)
        if g1 <= g0:
            return
        rows = [self._actor(a) for a in actors]
        for row in rows:
            self.busy[row, g0:g1] = value
        if value == 2 and owner is not None and exp is not None:
            ts = exp.timestamp()
            self.holds[owner] = (rows, g0, g1, ts)
            heapq.heappush(self.hold_heap, (ts, owner))

    def load_claims(self, rows: Iterable[tuple[str, datetime, str, datetime | None]],
                    now: datetime) -> int:
        """Bulk-load claims (resource, granule, kind, exp) as the guard wrote them."""
        by_hold: dict[tuple[str, float], list[tuple[int, int]]] = defaultdict(list)
        n = 0
        g = self.granule
        for r, gs, kind, exp in rows:
            k = (int(gs.timestamp()) - self.base) // g
            if not 0 <= k < self.n:
                continue
            if kind == "hold" and (exp is None or exp <= now):
                continue
            # The row first: _actor may replace self.busy with a bigger array, and in
            # `self.busy[self._actor(r), k] = v` the old array is fetched before the index.
            row = self._actor(r)
            if kind == "hold":
                assert exp is not None
                by_hold[(r, exp.timestamp())].append((row, k))
                self.busy[row, k] = 2
            else:
                self.busy[row, k] = 1
            n += 1
        for (_, ts), cells in by_hold.items():
            for row, k in cells:
                owner = f"claim:{row}:{k}"
                self.holds[owner] = ([row], k, k + 1, ts)
                heapq.heappush(self.hold_heap, (ts, owner))
        return n

    def expire(self, now: datetime) -> None:
        """Free holds whose expiry has passed."""
        ts = now.timestamp()
        heap = self.hold_heap
        while heap and heap[0][0] <= ts:
            exp, owner = heapq.heappop(heap)
            held = self.holds.get(owner)
            if held is None or held[3] != exp:
                continue
            del self.holds[owner]
            rows, g0, g1, _ = held
            for row in rows:
                seg = self.busy[row, g0:g1]
                seg[seg == 2] = 0

    def apply_appointment(self, old: Json | None, new: Json | None, now: datetime) -> None:
        """Move an Appointment's claimed time from its old state to its new one."""
        resolve = self._resolve_role
        for state, value in ((old, 0), (new, None)):
            if state is None:
                continue
            try:
                plan = plan_claims(state, now, resolve, self.granule // 60)
            except Exception:  # a state the guard refused never committed
                plan = None
            if plan is None:
                continue
            actors = [a.reference for a in plan.actors]
            if value == 0:
                self.holds.pop(str(state.get("id")), None)
                self.set_claims(actors, plan.start, plan.end, 0)
            elif plan.kind == "hold":
                self.set_claims(actors, plan.start, plan.end, 2, str(state.get("id")), plan.exp)
            else:
                self.holds.pop(str(state.get("id")), None)
                self.set_claims(actors, plan.start, plan.end, 1)

    def _resolve_role(self, ref: str) -> str | None:
        role = self.roles.get(ref.partition("/")[2])
        return f"Practitioner/{role.practitioner}" if role and role.practitioner else None

    # ---- queries --------------------------------------------------------------

    def covers(self, start: datetime, end: datetime) -> bool:
        """True when [start, end) lies inside the coverage."""
        return self.base <= start.timestamp() and end.timestamp() <= self.end

    def _practitioners(self, c: FindCriteria, established: set[str]) -> set[str] | None:
        allowed: set[str] | None = set(c.practitioners) if c.practitioners else None
        if c.languages:
            want = set(c.languages)
            ids = {p for p, langs in self.langs.items() if langs & want}
            allowed = ids if allowed is None else allowed & ids
        if c.specialties or c.organizations or c.accepting_new_patients or c.coverage:
            specs, orgs = set(c.specialties), set(c.organizations)
            plans = set(c.coverage)
            own = {ref.split("/", 1)[1] for ref in established if ref.startswith("Practitioner/")}
            pool: Iterable[_Role] = (
                [self.roles[r] for code in specs for r in self.roles_by_spec.get(code, ())]
                if specs else self.roles.values())
            ids = {r.practitioner for r in pool
                   if r.practitioner
                   and (not specs or r.specialties & specs)
                   and (not orgs or r.organizations & orgs)
                   and (not c.accepting_new_patients or r.accepting_new
                        or r.practitioner in own)
                   and (not plans or r.plans & plans)}
            allowed = ids if allowed is None else allowed & ids
        return allowed

    def _locations(self, c: FindCriteria) -> set[str] | None:
        allowed: set[str] | None = set(c.locations) if c.locations else None
        if c.near is not None:
            lat, lng, km = c.near
            near = set()
            for lid, loc in self.locations.items():
                pos = loc.get("position")
                if not isinstance(pos, dict):
                    continue
                plat, plng = pos.get("latitude"), pos.get("longitude")
                if isinstance(plat, int | float) and isinstance(plng, int | float) \
                        and distance_km(lat, lng, float(plat), float(plng)) <= km:
                    near.add(lid)
            allowed = near if allowed is None else allowed & near
        if allowed is None:
            return None
        rooms = {ch for a in allowed for ch in self.children.get(a, ())}
        return allowed | rooms

    def _members(self, count: int, ixs: Iterable[int]) -> Bool:
        mask = np.zeros(count, np.bool_)
        sel = np.fromiter(ixs, np.int64)
        if sel.size:
            mask[sel[sel < count]] = True
        return mask

    def _schedule_mask(self, c: FindCriteria, established: set[str]) -> Bool:
        count = len(self.entries)
        ok = self.active[:count].copy()
        if c.visit_types:
            ok &= self._members(count, {i for code in c.visit_types
                                        for i in self.by_code.get(code, ())})
        pracs = self._practitioners(c, established)
        if pracs is not None:
            ok &= self._members(count, {i for p in pracs for i in self.by_prac.get(p, ())})
        return ok

    def _criteria_masks(self, c: FindCriteria, established: set[str]) -> _Masks:
        """The masks `c` selects, from the cache while the facts they read are unchanged.

        They read Schedules, roles, languages and Locations (each change clears the
        cache), never claims; the patient's established providers only matter to
        accepting-new-patients."""
        key = (tuple(c.visit_types), tuple(c.practitioners), tuple(c.languages),
               tuple(c.specialties), tuple(c.organizations), c.accepting_new_patients,
               tuple(c.coverage), tuple(c.locations), c.near,
               frozenset(established) if c.accepting_new_patients else None)
        masks = self._masks.get(key)
        if masks is None:
            if len(self._masks) >= _MASKS_KEPT:
                self._masks.clear()
            masks = self._masks[key] = self._compute_masks(c, established)
        return masks

    def _compute_masks(self, c: FindCriteria, established: set[str]) -> _Masks:
        count = len(self.entries)
        visit_ok = np.ones(len(self.tables.visits) + 1, np.bool_)
        if c.visit_types:
            visit_ok[:] = False
            for code in c.visit_types:
                if code in self.tables.visit_ix:
                    visit_ok[self.tables.visit_ix[code]] = True
        allowed = self._locations(c)
        loc_ok: Bool | None = None
        sched_loc_ok: Bool | None = None
        if allowed is not None:
            loc_ok = np.array([lid is not None and lid in allowed for lid in self.tables.locs],
                              np.bool_)
            sched_loc_ok = self._members(count, {i for a in allowed
                                                 for i in self.by_loc_actor.get(a, ())})
        sched_ok = self._schedule_mask(c, established)
        if loc_ok is not None and sched_loc_ok is not None:
            # Schedules none of whose offers can pass the location test are dropped here,
            # so a scan never looks at their offers (irregular ones are tested apart).
            sched_ok &= np.array(
                [e.irregular or any(loc_ok[x] if x else sched_loc_ok[i] for x in e.offer_locs)
                 for i, e in enumerate(self.entries)], np.bool_)
        return _Masks(sched_ok, visit_ok, allowed, loc_ok, sched_loc_ok)

    def _ref_practitioner(self, ref: str) -> str | None:
        rtype, _, rid = ref.partition("/")
        if rtype == "Practitioner":
            return rid
        if rtype == "PractitionerRole":
            role = self.roles.get(rid)
            return role.practitioner if role else None
        return None

    def proposals(self, c: FindCriteria, now: datetime, limit: int,
                  established: set[str], only: set[str] | None = None
                  ) -> list[Proposal] | None:
        """What Finder.proposals returns, from memory; None when the index cannot answer
        (outside the coverage, or a criterion it does not model). `only` restricts the
        answer to these Schedule ids."""
        if c.location_strings:
            return None
        wlo, whi = max(c.start, now), c.end
        if whi <= wlo:
            return []
        if not self.covers(wlo, whi) or now.timestamp() < self.base:
            return None
        self.expire(now)
        count = len(self.entries)
        masks = self._criteria_masks(c, established)
        sched_ok = masks.sched_ok.copy()
        if only is not None:
            keep = np.zeros(count, np.bool_)
            keep[[self.sched_ix[s] for s in only if s in self.sched_ix]] = True
            sched_ok &= keep
        allowed = masks.allowed
        mine = np.zeros(count, np.bool_)
        if established:
            for i, e in enumerate(self.entries):
                if established & set(e.claimed) or established & set(e.refs):
                    mine[i] = True
        irregular = sorted(i for i in self.irregular if sched_ok[i])
        sched_ok[irregular] = False
        lo = math.ceil(wlo.timestamp()) - self.base
        hi = math.floor(whi.timestamp()) - self.base
        now_s = math.floor(now.timestamp()) - self.base
        q = _Query(self, masks, lo, hi, now_s)
        found: list[tuple[bool, int, int, int, int]] = []
        if mine[sched_ok].any():
            found += [(False, *f) for f in q.scan(sched_ok & mine, limit, early=False)]
        rest = q.scan(sched_ok & ~mine, limit, early=True)
        found += [(True, *f) for f in rest]
        out = [self._proposal(ix, start, visit, loc, mine[ix] if ix < count else False)
               for not_mine, start, ix, visit, loc in found]
        if irregular:
            out += self._irregular(irregular, c, now, wlo, whi, allowed, mine)
        out.sort(key=lambda p: (not p.established, p.candidate.start, p.candidate.schedule_id))
        return out[:limit]

    def _proposal(self, ix: int, start: int, visit: int, loc: int, mine: bool) -> Proposal:
        e = self.entries[ix]
        code = self.tables.visits[visit]
        minutes = int(self.par_min[ix, visit])
        begin = datetime.fromtimestamp(self.base + start, UTC)
        cand = Candidate(
            schedule_id=e.sid,
            start=begin,
            end=begin + timedelta(minutes=minutes),
            visit_type=code,
            location_id=self.tables.locs[loc],
            tz=self.tables.tzs[self.tables.loc_tz[loc]],
            slot_id=generated_slot_id(begin, minutes, e.sid),
        )
        schedule: Json = {"resourceType": "Schedule", "id": e.sid}
        if e.specialty:
            schedule["specialty"] = e.specialty
        return Proposal(cand, schedule, e.claimed, bool(mine))

    def _irregular(self, ixs: list[int], c: FindCriteria, now: datetime, wlo: datetime,
                   whi: datetime, allowed: set[str] | None, mine: Bool) -> list[Proposal]:
        out: list[Proposal] = []
        window = Interval(wlo, whi)
        for ix in ixs:
            e = self.entries[ix]
            assert e.json is not None
            busy = self.busy_intervals(e.claimed, window)
            cands = bookable_slots(e.json, window=window, now=now, locations=self.locations,
                                   explicit_slots=e.slots, busy=busy,
                                   visit_types=c.visit_types or None)
            for cand in cands:
                if allowed is not None:
                    if cand.location_id is not None:
                        if cand.location_id not in allowed:
                            continue
                    elif not any(a in allowed for a in e.loc_actors):
                        continue
                out.append(Proposal(cand, e.json, e.claimed, bool(mine[ix])))
        return out

    def busy_intervals(self, actors: Sequence[str], window: Interval) -> list[Interval]:
        """Claimed time of `actors` around `window` as merged granule intervals."""
        g0, g1 = self._span(window.start - timedelta(seconds=self.granule), window.end)
        any_busy = np.zeros(max(0, g1 - g0), np.bool_)
        for a in actors:
            row = self.actor_row.get(a)
            if row is not None:
                any_busy |= self.busy[row, g0:g1] > 0
        out: list[Interval] = []
        if not any_busy.any():
            return out
        edges = np.flatnonzero(np.diff(np.concatenate([[0], any_busy.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            s = self.base + (g0 + int(a)) * self.granule
            e = self.base + (g0 + int(b)) * self.granule
            out.append(Interval(datetime.fromtimestamp(s, UTC), datetime.fromtimestamp(e, UTC)))
        return out

    def stats(self) -> IndexStats:
        """Counts and memory of the numpy structures (busy rows in use, offers, tables)."""
        offers = sum(d.start.size for d in self.days)
        used_rows = len(self.actor_row) + 1
        nbytes = sum(d.nbytes() for d in self.days) + used_rows * self.n
        nbytes += sum(a.nbytes for a in (self.rows, self.par_buf, self.par_min,
                                         self.par_notice, self.par_adv, self.active, self.rank))
        return IndexStats(len(self.sched_ix), sum(1 for e in self.entries if e.irregular),
                          offers, len(self.actor_row), nbytes, self.days_n)


class _Query:
    """One query's masks over the offers, scanned day by day in start order."""

    def __init__(self, ix: AvailabilityIndex, masks: _Masks, lo: int, hi: int,
                 now: int) -> None:
        self.ix = ix
        self.visit_ok = masks.visit_ok
        self.loc_ok = masks.loc_ok
        self.sched_loc_ok = masks.sched_loc_ok
        self.lo, self.hi, self.now = lo, hi, now

    def scan(self, sched_ok: Bool, limit: int, *, early: bool
             ) -> list[tuple[int, int, int, int]]:
        """(start, schedule, visit, loc) of free offers in start order, at least `limit`
        of them when there are (all ties of the last start included) when `early`."""
        out: list[tuple[npt.NDArray[Any], ...]] = []
        total = 0
        if not sched_ok.any():
            return []
        ix = self.ix
        d0 = max(0, self.lo // DAY)
        d1 = min(ix.days_n, (self.hi - 1) // DAY + 1)
        for d in range(d0, d1):
            day = ix.days[d]
            a = int(np.searchsorted(day.start, self.lo)) if d == d0 else 0
            b = int(np.searchsorted(day.start, self.hi))
            while a < b:
                c = min(b, a + CHUNK)
                got = self._chunk(day, a, c, sched_ok)
                if got[0].size:
                    out.append(got)
                    total += got[0].size
                if early and total >= limit:
                    starts = np.sort(np.concatenate([g[0] for g in out]))
                    kth = starts[limit - 1]
                    if c >= b or day.start[c] > kth:
                        return self._rows(out)
                a = c
        return self._rows(out)

    @staticmethod
    def _rows(parts: list[tuple[npt.NDArray[Any], ...]]) -> list[tuple[int, int, int, int]]:
        if not parts:
            return []
        cols = [np.concatenate([p[i] for p in parts]) for i in range(4)]
        return list(zip(*(c.tolist() for c in cols), strict=True))

    def _chunk(self, day: _Day, a: int, b: int, sched_ok: Bool) -> tuple[npt.NDArray[Any], ...]:
        ix = self.ix
        sc = day.sched[a:b]
        # The Schedule criterion first: it is the most selective, and the only one that
        # looks at every offer of the chunk (the rest look at its survivors).
        sel = np.flatnonzero(sched_ok[sc])
        if sel.size == 0:
            return (sel,)
        s, sc, v, loc = day.start[a:b][sel], sc[sel], day.visit[a:b][sel], day.loc[a:b][sel]
        keep = self.visit_ok[v]
        if self.loc_ok is not None and self.sched_loc_ok is not None:
            keep &= np.where(loc == 0, self.sched_loc_ok[sc], self.loc_ok[loc])
        sel = np.flatnonzero(keep)
        if sel.size == 0:
            return (sel,)
        s, sc, v, loc = s[sel], sc[sel], v[sel], loc[sel]
        minutes = ix.par_min[sc, v]
        ok = (s >= self.lo) & (s + minutes * 60 <= self.hi)
        ok &= s >= self.now + ix.par_notice[sc, v] * 60
        adv = ix.par_adv[sc, v].astype(np.int64)
        ok &= (adv == int(NO_ADVANCE)) | (s <= self.now + adv * DAY)
        sel = np.flatnonzero(ok)
        s, sc, v, loc, minutes = s[sel], sc[sel], v[sel], loc[sel], minutes[sel]
        if s.size == 0:
            return (s,)
        g = ix.granule
        buf = ix.par_buf[sc, v] * 60
        k = s // g
        glo = k - (-(-buf // g))
        ghi = k + (-(-(minutes * 60 + buf) // g))
        width = int((ghi - glo).max())
        cols = glo[:, None] + np.arange(width)[None, :]
        valid = (cols < ghi[:, None]) & (cols >= 0) & (cols < ix.n)
        np.minimum(cols, ix.n - 1, out=cols)  # (np.clip costs several times more)
        np.maximum(cols, 0, out=cols)
        rows = ix.rows[sc]
        hit = np.zeros(s.size, np.bool_)
        for col in range(rows.shape[1]):
            r = rows[:, col]
            if not r.any():
                continue
            hit |= ((ix.busy[r[:, None], cols] > 0) & valid).any(axis=1)
        free = ~hit
        return (s[free], sc[free], v[free], loc[free])
