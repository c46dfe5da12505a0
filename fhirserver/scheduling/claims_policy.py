"""Which time an Appointment claims: pure functions over its JSON (docs/scheduling.md).

An Appointment whose status is booked, arrived, checked-in or fulfilled claims `booking`
granules; a `pending` one with a live hold-expires extension claims `hold` granules that
stop blocking at that instant. Claimed actors are its Practitioner, Location and Device
participants (a PractitionerRole claims its practitioner), except declined ones. Granules
are every granule overlapping [start, end), aligned on multiples of the granule from the
Unix epoch (UTC).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fhirserver.fhir.errors import Unprocessable

Json = Mapping[str, Any]
RoleResolver = Callable[[str], str | None]  # "PractitionerRole/x" -> "Practitioner/y" | None

DEFAULT_GRANULE_MINUTES = 5
HOLD_EXPIRES_URL = "http://fhirserver.dev/StructureDefinition/hold-expires"
BOOKING = "booking"
HOLD = "hold"
BOOKING_STATUSES = frozenset({"booked", "arrived", "checked-in", "fulfilled"})
HOLD_STATUS = "pending"
# Statuses that must carry a valid [start, end).
TIMED_STATUSES = BOOKING_STATUSES | {HOLD_STATUS}
CLAIMING_TYPES = frozenset({"Practitioner", "Location", "Device"})
ROLE_TYPE = "PractitionerRole"
# One appointment may claim at most this many (actor, granule) pairs (about 23 days of
# one actor at 5 minutes); longer blocks belong on Schedules as busy Slots.
MAX_CLAIMS = 6_720
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ClaimedActor:
    """A claimed resource and the participant that names it."""

    reference: str  # "Practitioner/123"
    participant: int  # index into Appointment.participant

    @property
    def expression(self) -> str:
        """FHIRPath of the participant's actor, for OperationOutcome.issue.expression."""
        return f"Appointment.participant[{self.participant}].actor"


@dataclass(frozen=True)
class ClaimPlan:
    """The claims an Appointment should own right now."""

    kind: str  # BOOKING | HOLD
    exp: datetime | None  # hold expiry; None for bookings
    start: datetime
    end: datetime
    actors: tuple[ClaimedActor, ...]
    granules: tuple[datetime, ...]

    def keys(self) -> set[tuple[str, datetime]]:
        """Every (resource, granule) this plan claims."""
        return {(a.reference, g) for a in self.actors for g in self.granules}


def granule_delta(minutes: int = DEFAULT_GRANULE_MINUTES) -> timedelta:
    """The granule as a timedelta (positive whole minutes)."""
    if minutes <= 0:
        raise ValueError("the claim granule must be a positive number of minutes")
    return timedelta(minutes=minutes)


def parse_instant(value: object) -> datetime | None:
    """A FHIR instant/dateTime with a zone -> aware UTC datetime; None when not one."""
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    if ts.tzinfo is None:
        return None
    return ts.astimezone(UTC)


def floor_granule(ts: datetime, minutes: int = DEFAULT_GRANULE_MINUTES) -> datetime:
    """The start of the granule containing `ts`."""
    step = granule_delta(minutes)
    return _EPOCH + ((ts.astimezone(UTC) - _EPOCH) // step) * step


def granules(
    start: datetime, end: datetime, minutes: int = DEFAULT_GRANULE_MINUTES
) -> list[datetime]:
    """Start of every granule overlapping [start, end)."""
    step = granule_delta(minutes)
    g = floor_granule(start, minutes)
    out: list[datetime] = []
    while g < end:
        out.append(g)
        g += step
    return out


def normalize_reference(ref: object) -> str | None:
    """`Type/id` from a relative or absolute literal reference (version dropped); None for
    contained (`#x`), empty or unparseable references."""
    if not isinstance(ref, str) or not ref or ref.startswith("#"):
        return None
    path = ref.split("/_history/", 1)[0].rstrip("/")
    parts = path.split("/")
    if len(parts) < 2 or not parts[-2].isalpha() or not parts[-1]:
        return None
    return f"{parts[-2]}/{parts[-1]}"


def is_active(appointment: Json, now: datetime) -> bool:
    """True when the appointment should own claims now (booked-like, or a live hold)."""
    status = appointment.get("status")
    if status in BOOKING_STATUSES:
        return True
    exp = hold_expiry(appointment)
    return status == HOLD_STATUS and exp is not None and exp > now


def hold_expiry(appointment: Json) -> datetime | None:
    """The hold-expires extension's instant, if present (422 when it is not an instant)."""
    for i, ext in enumerate(appointment.get("extension") or []):
        if ext.get("url") == HOLD_EXPIRES_URL:
            exp = parse_instant(ext.get("valueInstant"))
            if exp is None:
                raise Unprocessable(
                    "the hold-expires extension needs a valueInstant with a time zone",
                    expression=[f"Appointment.extension[{i}]"],
                )
            return exp
    return None


def period(appointment: Json) -> tuple[datetime, datetime]:
    """[start, end) of a timed appointment; 422 when missing or end <= start."""
    status = appointment.get("status")
    start, end = parse_instant(appointment.get("start")), parse_instant(appointment.get("end"))
    if start is None or end is None:
        missing = "Appointment.start" if start is None else "Appointment.end"
        raise Unprocessable(
            f"an Appointment with status {status!r} needs both start and end", expression=[missing]
        )
    if end <= start:
        raise Unprocessable(
            f"Appointment.end ({appointment.get('end')}) must be after start "
            f"({appointment.get('start')})",
            expression=["Appointment.end"],
        )
    return start, end


def role_references(appointment: Json) -> list[str]:
    """PractitionerRole references among the non-declined participants (to resolve)."""
    out: list[str] = []
    for p in appointment.get("participant") or []:
        ref = normalize_reference((p.get("actor") or {}).get("reference"))
        if p.get("status") != "declined" and ref and ref.startswith(f"{ROLE_TYPE}/"):
            out.append(ref)
    return list(dict.fromkeys(out))


def claimed_actors(appointment: Json, resolve_role: RoleResolver) -> tuple[ClaimedActor, ...]:
    """The resources the appointment claims, first naming participant kept, in order.

    A PractitionerRole the resolver cannot map to a practitioner is a 422: booking it
    without claiming anyone would let its practitioner be double-booked.
    """
    seen: dict[str, ClaimedActor] = {}
    for i, p in enumerate(appointment.get("participant") or []):
        if p.get("status") == "declined":
            continue
        ref = normalize_reference((p.get("actor") or {}).get("reference"))
        if ref is None:
            continue
        rtype = ref.partition("/")[0]
        if rtype == ROLE_TYPE:
            target = resolve_role(ref)
            if target is None:
                raise Unprocessable(
                    f"{ref} is unknown or names no practitioner; cannot claim its time",
                    expression=[f"Appointment.participant[{i}].actor"],
                )
            ref = normalize_reference(target)
            if ref is None:
                continue
            rtype = ref.partition("/")[0]
        if rtype in CLAIMING_TYPES and ref not in seen:
            seen[ref] = ClaimedActor(ref, i)
    return tuple(seen.values())


def plan_claims(
    appointment: Json,
    now: datetime,
    resolve_role: RoleResolver,
    granule_minutes: int = DEFAULT_GRANULE_MINUTES,
) -> ClaimPlan | None:
    """The claims `appointment` should own at `now`, or None when it owns none.

    Validates what booking depends on: a timed status needs [start, end) (422), a hold
    needs a well-formed expiry, and the claim count is bounded.
    """
    status = appointment.get("status")
    if status not in TIMED_STATUSES:
        return None
    start, end = period(appointment)
    exp = hold_expiry(appointment)
    if status == HOLD_STATUS:
        if exp is None or exp <= now:
            return None  # a pending request without a live hold blocks nothing
        kind = HOLD
    else:
        kind, exp = BOOKING, None
    actors = claimed_actors(appointment, resolve_role)
    gs = tuple(granules(start, end, granule_minutes)) if actors else ()
    if len(actors) * len(gs) > MAX_CLAIMS:
        raise Unprocessable(
            f"the appointment spans {len(gs)} granules on {len(actors)} resources; at most "
            f"{MAX_CLAIMS} claims per appointment",
            expression=["Appointment.end"],
        )
    return ClaimPlan(kind, exp, start, end, actors, gs)


def actor_for(plan: ClaimPlan, resource: str) -> ClaimedActor | None:
    """The claimed actor of `plan` for a resource reference."""
    return next((a for a in plan.actors if a.reference == resource), None)


def span_of(granule_starts: Iterable[datetime], minutes: int) -> tuple[datetime, datetime]:
    """[first, last + granule) of a non-empty set of granule starts."""
    gs = sorted(granule_starts)
    return gs[0], gs[-1] + granule_delta(minutes)
