"""The booking guard: every Appointment write claims or frees time in its own transaction.

`BookingGuard.on_write` is registered with `FhirService.add_write_hook`, so a POST, PUT,
PATCH or DELETE of an Appointment (alone or inside a transaction Bundle) reconciles the
appointment's claims with what its new state should own (scheduling/claims_policy.py)
before the transaction commits. Any overlap on any claimed resource is refused with a 409
(`SlotTaken`); the unique (r, g) index on claims makes that hold under any concurrency.

How a collision behaves (mongod and SecantusDB alike): a duplicate key inside a
transaction aborts the whole transaction, so the guard never catches one and continues.

- **First run: insert.** The claims are inserted without reading first. Free time (the
  common case) costs one statement; the unique (r, g) index decides as always.
- **On a duplicate key: run again, reading first.** The insert hit a claim, live or a dead
  hold. The guard asks `Mongo.transaction` to run the whole write again
  (`RerunTransaction`, remembered in `run_state`), and that run reads the claims on the
  granules it wants (its snapshot), deletes the dead holds among them, refuses on a live
  one with a 409 naming it, and only then inserts.

A racer that commits first makes our insert fail with a WriteConflict
(TransientTransactionError): PyMongo's `with_transaction` retries the write, whose fresh
snapshot then collides on the winner's claims as above. A duplicate key in the reading run
becomes the same 409.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from pymongo.asynchronous.client_session import AsyncClientSession

from fhirserver.fhir.errors import Conflict
from fhirserver.scheduling.claims_policy import (
    DEFAULT_GRANULE_MINUTES,
    ROLE_TYPE,
    ClaimPlan,
    actor_for,
    granule_delta,
    normalize_reference,
    plan_claims,
    role_references,
    span_of,
)
from fhirserver.scheduling.clock import Clock
from fhirserver.storage.claims import (
    BOOKING,
    ClaimsRepository,
    ClaimTaken,
    Doc,
    aware,
    is_live,
)
from fhirserver.storage.mongo import Mongo, RerunTransaction
from fhirserver.storage.resources import ResourceStore, format_instant

Json = Mapping[str, Any]
# Run state key: this transaction reads the claims in its way before inserting its own.
_READ_FIRST = "booking-guard:read-first"


class SlotTaken(Conflict):
    """409: another appointment (or a live hold) already claims part of the requested time.

    The hook point for $book: catch it outside the transaction, read `resource`, `start`
    and `end` (or `extra["conflict"]`) and call `add_alternatives` with the next available
    proposals before re-raising; they render as extra OperationOutcome issues.
    """

    def __init__(
        self,
        appointment_id: str,
        resource: str,
        start: datetime,
        end: datetime,
        *,
        participant: int | None,
        held: bool,
    ) -> None:
        how = "held (pending booking)" if held else "booked"
        diagnostics = (
            f"{resource} is already {how} from {format_instant(start)} to "
            f"{format_instant(end)}; Appointment/{appointment_id} overlaps that time"
        )
        expression = (
            [f"Appointment.participant[{participant}].actor"] if participant is not None else None
        )
        super().__init__(
            diagnostics,
            expression=expression,
            extra={
                "conflict": {
                    "appointment": appointment_id,
                    "resource": resource,
                    "start": start,
                    "end": end,
                    "participant": participant,
                    "held": held,
                }
            },
        )
        self.appointment_id = appointment_id
        self.resource = resource
        self.start = start
        self.end = end
        self.participant = participant

    def add_alternatives(self, alternatives: list[dict[str, Any]], text: str | None = None) -> None:
        """Attach next-available proposals (e.g. proposed Appointments) as an information
        issue; `extra["alternatives"]` keeps them for callers that render them otherwise."""
        self.extra["alternatives"] = alternatives
        issue: dict[str, Any] = {
            "severity": "information",
            "code": "informational",
            "diagnostics": text or f"{len(alternatives)} alternative time(s) are available",
        }
        self.extra_issues.append(issue)


def _ms(ts: datetime | None) -> datetime | None:
    """Truncate to milliseconds, what a BSON date keeps."""
    return None if ts is None else ts.replace(microsecond=ts.microsecond // 1000 * 1000)


class BookingGuard:
    """Keeps the claims collection in step with Appointment writes (a FhirService hook)."""

    def __init__(
        self,
        store: ResourceStore,
        claims: ClaimsRepository,
        clock: Clock,
        mongo: Mongo,
        *,
        granule_minutes: int = DEFAULT_GRANULE_MINUTES,
    ) -> None:
        granule_delta(granule_minutes)  # validates
        self.mongo = mongo
        self.store = store
        self.claims = claims
        self.clock = clock
        self.granule_minutes = granule_minutes

    async def on_write(
        self,
        resource_type: str,
        old: Json | None,
        new: Json | None,
        session: AsyncClientSession,
    ) -> None:
        """FhirService write hook: reconcile an Appointment's claims inside the write's
        transaction; raises SlotTaken (409) or Unprocessable (422) to abort the write."""
        if resource_type != "Appointment":
            return
        if new is None:
            if old is not None:
                await self.claims.delete_for_appointment(str(old["id"]), session)
            return
        # A created Appointment owns no claims yet (a deleted one's went with its deletion).
        await self.reconcile(new, session, owns_none=old is None)

    async def reconcile(
        self, appointment: Json, session: AsyncClientSession, *, owns_none: bool = False
    ) -> ClaimPlan | None:
        """Make the appointment own exactly the claims its current state calls for.

        Frees what it no longer needs, re-tags what it keeps (a hold becoming a booking,
        or a new hold expiry) and claims the rest; returns the plan applied (None: owns
        nothing). `owns_none`: the caller knows it holds no claims (skips reading them).
        """
        now = self.clock.now()
        appt_id = str(appointment["id"])
        roles = await self._resolve_roles(role_references(appointment), session)
        plan = plan_claims(appointment, now, roles.get, self.granule_minutes)
        owned = {} if owns_none else {
            (c["r"], aware(c["g"])): c for c in await self.claims.of_appointment(appt_id, session)
        }
        wanted = plan.keys() if plan is not None else set()
        stale = [c["_id"] for key, c in owned.items() if key not in wanted]
        await self.claims.delete_ids(stale, session)
        if plan is None:
            return None
        exp = _ms(plan.exp)
        retag = [
            c["_id"]
            for key, c in owned.items()
            if key in wanted
            and (c.get("k") != plan.kind or (plan.kind != BOOKING and _exp(c) != exp))
        ]
        await self.claims.set_kind(retag, plan.kind, exp, session)
        missing = wanted - owned.keys()
        if missing:
            await self._claim(appt_id, plan, missing, exp, now, session)
        return plan

    async def _claim(
        self,
        appt_id: str,
        plan: ClaimPlan,
        missing: set[tuple[str, datetime]],
        exp: datetime | None,
        now: datetime,
        session: AsyncClientSession,
    ) -> None:
        step = granule_delta(self.granule_minutes)
        run = self.mongo.run_state(session)
        if run.get(_READ_FIRST):
            resources = sorted({r for r, _ in missing})
            lo = min(g for _, g in missing)
            hi = max(g for _, g in missing) + step
            found = await self.claims.on(resources, lo, hi, session, exclude_appointment=appt_id)
            blockers = [c for c in found if (c["r"], aware(c["g"])) in missing]
            live = [c for c in blockers if is_live(c, now)]
            if live:
                raise self._taken(appt_id, plan, live)
            if blockers:
                dead = [c["_id"] for c in blockers]
                await self.claims.delete_dead_holds(resources, lo, hi, now, session, ids=dead)
        order = {a.reference: i for i, a in enumerate(plan.actors)}
        keys = sorted(missing, key=lambda k: (order.get(k[0], len(order)), k[1]))
        try:
            await self.claims.insert(appt_id, keys, plan.kind, exp, session)
        except ClaimTaken as exc:
            if not run.get(_READ_FIRST):
                # A claim is in the way, live or a dead hold: find out by reading, in a
                # new transaction (this one is aborted).
                run[_READ_FIRST] = True
                raise RerunTransaction from None
            actor = actor_for(plan, exc.resource)
            start = aware(exc.granule) if exc.granule else plan.start
            raise SlotTaken(
                appt_id,
                exc.resource,
                start,
                start + step,
                participant=actor.participant if actor else None,
                held=False,
            ) from None

    def _taken(self, appt_id: str, plan: ClaimPlan, live: list[Doc]) -> SlotTaken:
        """The 409 for the first participant (in Appointment order) whose time is taken."""
        by_resource: dict[str, list[Doc]] = {}
        for c in live:
            by_resource.setdefault(c["r"], []).append(c)
        actor = next(a for a in plan.actors if a.reference in by_resource)
        hits = by_resource[actor.reference]
        start, end = span_of((aware(c["g"]) for c in hits), self.granule_minutes)
        return SlotTaken(
            appt_id,
            actor.reference,
            start,
            end,
            participant=actor.participant,
            held=all(c.get("k") != BOOKING for c in hits),
        )

    async def _resolve_roles(self, refs: list[str], session: AsyncClientSession) -> dict[str, str]:
        """PractitionerRole reference -> its practitioner reference, read in the session."""
        if not refs:
            return {}
        ids = [r.partition("/")[2] for r in refs]
        docs = await self.store.find(
            ROLE_TYPE, {"_id": {"$in": ids}}, projection={"raw": 1}, session=session
        )
        out: dict[str, str] = {}
        for d in docs:
            target = normalize_reference(
                (orjson.loads(d["raw"]).get("practitioner") or {}).get("reference")
            )
            if target is not None and target.startswith("Practitioner/"):
                out[f"{ROLE_TYPE}/{d['_id']}"] = target
        return out


def _exp(claim: Doc) -> datetime | None:
    exp = claim.get("exp")
    return aware(exp) if isinstance(exp, datetime) else None
