"""The `claims` collection: who holds which time (docs/scheduling.md, "Claims").

One document per (resource, granule): `{_id, r: "Practitioner/1", g: <granule start UTC>,
a: "<Appointment id>", k: "booking" | "hold", exp?: <UTC>}` under a unique index on
(r, g) (migrations/0003_claims.json). The index is the guard against double booking;
this module is all database access to the collection. Writes take the caller's session so
the claims commit with the Appointment that owns them.

`find_overlaps` is the invariant scan the concurrency tests run: it re-derives who should
hold what from the stored Appointments with its own small reading of the contract, on
purpose independent of scheduling/claims_policy (and storage never imports the domain).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from fhirserver.phi.cipher import RecordCipher, is_sealed, record_context

Doc = dict[str, Any]
Span = tuple[datetime, datetime]

CLAIMS = "claims"
BOOKING = "booking"
HOLD = "hold"
DUPLICATE_KEY = 11000


class ClaimTaken(Exception):
    """An insert hit the unique (r, g) index: someone else holds this granule.

    Inside a MongoDB transaction (mongod and SecantusDB alike) the duplicate-key error has
    already aborted the transaction, so the caller must not write again in that session.
    """

    def __init__(self, resource: str, granule: datetime | None) -> None:
        super().__init__(f"{resource} is already claimed at {granule}")
        self.resource = resource
        self.granule = granule


def aware(ts: datetime) -> datetime:
    """A UTC-aware datetime (clients without tz_aware return naive UTC)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def is_live(claim: Doc, now: datetime) -> bool:
    """A booking claim always blocks; a hold only until its `exp`."""
    if claim.get("k") != HOLD:
        return True
    exp = claim.get("exp")
    return exp is not None and aware(exp) > now


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Union of half-open intervals: sorted, touching and overlapping ones joined."""
    out: list[Span] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def granule_spans(granules: Iterable[datetime], granule: timedelta) -> list[Span]:
    """Consecutive granule starts merged into [start, end) intervals."""
    return merge_spans((aware(g), aware(g) + granule) for g in granules)


class ClaimsRepository:
    """All reads and writes of the claims collection."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.coll = db[CLAIMS]

    async def of_appointment(
        self, appointment_id: str, session: AsyncClientSession | None = None
    ) -> list[Doc]:
        """Every claim (live or dead) an appointment owns."""
        cursor = self.coll.find({"a": appointment_id}, session=session)
        return [d async for d in cursor]

    async def on(
        self,
        resources: Sequence[str],
        start: datetime,
        end: datetime,
        session: AsyncClientSession | None = None,
        *,
        exclude_appointment: str | None = None,
    ) -> list[Doc]:
        """Claims (live or dead) on `resources` with granule start in [start, end), by r, g.

        One equality query per resource: SecantusDB scans the whole collection for `r: {$in}`
        (docs/search-index.md), while `r` equality plus a `g` range walks the unique index.
        The query holds exactly those two clauses: a third (`a: {$ne: ...}`) makes SecantusDB
        plan on `r` alone and decode every claim the resource ever had (24 ms a booking on a
        90-day calendar), so `exclude_appointment` is applied here.
        """
        out: list[Doc] = []
        for r in sorted(set(resources)):
            query: Doc = {"r": r, "g": {"$gte": start, "$lt": end}}
            cursor = self.coll.find(query, session=session).sort([("g", ASCENDING)])
            out += [
                d async for d in cursor
                if exclude_appointment is None or d.get("a") != exclude_appointment
            ]
        return out

    async def insert(
        self,
        appointment_id: str,
        keys: Iterable[tuple[str, datetime]],
        kind: str,
        exp: datetime | None,
        session: AsyncClientSession,
    ) -> int:
        """Insert one claim per (resource, granule), ordered; ClaimTaken on a collision."""
        docs: list[Doc] = []
        for r, g in keys:
            doc: Doc = {"r": r, "g": g, "a": appointment_id, "k": kind}
            if exp is not None:
                doc["exp"] = exp
            docs.append(doc)
        if not docs:
            return 0
        try:
            res = await self.coll.insert_many(docs, ordered=True, session=session)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors") or []
            dup = next((e for e in errors if e.get("code") == DUPLICATE_KEY), None)
            if dup is None:
                raise
            key = dup.get("keyValue") or dup.get("op") or {}
            raise ClaimTaken(str(key.get("r", "?")), key.get("g")) from None
        except DuplicateKeyError as exc:
            key = (exc.details or {}).get("keyValue") or {}
            raise ClaimTaken(str(key.get("r", "?")), key.get("g")) from None
        return len(res.inserted_ids)

    async def delete_ids(self, ids: Sequence[Any], session: AsyncClientSession) -> int:
        """Delete claims by `_id`."""
        if not ids:
            return 0
        res = await self.coll.delete_many({"_id": {"$in": list(ids)}}, session=session)
        return res.deleted_count

    async def delete_for_appointment(self, appointment_id: str, session: AsyncClientSession) -> int:
        """Free every claim of an appointment (cancel, no-show, delete, ...)."""
        res = await self.coll.delete_many({"a": appointment_id}, session=session)
        return res.deleted_count

    async def set_kind(
        self, ids: Sequence[Any], kind: str, exp: datetime | None, session: AsyncClientSession
    ) -> int:
        """Turn claims into `kind` (a booking loses `exp`; a hold gets the new `exp`)."""
        if not ids:
            return 0
        update: Doc = {"$set": {"k": kind}}
        if exp is None:
            update["$unset"] = {"exp": ""}
        else:
            update["$set"]["exp"] = exp
        res = await self.coll.update_many({"_id": {"$in": list(ids)}}, update, session=session)
        return res.modified_count

    async def convert_holds(self, appointment_id: str, session: AsyncClientSession) -> int:
        """Turn an appointment's hold claims into booking claims (pending -> booked)."""
        res = await self.coll.update_many(
            {"a": appointment_id, "k": HOLD},
            {"$set": {"k": BOOKING}, "$unset": {"exp": ""}},
            session=session,
        )
        return res.modified_count

    async def delete_dead_holds(
        self,
        resources: Sequence[str],
        start: datetime,
        end: datetime,
        now: datetime,
        session: AsyncClientSession,
        *,
        ids: Sequence[Any] | None = None,
    ) -> int:
        """Delete expired holds on `resources` in [start, end); with `ids`, only those of
        these claims (which the caller found there) that are expired holds, without reading
        the range again.

        Found through `on` (the index walk), then deleted by `_id` with the hold conditions
        repeated, inside the caller's transaction."""
        dead = list(ids) if ids is not None else [
            c["_id"] for c in await self.on(resources, start, end, session)
            if c.get("k") == HOLD and c.get("exp") is not None and aware(c["exp"]) <= now
        ]
        if not dead:
            return 0
        res = await self.coll.delete_many(
            {"_id": {"$in": dead}, "k": HOLD, "exp": {"$lte": now}}, session=session
        )
        return res.deleted_count

    async def busy_by_resource(
        self,
        resources: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        now: datetime,
        granule: timedelta,
        session: AsyncClientSession | None = None,
    ) -> dict[str, list[Span]]:
        """Live claimed intervals per resource overlapping [start, end), granules merged."""
        first = aware(start) - granule + timedelta(milliseconds=1)
        by_r: dict[str, list[datetime]] = defaultdict(list)
        for claim in await self.on(resources, first, end, session):
            if is_live(claim, now):
                by_r[claim["r"]].append(claim["g"])
        return {r: granule_spans(gs, granule) for r, gs in by_r.items()}

    async def busy(
        self,
        resources: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        now: datetime,
        granule: timedelta,
        session: AsyncClientSession | None = None,
    ) -> list[Span]:
        """Union of the live claimed intervals of `resources` overlapping [start, end)."""
        per = await self.busy_by_resource(
            resources, start, end, now=now, granule=granule, session=session
        )
        return merge_spans(span for spans in per.values() for span in spans)


# ---- the invariant scan --------------------------------------------------------------

_BOOKED = frozenset({"booked", "arrived", "checked-in", "fulfilled"})
_CLAIMING_TYPES = frozenset({"Practitioner", "Location", "Device"})
_HOLD_EXPIRES = "http://fhirserver.dev/StructureDefinition/hold-expires"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Problem:
    """One invariant violation found by `find_overlaps`."""

    kind: str  # duplicate-claim | overlap | missing-claim | stray-claim | orphan-claim | wrong-kind
    resource: str
    detail: str
    appointments: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Active:
    id: str
    start: datetime
    end: datetime
    kind: str
    actors: tuple[str, ...]


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return aware(datetime.fromisoformat(value))
    except ValueError:
        return None


def _ref(ref: Any) -> tuple[str, str]:
    """("Type", "id") of a relative or absolute literal reference; ("", "") otherwise."""
    if not isinstance(ref, str) or ref.startswith("#"):
        return "", ""
    parts = ref.split("/_history/", 1)[0].rstrip("/").split("/")
    return (parts[-2], parts[-1]) if len(parts) >= 2 else ("", "")


def _active(appt: Doc, roles: dict[str, str], now: datetime) -> _Active | None:
    status = appt.get("status")
    kind = BOOKING if status in _BOOKED else HOLD if status == "pending" else None
    if kind == HOLD:
        exps = [
            _instant(e.get("valueInstant"))
            for e in appt.get("extension", [])
            if e.get("url") == _HOLD_EXPIRES
        ]
        if not exps or exps[0] is None or exps[0] <= now:
            return None
    start, end = _instant(appt.get("start")), _instant(appt.get("end"))
    if kind is None or start is None or end is None or end <= start:
        return None
    actors: list[str] = []
    for p in appt.get("participant", []):
        rtype, rid = _ref((p.get("actor") or {}).get("reference"))
        if p.get("status") == "declined":
            continue
        if rtype == "PractitionerRole" and rid in roles:
            rtype, rid = _ref(roles[rid])
        if rtype in _CLAIMING_TYPES:
            actors.append(f"{rtype}/{rid}")
    return _Active(str(appt["id"]), start, end, kind, tuple(dict.fromkeys(actors)))


def _granules(start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    g = _EPOCH + ((start - _EPOCH) // step) * step
    out: list[datetime] = []
    while g < end:
        out.append(g)
        g += step
    return out


async def _load_active(
    db: AsyncDatabase[Doc], now: datetime, cipher: RecordCipher | None
) -> list[_Active]:
    appts: list[Doc] = []
    async for d in db["Appointment"].find({}, {"raw": 1, "v": 1}):
        raw = d["raw"]
        if is_sealed(raw):
            if cipher is None:
                raise ValueError("Appointments are sealed (docs/phi.md): pass the cipher")
            raw = cipher.open(record_context("Appointment", d["_id"], int(d["v"])), raw)
        appts.append(orjson.loads(raw))
    refs = (
        _ref((p.get("actor") or {}).get("reference"))
        for a in appts
        for p in a.get("participant", [])
    )
    role_ids = {rid for rtype, rid in refs if rtype == "PractitionerRole"}
    roles: dict[str, str] = {}
    async for d in db["PractitionerRole"].find({"_id": {"$in": sorted(role_ids)}}, {"raw": 1}):
        ref = (orjson.loads(d["raw"]).get("practitioner") or {}).get("reference")
        if ref:
            roles[d["_id"]] = str(ref)
    return [x for x in (_active(a, roles, now) for a in appts) if x is not None]


async def find_overlaps(
    db: AsyncDatabase[Doc],
    *,
    now: datetime | None = None,
    granule_minutes: int = 5,
    cipher: RecordCipher | None = None,
) -> list[Problem]:
    """Scan the whole database for double booking; [] when every invariant holds.

    (a) no two live claims share (r, g); (b) no two active Appointments overlap on a claimed
    actor, computed from their stored JSON alone; (c) every active appointment owns exactly
    its claims, of the right kind, and no live claim belongs to a missing or inactive one.
    Reads everything: a test and operations tool, not a request-path function. `cipher`
    opens sealed Appointments (docs/phi.md; `PhiCodec.from_settings(settings).cipher`).
    """
    now = now or datetime.now(UTC)
    step = timedelta(minutes=granule_minutes)
    problems: list[Problem] = []
    claims = [c async for c in db[CLAIMS].find({})]
    live = [c for c in claims if is_live(c, now)]
    for (r, g), n in Counter((c["r"], aware(c["g"])) for c in live).items():
        if n > 1:
            problems.append(Problem("duplicate-claim", r, f"{n} live claims at {g.isoformat()}"))
    active = await _load_active(db, now, cipher)
    by_actor: dict[str, list[_Active]] = defaultdict(list)
    for appt in active:
        for actor in appt.actors:
            by_actor[actor].append(appt)
    for actor, appts in by_actor.items():
        appts.sort(key=lambda x: (x.start, x.end))
        latest = appts[0]
        for nxt in appts[1:]:
            if nxt.start < latest.end:
                problems.append(
                    Problem(
                        "overlap",
                        actor,
                        f"{latest.start.isoformat()}..{latest.end.isoformat()} overlaps "
                        f"{nxt.start.isoformat()}..{nxt.end.isoformat()}",
                        (latest.id, nxt.id),
                    )
                )
            if nxt.end > latest.end:
                latest = nxt
    owned: dict[str, list[Doc]] = defaultdict(list)
    for c in claims:
        owned[str(c.get("a"))].append(c)
    active_ids = {a.id for a in active}
    for appt in active:
        expected = {(r, g) for r in appt.actors for g in _granules(appt.start, appt.end, step)}
        mine = owned.get(appt.id, [])
        actual = {(c["r"], aware(c["g"])) for c in mine}
        for r, g in sorted(expected - actual):
            problems.append(Problem("missing-claim", r, f"no claim at {g.isoformat()}", (appt.id,)))
        for r, g in sorted(actual - expected):
            problems.append(Problem("stray-claim", r, f"claim at {g.isoformat()}", (appt.id,)))
        for c in mine:
            if c.get("k") != appt.kind:
                problems.append(
                    Problem(
                        "wrong-kind", c["r"], f"{c.get('k')} claim on a {appt.kind}", (appt.id,)
                    )
                )
    for c in live:
        if str(c.get("a")) not in active_ids:
            problems.append(
                Problem(
                    "orphan-claim",
                    c["r"],
                    f"live {c.get('k')} claim at {aware(c['g']).isoformat()}",
                    (str(c.get("a")),),
                )
            )
    return problems
