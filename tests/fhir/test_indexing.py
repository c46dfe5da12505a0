"""Unit tests for fhirserver.fhir.indexing (docs/search-index.md) and searchparams."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhirserver.fhir.indexing import (
    MAX_DT,
    MIN_DT,
    extract_index,
    format_sort_instant,
    format_sort_number,
    normalize,
    parse_date,
)
from fhirserver.fhir.searchparams import SEARCH_PARAMS, get_param, index_fields
from fhirserver.fhir.types import RESOURCE_TYPES


def dt(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


# --------------------------------------------------------------------------- searchparams


def test_every_type_has_params_and_get_param() -> None:
    assert set(SEARCH_PARAMS) == set(RESOURCE_TYPES)
    sp = get_param("Appointment", "practitioner")
    assert sp is not None
    assert sp.type == "reference"
    assert sp.paths == ("Appointment.participant.actor",)
    assert sp.targets == ("Practitioner",)
    assert get_param("Appointment", "nope") is None
    assert get_param("Nope", "status") is None


@pytest.mark.parametrize(
    ("rtype", "names"),
    [
        (
            "Slot",
            "schedule start end status service-type specialty appointment-type identifier "
            "service-category",
        ),
        (
            "Appointment",
            "patient practitioner actor location date end status slot service-type specialty "
            "appointment-type identifier part-status reason-code based-on supporting-info "
            "service-category reason-reference",
        ),
        ("Schedule", "actor date active service-type specialty identifier service-category"),
        (
            "Practitioner",
            "identifier name family given phonetic telecom phone email address address-city "
            "address-state address-postalcode address-country address-use gender active "
            "communication",
        ),
        (
            "PractitionerRole",
            "practitioner organization location specialty role service active identifier date "
            "telecom email phone endpoint",
        ),
        (
            "Patient",
            "identifier name family given birthdate gender telecom phone email address "
            "address-city address-state address-postalcode address-country address-use active "
            "general-practitioner organization link language",
        ),
        (
            "Location",
            "identifier name address address-city address-state address-postalcode "
            "address-country address-use status type operational-status organization partof near",
        ),
        (
            "HealthcareService",
            "identifier name active location organization service-type specialty "
            "service-category characteristic program coverage-area endpoint",
        ),
        (
            "Device",
            "identifier type status location organization patient model manufacturer "
            "device-name udi-carrier",
        ),
        (
            "Organization",
            "identifier name active type address address-city address-state address-postalcode "
            "address-country address-use partof",
        ),
        (
            "AppointmentResponse",
            "appointment actor patient practitioner location part-status identifier",
        ),
    ],
)
def test_required_params_present(rtype: str, names: str) -> None:
    missing = [n for n in names.split() if get_param(rtype, n) is None]
    assert missing == []


def test_index_fields() -> None:
    fields = index_fields("Appointment")
    assert "idx.status.c" in fields
    assert {"idx.date.lo", "idx.date.hi", "idx.date.dl", "idx.date.dh"} <= set(fields)
    assert "idx.patient" in fields
    assert "idx.near.lat" in index_fields("Location")


# --------------------------------------------------------------------------- normalize


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("José", "jose"),
        ("  MÜLLER   Straße ", "muller strasse"),
        ("Ærø", "ærø"),  # no decomposition: stays, casefolded
        ("ﬁle", "file"),  # NFKD compatibility ligature
        ("İstanbul", "istanbul"),
        ("a\tb\nc", "a b c"),
    ],
)
def test_normalize(raw: str, norm: str) -> None:
    assert normalize(raw) == norm


@given(st.text(max_size=30))
def test_normalize_idempotent(s: str) -> None:
    n = normalize(s)
    assert normalize(n) == n
    assert n == n.strip()
    assert "  " not in n


# --------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("value", "lo", "hi", "dl", "dh", "has_time"),
    [
        ("2026", dt(2026, 1, 1), dt(2027, 1, 1), "2026-01-01", "2026-12-31", False),
        ("2026-02", dt(2026, 2, 1), dt(2026, 3, 1), "2026-02-01", "2026-02-28", False),
        ("2026-12", dt(2026, 12, 1), dt(2027, 1, 1), "2026-12-01", "2026-12-31", False),
        ("2026-11-23", dt(2026, 11, 23), dt(2026, 11, 24), "2026-11-23", "2026-11-23", False),
        (
            "2026-11-23T10:00",
            dt(2026, 11, 23, 10),
            dt(2026, 11, 23, 10, 1),
            "2026-11-23",
            "2026-11-23",
            True,
        ),
        (
            "2026-11-23T10:00:00Z",
            dt(2026, 11, 23, 10),
            dt(2026, 11, 23, 10, 0, 1),
            "2026-11-23",
            "2026-11-23",
            True,
        ),
        (
            "2026-11-23T10:00:00.5+01:00",
            dt(2026, 11, 23, 9, 0, 0, 500000),
            dt(2026, 11, 23, 9, 0, 0, 600000),
            "2026-11-23",
            "2026-11-23",
            True,
        ),
        (
            "2026-11-23T23:30:00-05:00",
            dt(2026, 11, 24, 4, 30),
            dt(2026, 11, 24, 4, 30, 1),
            "2026-11-23",
            "2026-11-23",
            True,
        ),
        (
            "2026-11-23T10:00:00.1234567Z",
            dt(2026, 11, 23, 10, 0, 0, 123456),
            dt(2026, 11, 23, 10, 0, 0, 123457),
            "2026-11-23",
            "2026-11-23",
            True,
        ),
        ("9999", dt(9999, 1, 1), MAX_DT, "9999-01-01", "9999-12-31", False),
    ],
)
def test_parse_date(
    value: str, lo: datetime, hi: datetime, dl: str, dh: str, has_time: bool
) -> None:
    dv = parse_date(value)
    assert dv is not None
    assert (dv.lo, dv.hi, dv.day_lo, dv.day_hi, dv.has_time) == (lo, hi, dl, dh, has_time)


@pytest.mark.parametrize(
    "value",
    ["", "26", "2026-13", "2026-02-30", "2026-11-23T25:00", "2026-11-23T10", "x2026",
     "2026-11-23T10:00:00+15:00", "2026/11/23"],
)  # fmt: skip
def test_parse_date_rejects(value: str) -> None:
    assert parse_date(value) is None


def test_parse_date_space_for_plus() -> None:
    dv = parse_date("2026-11-23T10:00:00 02:00")
    assert dv is not None and dv.lo == dt(2026, 11, 23, 8)


@given(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    st.integers(min_value=-12 * 60, max_value=14 * 60).map(lambda m: m - m % 15),
    st.sampled_from(["Y", "M", "D", "m", "s", "f"]),
)
def test_parse_date_properties(naive: datetime, offset_min: int, precision: str) -> None:
    tz = timezone(timedelta(minutes=offset_min))
    local = naive.replace(tzinfo=tz)
    iso_tz = local.isoformat()[-6:]
    text = {
        "Y": f"{naive.year:04d}",
        "M": f"{naive.year:04d}-{naive.month:02d}",
        "D": naive.date().isoformat(),
        "m": naive.strftime("%Y-%m-%dT%H:%M") + iso_tz,
        "s": naive.strftime("%Y-%m-%dT%H:%M:%S") + iso_tz,
        "f": naive.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + iso_tz,
    }[precision]
    dv = parse_date(text)
    assert dv is not None
    assert dv.lo < dv.hi
    assert dv.day_lo <= dv.day_hi
    if precision in "msf":
        assert dv.has_time
        # the value itself lies in [lo, hi) and its local date is dl
        exact = local.replace(microsecond=local.microsecond // 1000 * 1000)
        if precision == "m":
            exact = exact.replace(second=0, microsecond=0)
        elif precision == "s":
            exact = exact.replace(microsecond=0)
        assert dv.lo == exact
        assert dv.day_lo == naive.date().isoformat() == dv.day_hi
    else:
        assert not dv.has_time
        assert dv.lo.tzinfo is not None and dv.lo.utcoffset() == timedelta(0)
        assert dv.day_lo <= naive.date().isoformat() <= dv.day_hi


# --------------------------------------------------------------------------- sort keys


def test_sort_key_formats() -> None:
    assert format_sort_instant(dt(2026, 1, 2, 3, 4, 5, 6000)) == "2026-01-02T03:04:05.006000Z"
    assert format_sort_instant(MIN_DT) == "0001-01-01T00:00:00.000000Z"
    nums = [-1e6, -2.5, -1, 0, 0.5, 1, 2, 10, 1e6]
    keys = [format_sort_number(float(n)) for n in nums]
    assert keys == sorted(keys)


# --------------------------------------------------------------------------- extract_index

APPOINTMENT: dict[str, Any] = {
    "resourceType": "Appointment",
    "id": "a1",
    "status": "booked",
    "start": "2026-11-23T23:30:00-05:00",
    "end": "2026-11-24T00:00:00-05:00",
    "serviceType": [
        {"coding": [{"system": "http://sct", "code": "57", "display": "Vacunación"}], "text": "Jab"}
    ],
    "identifier": [{"system": "urn:sys", "value": "A-1", "type": {"text": "Booking no"}}],
    "slot": [{"reference": "Slot/s1"}],
    "participant": [
        {"actor": {"reference": "Patient/p1"}, "status": "accepted"},
        {"actor": {"reference": "Practitioner/d1/_history/2"}, "status": "accepted"},
        {"actor": {"reference": "http://other.org/fhir/Location/l1"}, "status": "tentative"},
        {"actor": {"reference": "#contained"}, "status": "accepted"},
        {"actor": {"display": "no reference"}, "status": "needs-action"},
        {"actor": {"reference": "urn:uuid:1234", "type": "Device"}, "status": "accepted"},
    ],
}


def test_extract_appointment() -> None:
    idx, srt = extract_index(APPOINTMENT)
    assert idx["status"] == [{"s": "http://hl7.org/fhir/appointmentstatus", "c": "booked"}]
    assert idx["patient"] == ["Patient/p1"]
    assert idx["practitioner"] == ["Practitioner/d1"]
    assert idx["location"] == ["http://other.org/fhir/Location/l1"]
    assert idx["actor"] == [
        "Patient/p1",
        "Practitioner/d1",
        "http://other.org/fhir/Location/l1",
        "urn:uuid:1234",
    ]
    assert idx["slot"] == ["Slot/s1"]
    assert [v["c"] for v in idx["part-status"]] == ["accepted", "tentative", "needs-action"]
    assert idx["service-type"] == [
        {"s": "http://sct", "c": "57", "t": "vacunacion"},
        {"s": None, "c": None, "t": "jab"},
    ]
    assert idx["identifier"] == [{"s": "urn:sys", "c": "A-1", "t": "booking no"}]
    # Appointment.date: lo = start, hi = end (exclusive), days in the value's own offset
    assert idx["date"] == [
        {
            "lo": dt(2026, 11, 24, 4, 30),
            "hi": dt(2026, 11, 24, 5),
            "dl": "2026-11-23",
            "dh": "2026-11-23",
        }
    ]
    assert idx["end"][0]["lo"] == dt(2026, 11, 24, 5)
    assert idx["end"][0]["dl"] == "2026-11-24"
    assert "reason-code" not in idx
    assert srt["date"] == "2026-11-24T04:30:00.000000Z"
    assert srt["status"] == "booked"
    assert srt["service-type"] == "57"
    assert srt["reason-code"] == ""
    assert all(isinstance(v, str) for v in srt.values())


def test_extract_appointment_without_end_or_dates() -> None:
    idx, _ = extract_index({"resourceType": "Appointment", "start": "2026-11-23T10:00:00Z"})
    assert idx["date"][0]["lo"] == dt(2026, 11, 23, 10)
    assert idx["date"][0]["hi"] == dt(2026, 11, 23, 10, 0, 1)
    idx, srt = extract_index({"resourceType": "Appointment", "status": "proposed"})
    assert "date" not in idx and srt["date"] == ""


def test_extract_period_open_end_and_date_only_end() -> None:
    idx, srt = extract_index(
        {"resourceType": "Schedule", "planningHorizon": {"start": "2026-11-01T08:00:00+02:00"}}
    )
    assert idx["date"] == [
        {"lo": dt(2026, 11, 1, 6), "hi": MAX_DT, "dl": "2026-11-01", "dh": "9999-12-31"}
    ]
    idx, _ = extract_index(
        {"resourceType": "Schedule", "planningHorizon": {"start": "2026-11", "end": "2026-12-15"}}
    )
    assert idx["date"] == [
        {"lo": dt(2026, 11, 1), "hi": dt(2026, 12, 16), "dl": "2026-11-01", "dh": "2026-12-15"}
    ]
    idx, srt = extract_index({"resourceType": "Schedule", "planningHorizon": {"end": "2026"}})
    assert idx["date"] == [
        {"lo": MIN_DT, "hi": dt(2027, 1, 1), "dl": "0001-01-01", "dh": "2026-12-31"}
    ]
    assert srt["date"] == "0001-01-01T00:00:00.000000Z"


def test_extract_sub_millisecond_rounding() -> None:
    idx, _ = extract_index({"resourceType": "Slot", "start": "2026-11-23T10:00:00.12345Z"})
    v = idx["start"][0]
    assert v["lo"] == dt(2026, 11, 23, 10, 0, 0, 123000)
    assert v["hi"] == dt(2026, 11, 23, 10, 0, 0, 124000)


def test_extract_practitioner_strings_and_telecom() -> None:
    idx, srt = extract_index(
        {
            "resourceType": "Practitioner",
            "active": False,
            "gender": "female",
            "name": [
                {"family": "Núñez", "given": ["María", "José"], "prefix": ["Dr."], "text": "x"}
            ],
            "telecom": [
                {"system": "phone", "value": "+1 555", "use": "work"},
                {"system": "email", "value": "m@x.org"},
            ],
            "address": [{"line": ["1 Rue"], "city": "Genève", "postalCode": "1200", "use": "work"}],
            "communication": [{"coding": [{"system": "urn:ietf:bcp:47", "code": "es"}]}],
        }
    )
    assert [v["n"] for v in idx["name"]] == ["nunez", "maria", "jose", "dr.", "x"]
    assert idx["family"] == [{"n": "nunez", "e": "Núñez"}]
    assert [v["e"] for v in idx["given"]] == ["María", "José"]
    assert idx["telecom"] == [{"s": "work", "c": "+1 555"}, {"s": None, "c": "m@x.org"}]
    assert idx["phone"] == [{"s": "work", "c": "+1 555"}]
    assert idx["email"] == [{"s": None, "c": "m@x.org"}]
    assert idx["address-city"] == [{"n": "geneve", "e": "Genève"}]
    assert [v["n"] for v in idx["address"]] == ["1 rue", "geneve", "1200"]
    assert idx["address-use"][0]["c"] == "work"
    assert idx["active"] == [{"s": None, "c": "false"}]
    assert idx["gender"][0]["c"] == "female"
    assert idx["communication"] == [{"s": "urn:ietf:bcp:47", "c": "es"}]
    assert srt["name"] == "nunez" and srt["family"] == "nunez"


def test_extract_location_near_and_coding() -> None:
    idx, srt = extract_index(
        {
            "resourceType": "Location",
            "name": "Main",
            "alias": ["Principal"],
            "position": {"latitude": 46.2, "longitude": 6.15},
            "operationalStatus": {"system": "http://x", "code": "O", "display": "Occupied"},
            "partOf": {"reference": "Location/root"},
        }
    )
    assert idx["near"] == [{"lat": 46.2, "lng": 6.15}]
    assert "near" not in srt
    assert idx["operational-status"] == [{"s": "http://x", "c": "O", "t": "occupied"}]
    assert [v["n"] for v in idx["name"]] == ["main", "principal"]
    assert idx["partof"] == ["Location/root"]


def test_extract_device_and_uri() -> None:
    idx, _ = extract_index(
        {
            "resourceType": "Device",
            "url": "http://dev/1",
            "deviceName": [{"name": "Scanner X", "type": "user-friendly-name"}],
            "type": {"coding": [{"code": "123", "display": "MRI scanner"}], "text": "MRI"},
            "udiCarrier": [{"carrierHRF": "(01)123"}],
            "owner": {"reference": "Organization/o1"},
        }
    )
    assert idx["url"] == ["http://dev/1"]
    assert [v["n"] for v in idx["device-name"]] == ["scanner x", "mri scanner", "mri"]
    assert idx["udi-carrier"] == [{"n": "(01)123", "e": "(01)123"}]
    assert idx["organization"] == ["Organization/o1"]
    assert idx["type"][0] == {"s": None, "c": "123", "t": "mri scanner"}


def test_extract_dedupes_and_skips_empty() -> None:
    idx, _ = extract_index(
        {
            "resourceType": "Patient",
            "name": [{"family": "Doe", "given": ["Jo"]}, {"family": "Doe", "given": ["  "]}],
            "identifier": [{"system": "s", "value": "1"}, {"system": "s", "value": "1"}, {}],
            "link": [{"other": {"reference": "RelatedPerson/r1"}, "type": "seealso"}],
            "generalPractitioner": [{"reference": "Patient/wrong-type"}],
        }
    )
    assert idx["family"] == [{"n": "doe", "e": "Doe"}]
    assert idx["identifier"] == [{"s": "s", "c": "1"}]
    assert idx["link"] == ["RelatedPerson/r1"]
    assert "general-practitioner" not in idx
    assert all(v for v in idx.values())


def test_extract_unknown_type_and_bad_values() -> None:
    assert extract_index({"resourceType": "Observation"}) == ({}, {})
    idx, srt = extract_index({"resourceType": "Slot", "start": "not a date", "status": 3})
    assert "start" not in idx and "status" not in idx
    assert srt["start"] == ""
