"""Unit tests for fhirserver.fhir.search.parse_search (the produced filters and options)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from fhirserver.fhir.errors import BadRequest
from fhirserver.fhir.search import (
    RESULT_PARAMS,
    Chain,
    Include,
    chain_filter,
    distance_km,
    parse_search,
)
from fhirserver.fhir.searchparams import get_param


def f(rt: str, *params: tuple[str, str], strict: bool = False) -> dict[str, object]:
    return parse_search(rt, list(params), strict=strict).filter


def dt(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


def test_empty_search() -> None:
    spec = parse_search("Slot", [])
    assert spec.filter == {}
    assert spec.sort == [("_id", 1)]
    assert spec.count is None and spec.chains == [] and spec.warnings == []
    assert spec.passthrough == []


def test_empty_values_ignored() -> None:
    spec = parse_search("Slot", [("status", ""), ("", "x"), ("_count", " ")])
    assert spec.filter == {} and spec.passthrough == [] and spec.count is None


# --------------------------------------------------------------------------- tokens


def test_token_forms() -> None:
    assert f("Slot", ("status", "free")) == {"idx.status.c": "free"}
    assert f("Slot", ("identifier", "urn:s|1")) == {
        "idx.identifier": {"$elemMatch": {"s": "urn:s", "c": "1"}}
    }
    assert f("Slot", ("identifier", "|1")) == {
        "idx.identifier": {"$elemMatch": {"s": None, "c": "1"}}
    }
    assert f("Slot", ("identifier", "urn:s|")) == {"idx.identifier.s": "urn:s"}
    assert f("Slot", ("status", "free,busy")) == {
        "$or": [{"idx.status.c": "free"}, {"idx.status.c": "busy"}]
    }


def test_token_escapes() -> None:
    assert f("Slot", ("identifier", r"a\,b")) == {"idx.identifier.c": "a,b"}
    assert f("Slot", ("identifier", r"s|a\|b")) == {
        "idx.identifier": {"$elemMatch": {"s": "s", "c": "a|b"}}
    }
    assert f("Slot", ("identifier", r"a\\b")) == {"idx.identifier.c": "a\\b"}


def test_token_not_and_text() -> None:
    assert f("Appointment", ("status:not", "cancelled,noshow")) == {
        "$nor": [{"idx.status.c": "cancelled"}, {"idx.status.c": "noshow"}]
    }
    assert f("Appointment", ("service-type:text", "Vacunación")) == {
        "idx.service-type.t": {"$regex": "vacunacion"}
    }
    assert f("Appointment", ("service-type:text", " \u0301 ")) == {}


def test_token_bad_value() -> None:
    with pytest.raises(BadRequest, match="'identifier'"):
        parse_search("Slot", [("identifier", "|")])


# --------------------------------------------------------------------------- strings


def test_string_forms() -> None:
    assert f("Patient", ("name", "Jos")) == {"idx.name.n": {"$regex": "^jos"}}
    assert f("Patient", ("name", "Jo Sé")) == {"idx.name.n": {"$regex": "^jo\\ se"}}
    assert f("Patient", ("name:contains", "a.b")) == {"idx.name.n": {"$regex": "a\\.b"}}
    assert f("Patient", ("family:exact", "Núñez")) == {"idx.family.e": "Núñez"}
    assert f("Patient", ("name", "a,b")) == {
        "$or": [{"idx.name.n": {"$regex": "^a"}}, {"idx.name.n": {"$regex": "^b"}}]
    }
    # only whitespace after normalisation: no filter
    assert f("Patient", ("name", "\u0301")) == {}


# --------------------------------------------------------------------------- dates


def test_date_day_precision_uses_local_days() -> None:
    assert f("Appointment", ("date", "2026-11-23")) == {
        "idx.date": {"$elemMatch": {"dl": {"$gte": "2026-11-23"}, "dh": {"$lte": "2026-11-23"}}}
    }
    assert f("Appointment", ("date", "ge2026-11")) == {
        "$or": [
            {"idx.date.dh": {"$gt": "2026-11-30"}},
            {
                "idx.date": {
                    "$elemMatch": {"dl": {"$gte": "2026-11-01"}, "dh": {"$lte": "2026-11-30"}}
                }
            },
        ]
    }
    assert f("Appointment", ("date", "lt2026")) == {"idx.date.dl": {"$lt": "2026-01-01"}}
    assert f("Appointment", ("date", "sa2026")) == {"idx.date.dl": {"$gt": "2026-12-31"}}
    assert f("Appointment", ("date", "eb2026")) == {"idx.date.dh": {"$lt": "2026-01-01"}}
    assert f("Appointment", ("date", "ne2026-11-23")) == {
        "$or": [{"idx.date.dl": {"$lt": "2026-11-23"}}, {"idx.date.dh": {"$gt": "2026-11-23"}}]
    }


def test_date_time_precision_uses_instants() -> None:
    assert f("Slot", ("start", "gt2026-11-23T10:00:00+02:00")) == {
        "idx.start.hi": {"$gt": dt(2026, 11, 23, 8, 0, 1)}
    }
    # no offset = UTC; minute precision = the whole minute
    assert f("Slot", ("start", "2026-11-23T10:00")) == {
        "idx.start": {
            "$elemMatch": {
                "lo": {"$gte": dt(2026, 11, 23, 10)},
                "hi": {"$lte": dt(2026, 11, 23, 10, 1)},
            }
        }
    }
    assert f("Slot", ("start", "eb2026-11-23T10:00:00Z")) == {
        "idx.start.hi": {"$lte": dt(2026, 11, 23, 10)}
    }
    assert f("Slot", ("start", "sa2026-11-23T10:00:00Z")) == {
        "idx.start.lo": {"$gte": dt(2026, 11, 23, 10, 0, 1)}
    }


def test_date_ap_widens() -> None:
    spec = parse_search("Slot", [("start", "ap2026-11-23")])
    cond = spec.filter["idx.start"]
    assert isinstance(cond, dict)
    m = cond["$elemMatch"]
    assert m["dl"]["$lte"] >= "2026-11-23" and m["dh"]["$gte"] <= "2026-11-23"
    spec = parse_search("Slot", [("start", "ap2026-11-23T10:00:00Z")])
    m = spec.filter["idx.start"]["$elemMatch"]
    assert m["lo"]["$lt"] >= dt(2026, 11, 23, 10, 0, 1)
    assert m["hi"]["$gt"] <= dt(2026, 11, 23, 10)


@pytest.mark.parametrize(
    "value", ["2026-13-01", "xx2026", "Ge2026", "2026-11-23T10", "tomorrow", "2026-11-23T10:00+"]
)
def test_date_malformed(value: str) -> None:
    with pytest.raises(BadRequest) as ei:
        parse_search("Appointment", [("date", value)])
    assert "'date'" in ei.value.diagnostics
    assert ei.value.expression is None
    assert ei.value.status == 400


def test_last_updated_and_id() -> None:
    assert f("Slot", ("_lastUpdated", "ge2026-11-23")) == {"lu": {"$gte": dt(2026, 11, 23)}}
    assert f("Slot", ("_lastUpdated", "2026-11-23")) == {
        "lu": {"$gte": dt(2026, 11, 23), "$lt": dt(2026, 11, 24)}
    }
    assert f("Slot", ("_lastUpdated", "lt2026-11-23T10:00:00Z")) == {
        "lu": {"$lt": dt(2026, 11, 23, 10)}
    }
    assert f("Slot", ("_id", "a")) == {"_id": "a"}
    assert f("Slot", ("_id", "a, b")) == {"_id": {"$in": ["a", "b"]}}
    with pytest.raises(BadRequest, match="_lastUpdated"):
        parse_search("Slot", [("_lastUpdated", "gt-1")])


# --------------------------------------------------------------------------- references


def test_reference_forms() -> None:
    assert f("Appointment", ("patient", "p1")) == {"idx.patient": {"$in": ["Patient/p1"]}}
    assert f("Appointment", ("patient", "Patient/p1/_history/3")) == {
        "idx.patient": {"$in": ["Patient/p1"]}
    }
    assert f("Appointment", ("practitioner", "http://ex.org/fhir/Practitioner/d1")) == {
        "idx.practitioner": {"$in": ["http://ex.org/fhir/Practitioner/d1", "Practitioner/d1"]}
    }
    assert f("Appointment", ("actor:Location", "l1")) == {"idx.actor": {"$in": ["Location/l1"]}}
    assert f("Appointment", ("actor", "Patient/p1,Location/l1")) == {
        "idx.actor": {"$in": ["Patient/p1", "Location/l1"]}
    }
    # any-type reference with a bare id
    assert f("Appointment", ("supporting-info", "x1")) == {
        "idx.supporting-info": {"$regex": "(^|/)[A-Z][A-Za-z]+/x1$"}
    }
    # actor with a bare id: every allowed type
    flt = f("Appointment", ("actor", "x"))
    assert "Practitioner/x" in flt["idx.actor"]["$in"]  # type: ignore[index]


def test_reference_errors() -> None:
    with pytest.raises(BadRequest, match="practitioner"):
        parse_search("Appointment", [("practitioner", "Patient/p1")])
    with pytest.raises(BadRequest, match="practitioner"):
        parse_search("Appointment", [("practitioner:Patient", "p1")])
    with pytest.raises(BadRequest, match="patient"):
        parse_search("Appointment", [("patient", "a b")])
    # a type modifier outside the targets is a bad value even in lenient mode
    with pytest.raises(BadRequest):
        parse_search("Appointment", [("actor:Organization", "o1")])


def test_missing_modifier_on_every_type() -> None:
    for rt, name in [
        ("Appointment", "status"),
        ("Patient", "name"),
        ("Appointment", "date"),
        ("Appointment", "patient"),
        ("Device", "url"),
        ("Location", "near"),
    ]:
        assert f(rt, (f"{name}:missing", "true")) == {f"idx.{name}": {"$exists": False}}
        assert f(rt, (f"{name}:missing", "FALSE")) == {f"idx.{name}": {"$exists": True}}
    with pytest.raises(BadRequest, match="missing"):
        parse_search("Slot", [("status:missing", "yes")])


def test_repeated_param_is_and() -> None:
    assert f("Slot", ("status", "free"), ("start", "ge2026")) == {
        "$and": [
            {"idx.status.c": "free"},
            {"$or": [{"idx.start.dh": {"$gt": "2026-12-31"}}, {"idx.start": {"$elemMatch": {
                "dl": {"$gte": "2026-01-01"}, "dh": {"$lte": "2026-12-31"}}}}]},
        ]
    }  # fmt: skip


# --------------------------------------------------------------------------- uri / number


def test_uri_modifiers() -> None:
    assert f("Device", ("url", "http://a/b")) == {"idx.url": "http://a/b"}
    assert f("Device", ("url:below", "http://a/")) == {"idx.url": {"$regex": "^http://a/"}}
    assert f("Device", ("url:above", "http://a/b/c")) == {
        "idx.url": {"$in": ["http://a", "http://a/b", "http://a/b/c"]}
    }


def test_number_and_quantity_builders() -> None:
    from fhirserver.fhir import search as s

    assert s._number("idx.n", "n", ["100"]) == {
        "idx.n": {"$elemMatch": {"$gte": 99.5, "$lt": 100.5}}
    }
    assert s._number("idx.n", "n", ["gt1.5"]) == {"idx.n": {"$elemMatch": {"$gt": 1.5}}}
    assert s._number("idx.n", "n", ["ne1"]) == {
        "$or": [{"idx.n": {"$elemMatch": {"$lt": 0.5}}}, {"idx.n": {"$elemMatch": {"$gte": 1.5}}}]
    }
    assert s._quantity("idx.q", "q", ["le5.0|http://unitsofmeasure.org|mg"]) == {
        "idx.q": {"$elemMatch": {"v": {"$lte": 5.0}, "s": "http://unitsofmeasure.org", "c": "mg"}}
    }
    assert s._quantity("idx.q", "q", ["5"]) == {"idx.q.v": {"$gte": 4.5, "$lt": 5.5}}
    with pytest.raises(BadRequest, match="'n'"):
        s._number("idx.n", "n", ["abc"])
    with pytest.raises(BadRequest, match="'q'"):
        s._quantity("idx.q", "q", ["1|x"])


# --------------------------------------------------------------------------- unknowns


def test_unknown_param_lenient_and_strict() -> None:
    spec = parse_search("Slot", [("foo", "1"), ("status", "free"), ("_has:X:y:z", "1")])
    assert spec.filter == {"idx.status.c": "free"}
    assert len(spec.warnings) == 2 and "foo" in spec.warnings[0]
    assert spec.passthrough == [("status", "free")]
    with pytest.raises(BadRequest, match="foo"):
        parse_search("Slot", [("foo", "1")], strict=True)


def test_unknown_modifier_lenient_and_strict() -> None:
    spec = parse_search("Slot", [("status:below", "x"), ("start:exact", "2026")])
    assert spec.filter == {}
    assert len(spec.warnings) == 2
    with pytest.raises(BadRequest, match="below"):
        parse_search("Slot", [("status:below", "x")], strict=True)
    with pytest.raises(BadRequest):
        parse_search("Appointment", [("patient:identifier", "urn:x|1")], strict=True)


def test_unknown_resource_type() -> None:
    with pytest.raises(BadRequest):
        parse_search("Observation", [])


# --------------------------------------------------------------------------- result params


def test_count_summary_elements_total() -> None:
    spec = parse_search(
        "Slot",
        [("_count", "0"), ("_summary", "count"), ("_elements", "id, status,"), ("_total", "none")],
    )
    assert spec.count == 0
    assert spec.summary == "count"
    assert spec.elements == ["id", "status"]
    assert spec.total == "none"
    assert spec.passthrough == [
        ("_count", "0"),
        ("_summary", "count"),
        ("_elements", "id,status"),
        ("_total", "none"),
    ]
    for bad in [("_count", "-1"), ("_count", "ten"), ("_summary", "yes"), ("_total", "all")]:
        with pytest.raises(BadRequest, match=bad[0]):
            parse_search("Slot", [bad])


def test_paging_params_accepted_not_passed_through() -> None:
    spec = parse_search("Slot", [("_cursor", "abc"), ("_format", "json"), ("_pretty", "true")])
    assert spec.warnings == []
    assert spec.passthrough == [("_format", "json"), ("_pretty", "true")]
    assert {"_count", "_sort", "_include", "_revinclude", "_cursor"} <= RESULT_PARAMS


def test_sort() -> None:
    spec = parse_search("Appointment", [("_sort", "-date,status")])
    assert spec.sort == [("srt.date", -1), ("srt.status", 1), ("_id", 1)]
    assert spec.passthrough == [("_sort", "-date,status")]
    assert parse_search("Slot", [("_sort", "-_lastUpdated")]).sort == [("lu", -1), ("_id", -1)]
    assert parse_search("Slot", [("_sort", "start,-_id")]).sort == [("srt.start", 1), ("_id", -1)]
    assert parse_search("Slot", [("_sort", "_id,start")]).sort == [("_id", 1)]
    with pytest.raises(BadRequest, match="_sort"):
        parse_search("Slot", [("_sort", "nope")])
    with pytest.raises(BadRequest, match="_sort"):
        parse_search("Location", [("_sort", "near")])


def test_includes() -> None:
    spec = parse_search(
        "Appointment",
        [
            ("_include", "Appointment:patient"),
            ("_include", "Appointment:actor:Practitioner"),
            ("_include:iterate", "PractitionerRole:location"),
            ("_include", "*"),
            ("_revinclude", "AppointmentResponse:appointment"),
        ],
    )
    assert spec.includes == [
        Include("Appointment", "patient", None, False),
        Include("Appointment", "actor", "Practitioner", False),
        Include("PractitionerRole", "location", None, True),
        Include("Appointment", "*", None, False),
    ]
    assert spec.revincludes == [Include("AppointmentResponse", "appointment", None, False)]
    assert parse_search("Slot", [("_revinclude", "*")]).revincludes == [
        Include("*", "*", None, False)
    ]
    assert len(spec.passthrough) == 5


def test_include_errors_and_warnings() -> None:
    with pytest.raises(BadRequest, match="_include"):
        parse_search("Appointment", [("_include", "Appointment")])
    with pytest.raises(BadRequest, match="_include"):
        parse_search("Appointment", [("_include", "Appointment:actor:Organization")])
    spec = parse_search(
        "Appointment",
        [
            ("_include", "Appointment:status"),
            ("_include", "Slot:schedule"),
            ("_revinclude", "Provenance:target"),
            ("_revinclude", "Slot:schedule"),
        ],
    )
    assert spec.includes == [] and spec.revincludes == [] and len(spec.warnings) == 4
    with pytest.raises(BadRequest):
        parse_search("Appointment", [("_revinclude", "Provenance:target")], strict=True)


# --------------------------------------------------------------------------- chains


def test_chain() -> None:
    spec = parse_search("Appointment", [("practitioner.name", "Smith"), ("status", "booked")])
    assert spec.filter == {"idx.status.c": "booked"}
    assert len(spec.chains) == 1
    ch = spec.chains[0]
    assert ch.param == get_param("Appointment", "practitioner")
    assert ch.target_type == "Practitioner"
    assert ch.params == [("name", "Smith")]
    assert chain_filter(ch, ["d1", "d2"]) == {
        "idx.practitioner": {"$in": ["Practitioner/d1", "Practitioner/d2"]}
    }
    assert spec.passthrough == [("practitioner.name", "Smith"), ("status", "booked")]


def test_chain_typed_and_multilevel() -> None:
    spec = parse_search("Appointment", [("actor:Practitioner.family:exact", "Núñez")])
    assert spec.chains == [
        Chain(get_param("Appointment", "actor"), "Practitioner", [("family:exact", "Núñez")])  # type: ignore[arg-type]
    ]
    spec = parse_search("Slot", [("schedule.actor:Practitioner.name", "x")])
    assert spec.chains[0].target_type == "Schedule"
    assert spec.chains[0].params == [("actor:Practitioner.name", "x")]


def test_chain_errors() -> None:
    with pytest.raises(BadRequest, match="Ambiguous"):
        parse_search("Appointment", [("actor.name", "x")])
    with pytest.raises(BadRequest, match="reference"):
        parse_search("Appointment", [("status.name", "x")])
    with pytest.raises(BadRequest, match="'date'"):
        parse_search("Slot", [("schedule.date", "bad")])
    spec = parse_search(
        "Appointment", [("practitioner.nope", "x"), ("based-on.status", "x"), ("nope.x", "1")]
    )
    assert spec.chains == [] and len(spec.warnings) == 3
    with pytest.raises(BadRequest):
        parse_search("Appointment", [("practitioner.nope", "x")], strict=True)


# --------------------------------------------------------------------------- near


def test_near() -> None:
    spec = parse_search("Location", [("near", "46.2|6.15|10|km")])
    assert spec.near == (46.2, 6.15, 10.0)
    m = spec.filter["idx.near"]["$elemMatch"]
    assert m["lat"]["$gte"] < 46.2 < m["lat"]["$lte"]
    assert m["lng"]["$gte"] < 6.15 < m["lng"]["$lte"]
    assert parse_search("Location", [("near", "46.2|6.15")]).near == (46.2, 6.15, 50.0)
    spec = parse_search("Location", [("near", "0|0|1000|m")])
    assert spec.near == (0.0, 0.0, 1.0)
    # crossing the antimeridian: two boxes
    spec = parse_search("Location", [("near", "0|179.9|50")])
    assert "$or" in spec.filter and len(spec.filter["$or"]) == 2
    for bad in ["46.2", "a|b", "95|0|1", "0|0|1|parsec", "0|0,1|1"]:
        with pytest.raises(BadRequest, match="near"):
            parse_search("Location", [("near", bad)])


def test_distance_km() -> None:
    assert distance_km(0, 0, 0, 0) == 0
    # Geneva -> Zurich, about 224 km
    assert 220 < distance_km(46.2044, 6.1432, 47.3769, 8.5417) < 228
    assert math.isclose(distance_km(0, 0, 0, 180), math.pi * 6371.0088, rel_tol=1e-9)
