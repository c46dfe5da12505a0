"""Which actors and granules an Appointment claims (pure functions, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhirserver.fhir.errors import Unprocessable
from fhirserver.scheduling.claims_policy import (
    BOOKING,
    DEFAULT_GRANULE_MINUTES,
    HOLD,
    HOLD_EXPIRES_URL,
    MAX_CLAIMS,
    claimed_actors,
    floor_granule,
    granules,
    hold_expiry,
    is_active,
    normalize_reference,
    period,
    plan_claims,
    role_references,
    span_of,
)

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
ROLES = {"PractitionerRole/r1": "Practitioner/p1"}


def appt(status: str = "booked", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": "a1",
        "status": status,
        "start": "2026-12-01T09:00:00Z",
        "end": "2026-12-01T09:30:00Z",
        "participant": [
            {"actor": {"reference": "Patient/x"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/p1"}, "status": "accepted"},
        ],
    }
    body.update(extra)
    return body


def t(hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(2026, 12, 1, hh, mm, ss, tzinfo=UTC)


def test_default_granule_is_five_minutes() -> None:
    assert DEFAULT_GRANULE_MINUTES == 5


def test_granules_cover_every_overlapping_granule() -> None:
    assert granules(t(9, 0), t(9, 30)) == [t(9, m) for m in range(0, 30, 5)]
    assert granules(t(9, 3), t(9, 7)) == [t(9, 0), t(9, 5)]
    assert granules(t(9, 0), t(9, 5)) == [t(9, 0)]
    assert granules(t(9, 0), t(9, 0, 1)) == [t(9, 0)]
    assert granules(t(9, 0), t(10, 0), 15) == [t(9, 0), t(9, 15), t(9, 30), t(9, 45)]


def test_granules_are_aligned_from_the_epoch_in_utc() -> None:
    local = datetime.fromisoformat("2026-12-01T04:02:00-05:00")
    assert floor_granule(local) == t(9, 0)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    odd = floor_granule(t(9, 7), 7)
    assert (odd - epoch) % timedelta(minutes=7) == timedelta(0)
    assert odd <= t(9, 7) < odd + timedelta(minutes=7)
    with pytest.raises(ValueError):
        granules(t(9, 0), t(9, 30), 0)


def test_adjacent_appointments_share_no_granule_overlapping_ones_do() -> None:
    assert not set(granules(t(9, 0), t(9, 30))) & set(granules(t(9, 30), t(10, 0)))
    assert set(granules(t(9, 0), t(10, 0))) & set(granules(t(9, 30), t(10, 0)))
    # Off-grid times still collide when they overlap.
    assert set(granules(t(9, 0), t(9, 32))) & set(granules(t(9, 31), t(9, 40)))


def test_normalize_reference() -> None:
    assert normalize_reference("Practitioner/1") == "Practitioner/1"
    assert normalize_reference("http://x/fhir/Location/room-1") == "Location/room-1"
    assert normalize_reference("Device/mri/_history/3") == "Device/mri"
    assert normalize_reference("#contained") is None
    assert normalize_reference("") is None
    assert normalize_reference(None) is None
    assert normalize_reference("justanid") is None


def test_claimed_actors_types_roles_declined_and_duplicates() -> None:
    body = appt(
        participant=[
            {"actor": {"reference": "Patient/x"}, "status": "accepted"},
            {"actor": {"reference": "PractitionerRole/r1"}, "status": "accepted"},
            {"actor": {"reference": "Location/room"}, "status": "accepted"},
            {"actor": {"reference": "Device/mri"}, "status": "tentative"},
            {"actor": {"reference": "Practitioner/p1"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/p2"}, "status": "declined"},
            {"actor": {"reference": "HealthcareService/h"}, "status": "accepted"},
            {"type": [{"text": "no actor"}], "status": "needs-action"},
        ]
    )
    actors = claimed_actors(body, ROLES.get)
    assert [(a.reference, a.participant) for a in actors] == [
        ("Practitioner/p1", 1),
        ("Location/room", 2),
        ("Device/mri", 3),
    ]
    assert actors[0].expression == "Appointment.participant[1].actor"
    assert role_references(body) == ["PractitionerRole/r1"]


def test_unresolvable_role_is_422() -> None:
    body = appt(
        participant=[{"actor": {"reference": "PractitionerRole/nope"}, "status": "accepted"}]
    )
    with pytest.raises(Unprocessable) as err:
        claimed_actors(body, ROLES.get)
    assert err.value.expression == ["Appointment.participant[0].actor"]


@pytest.mark.parametrize("status", ["booked", "arrived", "checked-in", "fulfilled"])
def test_booked_like_statuses_claim_bookings(status: str) -> None:
    plan = plan_claims(appt(status), NOW, ROLES.get)
    assert plan is not None and plan.kind == BOOKING and plan.exp is None
    assert len(plan.keys()) == 6
    assert is_active(appt(status), NOW)


@pytest.mark.parametrize(
    "status", ["proposed", "cancelled", "noshow", "entered-in-error", "waitlist"]
)
def test_other_statuses_claim_nothing(status: str) -> None:
    body = appt(status)
    del body["start"], body["end"]
    assert plan_claims(body, NOW, ROLES.get) is None
    assert not is_active(body, NOW)


def hold(exp: datetime) -> dict[str, Any]:
    return appt(
        "pending",
        extension=[{"url": HOLD_EXPIRES_URL, "valueInstant": exp.isoformat()}],
    )


def test_pending_with_live_hold_claims_holds() -> None:
    exp = NOW + timedelta(minutes=10)
    plan = plan_claims(hold(exp), NOW, ROLES.get)
    assert plan is not None and plan.kind == HOLD and plan.exp == exp
    assert is_active(hold(exp), NOW)


def test_pending_without_live_hold_claims_nothing() -> None:
    assert plan_claims(hold(NOW - timedelta(seconds=1)), NOW, ROLES.get) is None
    assert plan_claims(hold(NOW), NOW, ROLES.get) is None
    assert plan_claims(appt("pending"), NOW, ROLES.get) is None
    assert not is_active(hold(NOW), NOW)


def test_malformed_hold_expiry_is_422() -> None:
    body = appt("pending", extension=[{"url": HOLD_EXPIRES_URL, "valueString": "soon"}])
    with pytest.raises(Unprocessable):
        hold_expiry(body)


@pytest.mark.parametrize("status", ["booked", "pending", "arrived"])
def test_timed_statuses_need_start_and_end(status: str) -> None:
    body = appt(status)
    del body["end"]
    with pytest.raises(Unprocessable) as err:
        plan_claims(body, NOW, ROLES.get)
    assert err.value.expression == ["Appointment.end"]
    with pytest.raises(Unprocessable):
        period(appt(status, end="2026-12-01T09:00:00Z"))
    with pytest.raises(Unprocessable):
        period(appt(status, end="2026-12-01T08:00:00Z"))


def test_offsets_are_respected() -> None:
    plan = plan_claims(
        appt(start="2026-12-01T04:00:00-05:00", end="2026-12-01T10:30:00+01:00"), NOW, ROLES.get
    )
    assert plan is not None and (plan.start, plan.end) == (t(9, 0), t(9, 30))


def test_claim_count_is_bounded() -> None:
    body = appt(end="2027-06-01T09:00:00Z")
    with pytest.raises(Unprocessable):
        plan_claims(body, NOW, ROLES.get)
    assert MAX_CLAIMS >= 12 * 24 * 7  # a week on one resource fits


def test_no_actors_means_no_granules() -> None:
    body = appt(participant=[{"actor": {"reference": "Patient/x"}, "status": "accepted"}])
    plan = plan_claims(body, NOW, ROLES.get)
    assert plan is not None and plan.keys() == set()


def test_span_of() -> None:
    assert span_of([t(9, 5), t(9, 0)], 5) == (t(9, 0), t(9, 10))
