"""SMART scopes v1/v2: parsing, equivalence, subset checks, narrowing."""

from __future__ import annotations

import pytest

from fhirserver.auth.scopes import ResourceScope, ScopeError, Scopes


def S(text: str) -> Scopes:
    return Scopes.parse(text)


@pytest.mark.parametrize(
    ("text", "context", "rtype", "perms", "constraints"),
    [
        ("patient/Appointment.read", "patient", "Appointment", "rs", ()),
        ("patient/Appointment.rs", "patient", "Appointment", "rs", ()),
        ("user/*.write", "user", "*", "cud", ()),
        ("system/*.*", "system", "*", "cruds", ()),
        ("system/Slot.cruds", "system", "Slot", "cruds", ()),
        (
            "patient/Observation.rs?category=laboratory",
            "patient",
            "Observation",
            "rs",
            (("category", "laboratory"),),
        ),
        (
            "user/Appointment.s?status=booked&actor=Practitioner/1",
            "user",
            "Appointment",
            "s",
            (("actor", "Practitioner/1"), ("status", "booked")),
        ),
        ("patient/Appointment.c", "patient", "Appointment", "c", ()),
    ],
)
def test_parse(
    text: str, context: str, rtype: str, perms: str, constraints: tuple[tuple[str, str], ...]
) -> None:
    scope = ResourceScope.parse(text)
    assert scope.context == context and scope.resource_type == rtype
    assert scope.permissions == frozenset(perms)
    assert scope.constraints == constraints


@pytest.mark.parametrize(
    "text",
    [
        "patient/Appointment.sr",  # v2 letters out of order
        "patient/Appointment.rr",
        "patient/Appointment.x",
        "patient/Appointment.",
        "doctor/Appointment.rs",
        "patient/appointment.rs",
        "patient/Appointment.read?status=booked",  # v1 takes no constraints
        "patient/Appointment.rs?",
        "patient/Appointment.rs?status",
        "something-else",
        "openid2",
    ],
)
def test_invalid(text: str) -> None:
    with pytest.raises(ScopeError):
        Scopes.parse(text)


def test_v1_equals_v2() -> None:
    assert ResourceScope.parse("patient/Appointment.read") == ResourceScope.parse(
        "patient/Appointment.rs"
    )
    assert ResourceScope.parse("user/*.write") == ResourceScope.parse("user/*.cud")
    assert ResourceScope.parse("system/*.*") == ResourceScope.parse("system/*.cruds")
    assert S("patient/Appointment.read").covers(S("patient/Appointment.rs"))
    assert S("patient/Appointment.rs").covers(S("patient/Appointment.read"))
    assert S("user/*.*").covers(S("user/Slot.cruds user/Slot.read user/Slot.write"))


def test_covers_subsets() -> None:
    granted = S("openid fhirUser offline_access patient/Appointment.rs patient/Patient.r")
    assert granted.covers(S("patient/Appointment.r"))
    assert granted.covers(S("patient/Appointment.s openid"))
    assert granted.covers(S(""))
    assert not granted.covers(S("patient/Appointment.cruds"))
    assert not granted.covers(S("patient/Patient.rs"))
    assert not granted.covers(S("patient/Slot.r"))
    assert not granted.covers(S("user/Appointment.r"))  # other context
    assert not granted.covers(S("online_access"))
    assert not granted.covers(S("patient/*.r"))  # a wildcard request exceeds a typed grant


def test_covers_wildcards_and_unions() -> None:
    assert S("patient/*.rs").covers(S("patient/Appointment.rs patient/Slot.r"))
    # permissions may come from two grants
    assert S("user/Appointment.rs user/Appointment.cud").covers(S("user/Appointment.cruds"))
    assert not S("user/Appointment.rs user/Slot.cud").covers(S("user/Appointment.cruds"))


def test_query_constraints() -> None:
    constrained = S("patient/Observation.rs?category=laboratory")
    assert constrained.covers(S("patient/Observation.rs?category=laboratory"))
    assert not constrained.covers(S("patient/Observation.rs"))  # would widen
    assert not constrained.covers(S("patient/Observation.rs?category=vital-signs"))
    assert S("patient/Observation.rs").covers(S("patient/Observation.rs?category=laboratory"))
    assert constrained.allows("patient", "Observation", "s", [("category", "laboratory")])
    assert not constrained.allows("patient", "Observation", "s", [])


def test_allows() -> None:
    granted = S("patient/Appointment.read user/Slot.s system/*.r")
    assert granted.allows("patient", "Appointment", "r")
    assert granted.allows("patient", "Appointment", "s")
    assert not granted.allows("patient", "Appointment", "u")
    assert granted.allows("user", "Slot", "s") and not granted.allows("user", "Slot", "r")
    assert granted.allows("system", "Patient", "r") and not granted.allows("system", "Patient", "s")


def test_narrowed_to() -> None:
    allowed = S("openid launch/patient patient/Appointment.rs patient/Patient.r")
    # fully covered: kept as spelled (v1 too)
    assert str(S("openid patient/Appointment.read").narrowed_to(allowed)) == (
        "openid patient/Appointment.read"
    )
    # partly covered: the overlap, in v2
    assert str(S("patient/*.read").narrowed_to(allowed)) == (
        "patient/Appointment.rs patient/Patient.r"
    )
    assert str(S("patient/Appointment.cruds").narrowed_to(allowed)) == "patient/Appointment.rs"
    # not covered at all: dropped
    assert not S("user/*.rs offline_access").narrowed_to(allowed)


def test_superuser_and_tokens() -> None:
    assert S("system/*.*").is_superuser() and S("system/*.cruds").is_superuser()
    assert not S("system/*.rs").is_superuser()
    assert not S("system/*.cruds?x=1").is_superuser()
    assert not S("user/*.*").is_superuser()
    s = S("openid openid patient/Appointment.rs")
    assert s.tokens == ("openid", "patient/Appointment.rs")
    assert "openid" in s and str(s) == "openid patient/Appointment.rs"
    assert s.contexts == {"patient"}
    assert ResourceScope.parse("patient/Appointment.read").text() == "patient/Appointment.rs"
