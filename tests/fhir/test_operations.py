"""Operation inputs parsed from the OperationDefinitions in capability/."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fhirserver.fhir.errors import BadRequest
from fhirserver.fhir.operations import get_operation, parse_parameters, parse_query


def test_argonaut_aliases_map_to_declared_names() -> None:
    op = get_operation("find")
    values = parse_query(
        op,
        [
            ("start", "2026-12-01T08:00:00Z"),
            ("visit-type", "FOLLOW_UP"),
            ("location-reference", "Location/x"),
            ("_count", "3"),
        ],
    )
    assert values == {
        "start": ["2026-12-01T08:00:00Z"],
        "service-type": ["FOLLOW_UP"],
        "location": ["Location/x"],
        "_count": [3],
    }


def test_cardinality_and_types_are_checked() -> None:
    op = get_operation("find")
    assert parse_query(op, [("specialty", "x")]) == {"specialty": ["x"]}  # start: default now
    required = replace(op, inputs={**op.inputs, "start": replace(op.inputs["start"], min=1)})
    with pytest.raises(BadRequest, match="requires parameter start"):
        parse_query(required, [("specialty", "x")])
    with pytest.raises(BadRequest, match="at most 1"):
        parse_query(op, [("start", "2026-12-01"), ("start", "2026-12-02")])
    with pytest.raises(BadRequest, match="integer"):
        parse_query(op, [("start", "2026-12-01"), ("_count", "many")])
    with pytest.raises(BadRequest, match="dateTime"):
        parse_query(op, [("start", "tomorrow")])
    with pytest.raises(BadRequest, match="no parameter"):
        parse_query(op, [("start", "2026-12-01"), ("shoe-size", "9")])


def test_parameters_body() -> None:
    op = get_operation("book")
    appt = {"resourceType": "Appointment", "status": "proposed"}
    values = parse_parameters(
        op,
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "appt-resource", "resource": appt},
                {"name": "first-available", "valueBoolean": True},
                {"name": "comment", "valueString": "wheelchair"},
            ],
        },
    )
    assert values == {"appointment": [appt], "first-available": [True], "comment": ["wheelchair"]}
    with pytest.raises(BadRequest, match="Parameters resource"):
        parse_parameters(op, {"resourceType": "Bundle"})
    with pytest.raises(BadRequest, match="must carry a Appointment"):
        parse_parameters(
            op,
            {
                "resourceType": "Parameters",
                "parameter": [{"name": "appointment", "resource": {"resourceType": "Patient"}}],
            },
        )
    with pytest.raises(BadRequest, match="POST body"):
        parse_query(op, [("appointment", "x")])
