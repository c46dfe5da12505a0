"""Generated Slots: the bookable (and booked/held) time of a Schedule as Slot resources.

Bookable slots are computed from rules, never stored; each has a stable id
(`g-<UTC start>-<minutes>-<schedule id>`), so `GET /Slot/{id}` recomputes it and says
whether it is still free, held (busy-tentative) or booked (busy).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson

from fhirserver.fhir.bundles import Entry, bundle_bytes
from fhirserver.fhir.errors import BadRequest
from fhirserver.fhir.paging import decode_cursor, encode_cursor
from fhirserver.scheduling.availability import (
    Candidate,
    Interval,
    bookable_slots,
    parse_generated_slot_id,
    render_local,
)
from fhirserver.scheduling.criteria import VISIT_TYPE_SYSTEM, code_of, parse_instant, ref_id
from fhirserver.scheduling.finder import BusyLookup, claimed_actors
from fhirserver.scheduling.repository import SchedulingRepository
from fhirserver.scheduling.rules import schedule_locations
from fhirserver.storage.claims import ClaimsRepository

Json = dict[str, Any]
MAX_SLOT_WINDOW = timedelta(days=93)


def slot_resource(cand: Candidate, status: str, visit_types: Sequence[str] = ()) -> Json:
    """A generated Slot resource; `visit_types` lists every visit type offered at this time
    (visit types of equal length share one slot id), default the candidate's own."""
    codes = list(visit_types) or [cand.visit_type]
    return {
        "resourceType": "Slot",
        "id": cand.slot_id,
        "meta": {
            "tag": [{"system": "http://fhirserver.dev/CodeSystem/slot-origin", "code": "generated"}]
        },
        "schedule": {"reference": f"Schedule/{cand.schedule_id}"},
        "status": status,
        "serviceType": [{"coding": [{"system": VISIT_TYPE_SYSTEM, "code": c}]} for c in codes],
        "start": render_local(cand.start, cand.tz),
        "end": render_local(cand.end, cand.tz),
    }


def slots_by_id(cands: Sequence[Candidate], status: str) -> list[Json]:
    """One Slot per generated id: candidates of equal length and start (URGENT_CARE and
    TELEHEALTH at 09:00, both 20 minutes) are the same time, offered for either type."""
    types: dict[str, list[str]] = {}
    first: dict[str, Candidate] = {}
    for cand in cands:
        first.setdefault(cand.slot_id, cand)
        types.setdefault(cand.slot_id, []).append(cand.visit_type)
    return [slot_resource(c, status, types[sid]) for sid, c in first.items()]


class GeneratedSlots:
    """Computes generated Slots for schedules over a window."""

    def __init__(
        self,
        repo: SchedulingRepository,
        claims: ClaimsRepository,
        busy: BusyLookup,
        granule_minutes: int,
    ) -> None:
        self.repo = repo
        self.claims = claims
        self.busy = busy
        self.granule = timedelta(minutes=granule_minutes)

    async def for_schedule(
        self, schedule: Json, window: Interval, now: datetime, *, include_taken: bool
    ) -> list[Json]:
        """Free slots of one schedule in the window; with include_taken also the booked
        (busy) and held (busy-tentative) slots the rules would otherwise offer."""
        roles = await self.repo.by_ids(
            "PractitionerRole",
            {
                str(a.get("reference", "")).split("/")[1]
                for a in schedule.get("actor", [])
                if str(a.get("reference", "")).startswith("PractitionerRole/")
            },
        )
        actors = list(claimed_actors(schedule, roles))
        locations = await self.repo.locations_with_ancestors(schedule_locations(schedule))
        explicit = (await self.repo.explicit_slots([schedule["id"]], window.start, window.end)).get(
            schedule["id"], []
        )
        busy = await self.busy(actors, window)
        free = bookable_slots(
            schedule,
            window=window,
            now=now,
            locations=locations,
            explicit_slots=explicit,
            busy=busy,
        )
        out = slots_by_id(free, "free")
        if include_taken and busy:
            every = bookable_slots(
                schedule,
                window=window,
                now=now,
                locations=locations,
                explicit_slots=explicit,
                busy=[],
            )
            free_ids = {c.slot_id for c in free}
            taken = [c for c in every if c.slot_id not in free_ids]
            kinds = await self._kinds(actors, window, now)
            held = [c for c in taken if _only_holds(c, kinds)]
            out += slots_by_id(held, "busy-tentative")
            out += slots_by_id([c for c in taken if c not in held], "busy")
        out.sort(key=lambda s: (s["start"], s["id"]))
        return out

    async def _kinds(
        self, actors: list[str], window: Interval, now: datetime
    ) -> list[tuple[datetime, str]]:
        claims = await self.claims.on(actors, window.start, window.end)
        return [
            (c["g"], c.get("k", "booking"))
            for c in claims
            if c.get("k") != "hold" or (c.get("exp") and c["exp"] > now)
        ]

    async def read(self, slot_id: str, now: datetime) -> Json | None:
        """Recompute one generated Slot by id; None when its schedule no longer offers it."""
        parsed = parse_generated_slot_id(slot_id)
        if parsed is None:
            return None
        start, minutes, schedule_id = parsed
        schedule = await self.repo.read("Schedule", schedule_id)
        if schedule is None:
            return None
        window = Interval(start, start + timedelta(minutes=minutes))
        for slot in await self.for_schedule(schedule, window, now, include_taken=True):
            if slot["id"] == slot_id:
                return slot
        return None


def _only_holds(cand: Candidate, kinds: list[tuple[datetime, str]]) -> bool:
    inside = [k for g, k in kinds if cand.start <= g < cand.end]
    return bool(inside) and all(k == "hold" for k in inside)


# Parameters the availability view of Slot search understands; anything else makes the
# search a plain search of stored Slots.
VIEW_PARAMS = frozenset(
    {"schedule", "start", "status", "service-type", "_count", "_cursor", "_format", "_pretty"}
)


def is_availability_view(params: list[tuple[str, str]]) -> bool:
    """A Slot search by schedule (and start window/status/service-type only)."""
    names = {k for k, _ in params}
    return "schedule" in names and names <= VIEW_PARAMS


def view_window(params: list[tuple[str, str]], now: datetime) -> Interval:
    """The [start, end) window named by `start` prefixes (default: the next 14 days)."""
    lo, hi = now, None
    for name, value in params:
        if name != "start":
            continue
        prefix, raw = (value[:2], value[2:]) if value[:2].isalpha() else ("eq", value)
        ts = parse_instant(raw, "start")
        if prefix in ("ge", "gt", "sa"):
            lo = max(lo, ts)
        elif prefix in ("lt", "le", "eb"):
            hi = ts if hi is None else min(hi, ts)
        elif prefix == "eq":
            lo, hi = max(lo, ts), ts + timedelta(days=1)
    end = hi if hi is not None else lo + timedelta(days=14)
    return Interval(lo, min(end, lo + MAX_SLOT_WINDOW))


async def availability_view(
    gen: GeneratedSlots, params: list[tuple[str, str]], now: datetime
) -> list[Json]:
    """Generated slots (free, busy, busy-tentative) of the named schedules plus their stored
    blocking Slots (busy-unavailable), filtered by status and service-type, by start."""
    window = view_window(params, now)
    schedule_ids = [
        ref_id(v, "Schedule") for k, vs in params if k == "schedule" for v in vs.split(",")
    ]
    statuses = {v for k, vs in params if k == "status" for v in vs.split(",")}
    services = {code_of(v) for k, vs in params if k == "service-type" for v in vs.split(",")}
    out: list[Json] = []
    schedules = await gen.repo.by_ids("Schedule", schedule_ids)
    stored = await gen.repo.explicit_slots(schedules, window.start, window.end)
    for sid, schedule in schedules.items():
        out.extend(await gen.for_schedule(schedule, window, now, include_taken=True))
        out.extend(s for s in stored.get(sid, []) if s.get("status") != "free")
    if statuses:
        out = [s for s in out if s.get("status") in statuses]
    if services:
        out = [
            s
            for s in out
            if services
            & {c.get("code") for st in s.get("serviceType", []) for c in st.get("coding", [])}
        ]
    out.sort(key=lambda s: (parse_instant(s["start"], "start"), s["id"]))
    return out


def _view_cursor(values: Any) -> tuple[datetime, str]:
    """(start, id) of the last entry of the previous page; 400 for a cursor not ours."""
    if isinstance(values, list) and len(values) == 2 and all(isinstance(v, str) for v in values):
        try:
            start = datetime.fromisoformat(values[0])
        except ValueError:
            start = None
        if start is not None and start.tzinfo is not None:
            return start, values[1]
    raise BadRequest("_cursor is not a cursor of this search")


def view_page(
    slots: list[Json], params: list[tuple[str, str]], base_url: str, default_count: int
) -> bytes:
    """A searchset Bundle page of the availability view (keyset paging on start, id)."""
    raw_count = next((v for k, v in params if k == "_count"), None)
    if raw_count is not None and not (raw_count.isascii() and raw_count.isdigit()):
        raise BadRequest(f"_count must be a non-negative integer, got {raw_count!r}")
    count = int(raw_count) if raw_count is not None else default_count
    cursor = next((v for k, v in params if k == "_cursor"), None)
    keep = [(k, v) for k, v in params if k != "_cursor"]
    keyed = [((parse_instant(s["start"], "start"), s["id"]), s) for s in slots]
    if cursor:
        last = _view_cursor(decode_cursor(cursor).values)
        keyed = [(k, s) for k, s in keyed if k > last]
    page = keyed[:count]
    links = [("self", f"{base_url}/Slot?{urlencode(params)}")]
    if len(keyed) > count and page:
        k = page[-1][0]
        token = encode_cursor([k[0].isoformat(), k[1]], True)
        links.append(("next", f"{base_url}/Slot?{urlencode([*keep, ('_cursor', token)])}"))
    entries = [
        Entry(full_url=f"{base_url}/Slot/{s['id']}", raw=orjson.dumps(s), search_mode="match")
        for _, s in page
    ]
    return bundle_bytes("searchset", entries, total=len(slots), links=links)
