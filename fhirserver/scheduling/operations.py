"""$find, $hold and $book: the scheduling operations over the claims-guarded write path.

Every booking is an ordinary Appointment write through FhirService, so the claims guard
(a write hook inside the same transaction) decides; these functions add what the
operations promise on top: availability checks, holds with expiry, atomic reschedule,
first-available retries, idempotency and alternatives on conflict.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import orjson
from pymongo.asynchronous.client_session import AsyncClientSession

from fhirserver.fhir.bundles import Entry, bundle_bytes
from fhirserver.fhir.errors import BadRequest, Conflict, FhirError, NotFound, Unprocessable
from fhirserver.fhir.operations import first
from fhirserver.fhir.service import FhirService, WriteResult
from fhirserver.fhir.validation import validate_resource
from fhirserver.scheduling.availability import Interval, parse_generated_slot_id
from fhirserver.scheduling.clock import Clock
from fhirserver.scheduling.criteria import FindCriteria, criteria_from, parse_instant, ref_id
from fhirserver.scheduling.finder import Finder, Proposal, proposed_appointment
from fhirserver.scheduling.keyed_locks import KeyedLocks
from fhirserver.storage.idempotency import IdempotencyStore
from fhirserver.storage.resources import format_instant

Json = dict[str, Any]
HOLD_EXPIRES_URL = "http://fhirserver.dev/StructureDefinition/hold-expires"
DEFAULT_HOLD = timedelta(minutes=5)
MAX_HOLD = timedelta(minutes=30)
FIRST_AVAILABLE_TRIES = 10
ALTERNATIVES = 5


class OfferTaken(Conflict):
    """A generated offer's Appointment was booked by someone else since it was offered."""


#: Appointment statuses that hold their time: booking their offer again would replace them.
_LIVE = frozenset({"proposed", "pending", "booked", "arrived", "checked-in", "waitlist"})


@dataclass(frozen=True)
class OperationResult:
    """Bytes to send and the headers that go with them."""

    status: int
    body: bytes
    headers: dict[str, str]


def _patient_of(appt: Json) -> str | None:
    for p in appt.get("participant", []):
        ref = str(p.get("actor", {}).get("reference", ""))
        if ref.startswith("Patient/"):
            return ref.split("/", 1)[1]
    return None


def _hold_expiry(appt: Json) -> datetime | None:
    for ext in appt.get("extension", []):
        if ext.get("url") == HOLD_EXPIRES_URL and "valueInstant" in ext:
            return parse_instant(ext["valueInstant"], "hold-expires")
    return None


def _without_hold(appt: Json) -> Json:
    out = dict(appt)
    exts = [e for e in appt.get("extension", []) if e.get("url") != HOLD_EXPIRES_URL]
    if exts:
        out["extension"] = exts
    else:
        out.pop("extension", None)
    return out


class SchedulingOperations:
    """The operation implementations, shared by the REST handlers."""

    def __init__(
        self,
        service: FhirService,
        finder: Finder,
        idempotency: IdempotencyStore,
        clock: Clock,
        base_url: str,
    ) -> None:
        self.service = service
        self.finder = finder
        self.idempotency = idempotency
        self.clock = clock
        self.base_url = base_url
        # $book of one offer is tried by one request of this process at a time: the others
        # wait, then find it taken with one claims read instead of a transaction each that
        # collides on the index (which stays the guard, across processes too).
        self._offers = KeyedLocks()

    # ---- $find -------------------------------------------------------------

    async def find(self, values: dict[str, list[Any]]) -> bytes:
        """A searchset Bundle of proposed Appointments, earliest first."""
        now = self.clock.now()
        c = criteria_from(values, now)
        proposals = await self.finder.proposals(c, now, c.count * 2)
        # Visit types of equal length at one start share a slot id: one offer for all.
        offers: dict[str, Json] = {}
        for p in proposals:
            appt = offers.get(p.candidate.slot_id)
            if appt is None:
                offers[p.candidate.slot_id] = proposed_appointment(p, c.patient, c.reasons)
            else:
                appt["serviceType"] += proposed_appointment(p, None, [])["serviceType"]
        entries = [
            Entry(
                full_url=f"{self.base_url}/Appointment/{slot_id}",
                raw=orjson.dumps(appt),
                search_mode="match",
            )
            for slot_id, appt in list(offers.items())[: c.count]
        ]
        return bundle_bytes("searchset", entries, total=len(entries))

    # ---- $hold -------------------------------------------------------------

    async def hold(self, values: dict[str, list[Any]]) -> OperationResult:
        """Create a pending Appointment whose claims expire after the hold window."""
        now = self.clock.now()
        minutes = first(values, "hold-minutes")
        window = timedelta(minutes=minutes) if minutes else DEFAULT_HOLD
        if not timedelta(minutes=1) <= window <= MAX_HOLD:
            raise BadRequest(f"hold-minutes must be between 1 and {MAX_HOLD.seconds // 60}")
        appt = await self._proposal_from(values, now)
        expires = now + window
        held = dict(appt)
        held.pop("id", None)
        held["status"] = "pending"
        held["extension"] = [
            *[e for e in appt.get("extension", []) if e.get("url") != HOLD_EXPIRES_URL],
            {"url": HOLD_EXPIRES_URL, "valueInstant": format_instant(expires)},
        ]
        held = validate_resource(held, "Appointment")
        result = await self._write(lambda s: self.service.create_in(held, s), appt)
        body = self._bundle(result)
        return OperationResult(201, body, {"Expires": _http_date(expires)})

    # ---- $book -------------------------------------------------------------

    async def book(
        self, values: dict[str, list[Any]], idem_key: str | None, raw_request: bytes
    ) -> OperationResult:
        """Book a proposed or held appointment (optionally rescheduling another)."""
        fingerprint = hashlib.sha256(raw_request).hexdigest()
        if idem_key:
            done = await self.idempotency.get("book", idem_key, fingerprint)
            if done is not None:
                return OperationResult(done["status"], done["body"], dict(done["headers"]))
        if first(values, "first-available"):
            return await self._book_first_available(values, idem_key, fingerprint)
        now = self.clock.now()
        cancel_id = first(values, "cancelled-appt-id")
        if cancel_id:  # a reschedule of a finished appointment is refused before anything
            await self._check_cancellable(ref_id(cancel_id, "Appointment"))
        appt_id = first(values, "appointment-id")
        held = await self._held(appt_id, values, now) if appt_id else None
        try:
            if held is not None:
                return await self._commit_booking(held, True, values, idem_key, fingerprint)
            async with self._offers.hold(_offer_key(values)):
                appt = await self._proposal_from(values, self.clock.now())
                return await self._commit_booking(appt, False, values, idem_key, fingerprint)
        except OfferTaken:
            # Lost the race for a generated offer: the availability check, run again now
            # that the winner committed, answers 409 with the next available times.
            await self._proposal_from({"appointment-id": [appt_id]}, self.clock.now())
            raise

    async def _commit_booking(
        self,
        appt: Json,
        from_hold: bool,
        values: dict[str, list[Any]],
        idem_key: str | None,
        fingerprint: str,
    ) -> OperationResult:
        booked = _without_hold(appt)
        booked["status"] = "booked"
        for p in booked.get("participant", []):
            p["status"] = "accepted"
        comment = first(values, "comment")
        if comment:
            booked["comment"] = comment
        patients = [ref_id(p, "Patient") for p in values.get("patient", [])]
        if patients and not _patient_of(booked):
            booked["participant"] = [
                *booked.get("participant", []),
                *[
                    {
                        "actor": {"reference": f"Patient/{p}"},
                        "required": "required",
                        "status": "accepted",
                    }
                    for p in patients
                ],
            ]
        if not from_hold:
            booked.pop("id", None)
        booked = validate_resource(booked, "Appointment")
        cancel_id = first(values, "cancelled-appt-id")

        async def run(session: AsyncClientSession) -> OperationResult:
            if cancel_id:
                await self._cancel_in(ref_id(cancel_id, "Appointment"), session)
            if from_hold:
                await self._refuse_taken_offer(booked["id"], session)
                result = await self.service.update_in(booked, booked["id"], session)
            else:
                result = await self.service.create_in(booked, session)
            status = 201 if result.status == 201 else 200
            out = OperationResult(status, self._bundle(result), {})
            if idem_key:
                await self.idempotency.put(
                    "book",
                    idem_key,
                    fingerprint,
                    out.status,
                    out.body,
                    out.headers,
                    self.clock.now(),
                    session,
                )
            return out

        return await self._transaction(run, booked)

    async def _book_first_available(
        self, values: dict[str, list[Any]], idem_key: str | None, fingerprint: str
    ) -> OperationResult:
        now = self.clock.now()
        c = criteria_from(values, now)
        patient = c.patient or next((ref_id(p, "Patient") for p in values.get("patient", [])), None)
        last: FhirError | None = None
        for _ in range(FIRST_AVAILABLE_TRIES):
            proposals = await self.finder.proposals(c, self.clock.now(), 1)
            if not proposals:
                break
            appt = proposed_appointment(proposals[0], patient, c.reasons)
            try:
                return await self._commit_booking(appt, False, values, idem_key, fingerprint)
            except Conflict as exc:
                last = exc  # somebody took it between find and book: take the next one
        if last is not None:
            raise last
        raise Conflict("no available time matches the first-available criteria")

    async def _refuse_taken_offer(self, appt_id: str, session: AsyncClientSession) -> None:
        """A generated offer's Appointment is created on its first booking and reused once
        cancelled; one that is live again belongs to whoever booked it meanwhile (a racer
        that passed the availability check just before). Never overwrite it."""
        if parse_generated_slot_id(appt_id) is None:
            return
        current = await self.service.store.read_doc("Appointment", appt_id, session)
        if current is not None and orjson.loads(current["raw"]).get("status") in _LIVE:
            raise OfferTaken(f"Slot/{appt_id} is no longer available")

    async def _check_cancellable(
        self, appt_id: str, session: AsyncClientSession | None = None
    ) -> tuple[Json, int]:
        """The appointment a reschedule cancels (and its version); 422 when it is over."""
        stored = await self.service.store.read("Appointment", appt_id, session)
        current: Json = orjson.loads(stored.raw or b"{}")
        if current.get("status") in ("cancelled", "noshow", "entered-in-error", "fulfilled"):
            raise Unprocessable(f"Appointment/{appt_id} is {current['status']}; cannot reschedule")
        return current, stored.version

    async def _cancel_in(self, appt_id: str, session: AsyncClientSession) -> None:
        current, version = await self._check_cancellable(appt_id, session)
        current["status"] = "cancelled"
        current.setdefault(
            "cancelationReason",
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason",
                        "code": "pat-crs",
                        "display": "Patient: Canceled via automated reschedule",
                    }
                ]
            },
        )
        await self.service.update_in(
            validate_resource(current, "Appointment"), appt_id, session, if_match=version
        )

    # ---- shared ------------------------------------------------------------

    async def _held(self, appt_id: str, values: dict[str, list[Any]], now: datetime) -> Json:
        if parse_generated_slot_id(appt_id) is not None:
            return await self._proposal_from({"appointment-id": [appt_id]}, now)
        try:
            stored = await self.service.read("Appointment", appt_id)
        except NotFound:
            raise NotFound(f"Appointment/{appt_id} is not a held appointment") from None
        appt: Json = orjson.loads(stored.raw or b"{}")
        expiry = _hold_expiry(appt)
        if appt.get("status") != "pending" or expiry is None:
            raise Unprocessable(f"Appointment/{appt_id} is {appt.get('status')}, not held")
        if expiry <= now:
            raise Conflict(
                f"the hold on Appointment/{appt_id} expired at "
                f"{format_instant(expiry)}; hold or book again"
            )
        holder = _patient_of(appt)
        asked = [ref_id(p, "Patient") for p in values.get("patient", [])]
        if holder and asked and holder not in asked:
            raise Conflict(f"Appointment/{appt_id} is held for another patient")
        return appt

    async def _proposal_from(self, values: dict[str, list[Any]], now: datetime) -> Json:
        """The proposed Appointment named by `appointment` or `appointment-id`, checked
        against current availability (a client cannot book time the schedule never offered)."""
        resource = first(values, "appointment")
        appt_id = first(values, "appointment-id")
        if resource is None and appt_id is None:
            raise BadRequest("give appointment (a proposed Appointment) or appointment-id")
        slot_id = _offer_key(values)
        parsed = parse_generated_slot_id(slot_id) if isinstance(slot_id, str) else None
        if parsed is None:
            raise Unprocessable("the appointment does not name a bookable slot from $find")
        start, minutes, schedule_id = parsed
        visit_types = _visit_types(resource) if resource else []
        c = FindCriteria(
            start=start, end=start + timedelta(minutes=minutes), visit_types=visit_types, count=50
        )
        # Is this a slot the schedule offers? The index answers "yes" fast; "no" (or no
        # index) is checked on the schedule itself, from the database. Either way the claims
        # guard inside the booking transaction is what decides a conflict, never the index.
        def matching(found: list[Proposal]) -> list[Proposal]:
            return [
                p
                for p in found
                if p.candidate.slot_id == slot_id
                or (p.candidate.schedule_id == schedule_id and p.candidate.start == start)
            ]

        proposals = matching(await self.finder.proposals(c, now, 50, only={schedule_id}))
        if not proposals and first(values, "cancelled-appt-id"):
            # A reschedule may move onto time its old appointment still claims: check only
            # that the rules offer the slot; the guard, after the cancel, decides conflicts.
            proposals = matching(
                await self.finder.naive_proposals(c, now, 50, only={schedule_id},
                                                  ignore_claims=True)
            )
        elif not proposals and self.finder.index is not None:
            window = Interval(start, start + timedelta(minutes=minutes))
            if await self.finder.claimed(schedule_id, window):  # just booked by someone
                gone = Conflict(f"Slot/{slot_id} is no longer available")
                raise await self._alternatives_on(gone, schedule_id, start, visit_types)
            proposals = matching(
                await self.finder.proposals(c, now, 50, only={schedule_id}, naive=True)
            )
        if not proposals:
            gone = Conflict(f"Slot/{slot_id} is no longer available")
            raise await self._alternatives_on(gone, schedule_id, start, visit_types)
        patient = _patient_of(resource) if resource else None
        patient = patient or next((ref_id(p, "Patient") for p in values.get("patient", [])), None)
        appt = proposed_appointment(proposals[0], patient, [])
        if resource:
            for key in ("reasonCode", "comment", "description", "appointmentType"):
                if key in resource:
                    appt[key] = resource[key]
        return appt

    async def _transaction(self, fn: Any, appt: Json) -> OperationResult:
        try:
            result: OperationResult = await self.service.mongo.transaction(fn)
            return result
        except Conflict as exc:
            raise await self._with_alternatives(exc, appt) from None

    async def _write(self, fn: Any, appt: Json) -> WriteResult:
        try:
            result: WriteResult = await self.service.mongo.transaction(fn)
            return result
        except Conflict as exc:
            raise await self._with_alternatives(exc, appt) from None

    async def _with_alternatives(self, exc: Conflict, appt: Json) -> Conflict:
        """Attach the next available times on the appointment's schedule to a 409."""
        start_s = appt.get("start")
        slot_id = next(
            (str(s.get("reference", "")).split("/")[-1] for s in appt.get("slot", [])), ""
        )
        parsed = parse_generated_slot_id(slot_id)
        if not start_s or parsed is None:
            return exc
        start = parse_instant(start_s, "start")
        return await self._alternatives_on(exc, parsed[2], start, _visit_types(appt))

    async def _alternatives_on(
        self, exc: Conflict, schedule_id: str, start: datetime, visit_types: list[str]
    ) -> Conflict:
        """A copy of `exc` listing up to five next available times on one schedule."""
        c = FindCriteria(
            start=start, end=start + timedelta(days=14), visit_types=visit_types, count=ALTERNATIVES
        )
        proposals = [
            p
            for p in await self.finder.proposals(
                c, self.clock.now(), ALTERNATIVES, only={schedule_id}
            )
            if p.candidate.schedule_id == schedule_id
        ][:ALTERNATIVES]
        return alternatives_conflict(exc, proposals)

    def _bundle(self, result: WriteResult) -> bytes:
        stored = result.stored
        assert stored is not None and stored.raw is not None
        status = "201 Created" if result.status == 201 else "200 OK"
        entry = Entry(
            full_url=f"{self.base_url}/Appointment/{stored.id}",
            raw=stored.raw,
            response={"status": status, "etag": stored.etag()},
        )
        return bundle_bytes("collection", [entry])


def _offer_key(values: dict[str, list[Any]]) -> str | None:
    """The slot id a $book names (its `appointment`'s slot, or `appointment-id`)."""
    resource = first(values, "appointment")
    if isinstance(resource, dict):
        for s in resource.get("slot", []):
            ref = str(s.get("reference", ""))
            if ref:
                return ref.split("/")[-1]
        rid = resource.get("id")
        return rid if isinstance(rid, str) else None
    appt_id = first(values, "appointment-id")
    return appt_id if isinstance(appt_id, str) else None


def _visit_types(appt: Json | None) -> list[str]:
    if not appt:
        return []
    return [
        c["code"]
        for st in appt.get("serviceType", [])
        for c in st.get("coding", [])
        if c.get("code")
    ]


def alternatives_conflict(exc: Conflict, proposals: list[Proposal]) -> Conflict:
    """A Conflict whose OperationOutcome lists (and contains) the next available times."""
    contained = [proposed_appointment(p, None, []) for p in proposals]
    times = ", ".join(a["start"] for a in contained) or "none in the next 14 days"
    issue = {
        "severity": "information",
        "code": "informational",
        "diagnostics": f"next available: {times}",
        "details": {"text": "alternatives are the contained proposed Appointments"},
    }
    return Conflict(
        exc.diagnostics,
        expression=exc.expression,
        issues=[*exc.extra_issues, issue],
        extra=exc.extra,
        contained=contained,
    )


def _http_date(ts: datetime) -> str:
    return format_datetime(ts.astimezone(UTC), usegmt=True)
