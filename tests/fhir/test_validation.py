"""validate_resource: structure (400), required bindings (400 code-invalid), invariants (422)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhirserver.fhir import bindings
from fhirserver.fhir.errors import BadRequest, FhirError, Unprocessable
from fhirserver.fhir.types import RESOURCE_TYPES
from fhirserver.fhir.validation import validate_resource

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "fhir-examples"
if not REFERENCE.is_dir():  # the repo may be checked out elsewhere
    REFERENCE = Path("/work/shared/reference/fhir-examples")

NARRATIVE = {
    "status": "generated",
    "div": '<div xmlns="http://www.w3.org/1999/xhtml">example</div>',
}

VALID: dict[str, dict[str, Any]] = {
    "Practitioner": {
        "resourceType": "Practitioner",
        "id": "dr-ada",
        "text": NARRATIVE,
        "identifier": [
            {"use": "official", "system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}
        ],
        "active": True,
        "name": [{"use": "official", "family": "Lovelace", "given": ["Ada"], "prefix": ["Dr"]}],
        "telecom": [
            {"system": "phone", "value": "+1 555 0100", "use": "work"},
            {"system": "email", "value": "ada@example.org", "use": "work", "rank": 1},
        ],
        "address": [{"use": "work", "type": "physical", "line": ["1 Main St"], "city": "Boston"}],
        "gender": "female",
        "birthDate": "1980-12",
        "qualification": [{"code": {"text": "MD"}, "period": {"start": "2008-06-01"}}],
        "communication": [{"coding": [{"system": "urn:ietf:bcp:47", "code": "en-US"}]}],
    },
    "PractitionerRole": {
        "resourceType": "PractitionerRole",
        "id": "role-ada-cardio",
        "active": True,
        "practitioner": {"reference": "Practitioner/dr-ada"},
        "organization": {"reference": "Organization/clinic"},
        "code": [{"coding": [{"system": "http://snomed.info/sct", "code": "17561000"}]}],
        "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": "394579002"}]}],
        "location": [{"reference": "Location/main"}],
        "telecom": [{"system": "phone", "value": "+1 555 0101"}],
        "availableTime": [
            {
                "daysOfWeek": ["mon", "tue", "wed"],
                "availableStartTime": "09:00:00",
                "availableEndTime": "17:00:00",
            },
            {"daysOfWeek": ["sat"], "allDay": False},
        ],
        "notAvailable": [
            {
                "description": "Vacation",
                "during": {"start": "2026-12-24", "end": "2026-12-31"},
            }
        ],
        "availabilityExceptions": "Closed on public holidays",
    },
    "Patient": {
        "resourceType": "Patient",
        "id": "pat-1",
        "meta": {"versionId": "3", "lastUpdated": "2026-01-02T03:04:05.678Z"},
        "identifier": [{"use": "usual", "system": "urn:oid:1.2.3", "value": "MRN-1"}],
        "active": True,
        "name": [
            {"use": "official", "family": "Doe", "given": ["Jane", "Q"]},
            {"use": "nickname", "given": ["JJ"]},
        ],
        "telecom": [{"system": "sms", "value": "+1 555 0199", "use": "mobile"}],
        "gender": "female",
        "birthDate": "1990-02-28",
        "deceasedBoolean": False,
        "address": [{"use": "home", "type": "both", "postalCode": "02118", "country": "US"}],
        "maritalStatus": {"text": "Married"},
        "multipleBirthInteger": 2,
        "contact": [
            {
                "relationship": [{"text": "spouse"}],
                "name": {"family": "Doe", "given": ["John"]},
                "gender": "male",
            }
        ],
        "communication": [{"language": {"text": "English"}, "preferred": True}],
        "managingOrganization": {"reference": "Organization/clinic"},
        "link": [{"other": {"reference": "Patient/pat-0"}, "type": "replaces"}],
    },
    "Location": {
        "resourceType": "Location",
        "id": "main",
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/timezone",
                "valueCode": "America/New_York",
            }
        ],
        "status": "active",
        "name": "Main Street Clinic",
        "alias": ["MSC"],
        "mode": "instance",
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode"}]}],
        "telecom": [{"system": "url", "value": "https://clinic.example.org"}],
        "address": {"use": "work", "line": ["1 Main St"], "city": "Boston", "state": "MA"},
        "physicalType": {"text": "Building"},
        "position": {"longitude": -71.0589, "latitude": 42.3601},
        "managingOrganization": {"reference": "Organization/clinic"},
        "hoursOfOperation": [
            {
                "daysOfWeek": ["mon", "tue", "wed", "thu", "fri"],
                "openingTime": "08:00:00",
                "closingTime": "18:00:00",
            },
            {"daysOfWeek": ["sun"], "allDay": False},
        ],
    },
    "HealthcareService": {
        "resourceType": "HealthcareService",
        "id": "cardiology",
        "active": True,
        "providedBy": {"reference": "Organization/clinic"},
        "category": [{"text": "Cardiology"}],
        "type": [{"text": "Echocardiogram"}],
        "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": "394579002"}]}],
        "location": [{"reference": "Location/main"}],
        "name": "Cardiology clinic",
        "telecom": [{"system": "phone", "value": "+1 555 0102", "use": "work"}],
        "appointmentRequired": True,
        "availableTime": [
            {
                "daysOfWeek": ["thu", "fri"],
                "availableStartTime": "08:30:00",
                "availableEndTime": "12:00:00",
            }
        ],
        "notAvailable": [{"description": "Staff training"}],
    },
    "Device": {
        "resourceType": "Device",
        "id": "mri-1",
        "identifier": [{"system": "urn:example:assets", "value": "MRI-001"}],
        "udiCarrier": [{"deviceIdentifier": "00844588003288", "entryType": "barcode"}],
        "status": "active",
        "manufacturer": "Acme Imaging",
        "deviceName": [{"name": "MRI Scanner 1", "type": "user-friendly-name"}],
        "type": {"text": "MRI scanner"},
        "owner": {"reference": "Organization/clinic"},
        "location": {"reference": "Location/main"},
    },
    "Organization": {
        "resourceType": "Organization",
        "id": "clinic",
        "identifier": [{"system": "urn:example:orgs", "value": "CL-1"}],
        "active": True,
        "type": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                        "code": "prov",
                    }
                ]
            }
        ],
        "name": "Example Clinic",
        "telecom": [{"system": "phone", "value": "+1 555 0100"}],
        "address": [{"line": ["1 Main St"], "city": "Boston"}],
    },
    "Schedule": {
        "resourceType": "Schedule",
        "id": "sched-ada",
        "active": True,
        "serviceType": [{"text": "Consultation"}],
        "actor": [{"reference": "Practitioner/dr-ada"}, {"reference": "Location/main"}],
        "planningHorizon": {"start": "2026-01-01T00:00:00Z", "end": "2026-12-31T23:59:59Z"},
        "comment": "Cardiology consults",
    },
    "Slot": {
        "resourceType": "Slot",
        "id": "slot-1",
        "serviceType": [{"text": "Consultation"}],
        "appointmentType": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v2-0276", "code": "ROUTINE"}
            ]
        },
        "schedule": {"reference": "Schedule/sched-ada"},
        "status": "free",
        "start": "2026-11-23T09:00:00-05:00",
        "end": "2026-11-23T09:30:00-05:00",
        "overbooked": False,
    },
    "Appointment": {
        "resourceType": "Appointment",
        "id": "appt-1",
        "status": "booked",
        "serviceType": [{"text": "Consultation"}],
        "appointmentType": {"text": "ROUTINE"},
        "reasonCode": [{"text": "Chest pain"}],
        "priority": 0,
        "description": "Cardiology consult",
        "start": "2026-11-23T09:00:00-05:00",
        "end": "2026-11-23T09:30:00-05:00",
        "minutesDuration": 30,
        "slot": [{"reference": "Slot/slot-1"}],
        "created": "2026-11-01",
        "comment": "Bring previous ECGs",
        "participant": [
            {
                "actor": {"reference": "Patient/pat-1", "display": "Jane Doe"},
                "required": "required",
                "status": "accepted",
            },
            {
                "type": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "ATND",
                            }
                        ]
                    }
                ],
                "actor": {"reference": "Practitioner/dr-ada"},
                "status": "accepted",
            },
            {"actor": {"reference": "Location/main"}, "status": "accepted"},
        ],
        "requestedPeriod": [{"start": "2026-11-20", "end": "2026-11-30"}],
    },
    "AppointmentResponse": {
        "resourceType": "AppointmentResponse",
        "id": "resp-1",
        "appointment": {"reference": "Appointment/appt-1"},
        "start": "2026-11-23T09:00:00-05:00",
        "end": "2026-11-23T09:30:00-05:00",
        "actor": {"reference": "Practitioner/dr-ada"},
        "participantStatus": "tentative",
        "comment": "Might be late",
    },
    "AuditEvent": {
        "resourceType": "AuditEvent",
        "id": "audit-1",
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
        },
        "action": "R",
        "recorded": "2026-01-02T10:00:00.000Z",
        "outcome": "0",
        "agent": [{"who": {"reference": "Practitioner/dr-ada"}, "requestor": True}],
        "source": {"observer": {"display": "fhirserver"}},
        "entity": [{"what": {"reference": "Patient/pat-1"}}],
    },
}

APPT: dict[str, Any] = {
    "resourceType": "Appointment",
    "status": "booked",
    "start": "2026-11-23T09:00:00-05:00",
    "end": "2026-11-23T09:30:00-05:00",
    "participant": [{"actor": {"reference": "Patient/pat-1"}, "status": "accepted"}],
}


def appt(**changes: Any) -> dict[str, Any]:
    """A small valid Appointment with top-level elements replaced (None removes one)."""
    body = copy.deepcopy(APPT)
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def fails(body: object, expected_type: str | None = None) -> FhirError:
    """Validate, expecting a FhirError; check its OperationOutcome is itself valid FHIR."""
    with pytest.raises(FhirError) as info:
        validate_resource(body, expected_type)
    err = info.value
    outcome = err.outcome()
    get_fhir_model_class("OperationOutcome").model_validate(outcome)
    return err


def expressions(err: FhirError) -> list[str]:
    return [e for issue in err.outcome()["issue"] for e in issue.get("expression", [])]


def codes(err: FhirError) -> list[str]:
    return [issue["code"] for issue in err.outcome()["issue"]]


# --- valid resources -----------------------------------------------------------


def test_examples_cover_every_resource_type() -> None:
    assert set(VALID) == set(RESOURCE_TYPES)


@pytest.mark.parametrize("resource_type", sorted(VALID))
def test_valid_resource_round_trips(resource_type: str) -> None:
    body = VALID[resource_type]
    before = copy.deepcopy(body)
    out = validate_resource(body, resource_type)
    assert out == body
    assert body == before  # input untouched
    assert out is not body
    assert validate_resource(out) == out  # re-validating gives the same dict


def test_returned_dict_is_an_independent_copy() -> None:
    body = VALID["Appointment"]
    out = validate_resource(body)
    out["participant"][0]["actor"]["reference"] = "Patient/other"
    out["serviceType"].append({"text": "x"})
    assert body["participant"][0]["actor"]["reference"] == "Patient/pat-1"
    assert len(body["serviceType"]) == 1


def test_dates_and_instants_are_preserved_verbatim() -> None:
    body = appt(
        start="2026-11-23T09:00:00.123456789-05:00",
        end="2026-11-23T15:00:00.000Z",
        created="2026-11",
        meta={"lastUpdated": "2020-07-06T18:46:08.000Z"},
    )
    out = validate_resource(body)
    assert out["start"] == "2026-11-23T09:00:00.123456789-05:00"
    assert out["end"] == "2026-11-23T15:00:00.000Z"
    assert out["created"] == "2026-11"
    assert out["meta"]["lastUpdated"] == "2020-07-06T18:46:08.000Z"
    offset = validate_resource(appt())
    assert offset["start"] == "2026-11-23T09:00:00-05:00"


def test_decimals_keep_their_json_value() -> None:
    body = copy.deepcopy(VALID["Location"])
    body["position"] = {"longitude": -71.05890, "latitude": 42, "altitude": 1.5e2}
    assert validate_resource(body)["position"] == body["position"]


def test_leap_second_is_accepted() -> None:
    out = validate_resource(appt(start="2016-12-31T23:59:60Z", end="2017-01-01T00:30:00Z"))
    assert out["start"] == "2016-12-31T23:59:60Z"


def test_primitive_extensions_and_null_in_primitive_arrays() -> None:
    ext = {"extension": [{"url": "http://example.org/why", "valueString": "unknown"}]}
    body = copy.deepcopy(VALID["Patient"])
    body["name"] = [{"family": "Doe", "given": ["Jane", None], "_given": [None, ext]}]
    body["_gender"] = ext
    assert validate_resource(body) == body


def test_contained_resources_are_validated_with_their_own_model() -> None:
    body = appt(
        contained=[{"resourceType": "Patient", "id": "p1", "gender": "other"}],
        participant=[{"actor": {"reference": "#p1"}, "status": "accepted"}],
    )
    assert validate_resource(body) == body
    err = fails(appt(contained=[{"resourceType": "Patient", "id": "p1", "gender": "x"}]))
    assert err.status == 400 and expressions(err) == ["Appointment.contained[0].gender"]
    err = fails(appt(contained=[{"resourceType": "Nope"}]))
    assert expressions(err) == ["Appointment.contained[0]"]
    err = fails(appt(contained=[{"id": "p1"}]))
    assert expressions(err) == ["Appointment.contained[0]"]


# --- reference examples ----------------------------------------------------------


def _reference(name: str) -> Any:
    return json.loads((REFERENCE / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "name",
    [
        "hl7-r4-Appointment-example.json",
        "hl7-r4-Appointment-examplereq.json",
        "ihe-r4-example-appointment.json",
        "ihe-r4-example-patient.json",
        "ihe-r4-example-practitioner.json",
        "cerner-r4-Appointment-create-proposed-request.json",
        "cerner-r4-Schedule-entry.json",
        "cerner-r4-Slot-entry.json",
        "smart-ssl-location-line1.json",
        "smart-ssl-schedule-line1.json",
        "smart-ssl-slot-W09-line1.json",
        "ssl-fork-location-line1.json",
        "ssl-fork-practitionerrole-line1.json",
        "ssl-fork-schedule-line1.json",
        "ssl-fork-slot-W40-line1.json",
    ],
)
def test_reference_r4_examples_validate(name: str) -> None:
    body = _reference(name)
    assert validate_resource(body, body["resourceType"]) == body


def test_reference_cerner_entry_with_empty_value_string_is_rejected() -> None:
    err = fails(_reference("cerner-r4-Appointment-entry.json"))
    assert isinstance(err, BadRequest) and err.status == 400
    assert err.expression == ["Appointment.extension[0].valueString"]
    assert "empty string" in err.diagnostics


def test_reference_cerner_booked_request_without_times_breaks_app3() -> None:
    # Booked by Slot reference only: the server must fill start/end before validating.
    err = fails(_reference("cerner-r4-Appointment-create-booked-request.json"))
    assert isinstance(err, Unprocessable) and err.status == 422
    assert err.code == "invariant" and "app-3" in err.diagnostics


def test_reference_json_patch_body_is_not_a_resource() -> None:
    err = fails(_reference("cerner-r4-Appointment-booked-jsonpatch.json"))
    assert err.status == 400 and err.code == "structure"


def test_reference_ihe_bundle_entries_validate_but_bundle_is_unsupported() -> None:
    bundle = _reference("ihe-r4-example-iti-scheduling-bundle.json")
    err = fails(bundle)
    assert err.status == 400 and err.code == "not-supported"
    appointments = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Appointment"
    ]
    assert len(appointments) == 3
    for resource in appointments:
        assert validate_resource(resource, "Appointment") == resource


# --- structure (400) ---------------------------------------------------------------


@pytest.mark.parametrize("body", [[], "Appointment", None, 42, True])
def test_body_must_be_a_json_object(body: object) -> None:
    err = fails(body)
    assert err.status == 400 and err.code == "structure"


@pytest.mark.parametrize("rt", [None, "", 5, ["Appointment"]])
def test_resource_type_missing_or_invalid(rt: object) -> None:
    body = appt()
    body["resourceType"] = rt
    err = fails(body)
    assert err.status == 400 and "resourceType" in err.diagnostics


@pytest.mark.parametrize("rt", ["Bundle", "Observation", "Nope", "appointment"])
def test_resource_type_not_served(rt: str) -> None:
    err = fails(appt(resourceType=rt))
    assert err.status == 400 and err.code == "not-supported"


def test_expected_type_mismatch() -> None:
    err = fails(appt(), "Slot")
    assert err.status == 400
    assert "Slot" in err.diagnostics and "Appointment" in err.diagnostics
    assert validate_resource(appt(), "Appointment")["resourceType"] == "Appointment"


def test_unknown_element_is_rejected_with_expression() -> None:
    err = fails(appt(foo=1))
    assert err.status == 400 and err.code == "structure"
    assert err.expression == ["Appointment.foo"]


def test_unknown_nested_element_is_rejected_with_expression() -> None:
    body = appt()
    body["participant"][0]["actor"]["bar"] = "x"
    err = fails(body)
    assert err.expression == ["Appointment.participant[0].actor.bar"]


@pytest.mark.parametrize(
    "key",
    ["fhir_comments", "resource_type", "Status", "_foo"],
)
def test_library_internal_or_misspelled_keys_are_unknown(key: str) -> None:
    err = fails(appt(**{key: "booked"}))
    assert err.status == 400 and err.expression == [f"Appointment.{key}"]


def test_resource_type_inside_a_data_type_is_unknown() -> None:
    body = appt()
    body["participant"][0]["actor"]["resourceType"] = "Reference"
    err = fails(body)
    assert err.expression == ["Appointment.participant[0].actor.resourceType"]


@pytest.mark.parametrize(
    ("resource_type", "key", "value", "expression"),
    [
        ("Appointment", "minutesDuration", "30", "Appointment.minutesDuration"),
        ("Appointment", "minutesDuration", 30.5, "Appointment.minutesDuration"),
        ("Appointment", "priority", True, "Appointment.priority"),
        ("Appointment", "start", 1_700_000_000, "Appointment.start"),
        ("Appointment", "status", ["booked"], "Appointment.status"),
        ("Appointment", "participant", {"actor": {"reference": "Patient/1"}}, None),
        ("Appointment", "comment", 12, "Appointment.comment"),
        ("Appointment", "appointmentType", "ROUTINE", "Appointment.appointmentType"),
        ("Patient", "active", "true", "Patient.active"),
        ("Patient", "active", 1, "Patient.active"),
        ("Patient", "multipleBirthInteger", "2", "Patient.multipleBirthInteger"),
        ("Patient", "birthDate", 19900228, "Patient.birthDate"),
        ("Slot", "overbooked", "false", "Slot.overbooked"),
        (
            "Location",
            "position",
            {"longitude": "1.5", "latitude": 2},
            "Location.position.longitude",
        ),
    ],
)
def test_wrong_json_type_is_rejected(
    resource_type: str, key: str, value: Any, expression: str | None
) -> None:
    body = copy.deepcopy(VALID[resource_type])
    body[key] = value
    err = fails(body)
    assert err.status == 400 and err.code == "structure"
    assert err.expression == [expression or f"{resource_type}.{key}"]


def test_wrong_type_of_nested_reference() -> None:
    body = appt()
    body["participant"][0]["actor"]["reference"] = 5
    err = fails(body)
    assert err.expression == ["Appointment.participant[0].actor.reference"]


@pytest.mark.parametrize(
    ("change", "expression"),
    [
        ({"comment": ""}, "Appointment.comment"),
        ({"extension": [{"url": "http://x", "valueString": ""}]}, "Appointment.extension[0]"),
        ({"serviceType": []}, "Appointment.serviceType"),
        ({"participant": []}, "Appointment.participant"),
        ({"meta": {}}, "Appointment.meta"),
        ({"appointmentType": {}}, "Appointment.appointmentType"),
        ({"_status": {}}, "Appointment.status"),
        ({"_status": {"extension": []}}, "Appointment.status.extension"),
        ({"comment": None}, "Appointment.comment"),
        ({"participant": [None]}, "Appointment.participant[0]"),
    ],
)
def test_empty_and_null_values_are_rejected(change: dict[str, Any], expression: str) -> None:
    body = appt()
    body.update(change)
    err = fails(body)
    assert err.status == 400
    assert err.expression is not None and err.expression[0].startswith(expression)


def test_empty_value_string_points_at_the_value() -> None:
    err = fails(appt(extension=[{"url": "http://example.org/x", "valueString": ""}]))
    assert err.expression == ["Appointment.extension[0].valueString"]
    assert err.code == "value" and "empty string" in err.diagnostics


def test_empty_string_in_deep_element() -> None:
    body = appt()
    body["participant"][0]["actor"]["reference"] = ""
    err = fails(body)
    assert err.expression == ["Appointment.participant[0].actor.reference"]


@pytest.mark.parametrize("bad_id", ["a_b", "a b", "a/b", "é", "a" * 65])
def test_invalid_id_is_rejected(bad_id: str) -> None:
    err = fails(appt(id=bad_id))
    assert err.status == 400 and err.expression == ["Appointment.id"]


def test_id_of_64_characters_is_accepted() -> None:
    assert validate_resource(appt(id="A-z.0" + "x" * 59))["id"].startswith("A-z.0")


@pytest.mark.parametrize(
    ("resource_type", "key", "value"),
    [
        ("Appointment", "start", "2026-11-23T09:00-05:00"),  # no seconds
        ("Appointment", "start", "2026-11-23T09:00:00"),  # instant without zone
        ("Appointment", "start", "2026-11-23"),  # instant needs a time
        ("Appointment", "start", "2026-02-30T09:00:00Z"),
        ("Appointment", "created", "2026-11-23T25:00:00Z"),
        ("Appointment", "created", "2026-11-23T09:00:00"),  # dateTime with time needs a zone
        ("Patient", "birthDate", "1990-02-30"),
        ("Patient", "birthDate", "1990-2-3"),
        ("Patient", "birthDate", "1990-02-03T00:00:00Z"),
        ("Slot", "start", "not a date"),
    ],
)
def test_malformed_dates_are_rejected(resource_type: str, key: str, value: str) -> None:
    body = copy.deepcopy(VALID[resource_type])
    body[key] = value
    err = fails(body)
    assert err.status == 400 and err.code == "value"
    assert err.expression == [f"{resource_type}.{key}"]


def test_deeply_nested_body_is_a_400_not_a_crash() -> None:
    ext: dict[str, Any] = {"url": "http://example.org/x", "valueString": "leaf"}
    for _ in range(3000):
        ext = {"url": "http://example.org/x", "extension": [ext]}
    err = fails(appt(extension=[ext]))
    assert err.status == 400


def test_choice_type_with_two_values_is_rejected() -> None:
    err = fails(appt(extension=[{"url": "http://x", "valueString": "a", "valueInteger": 3}]))
    assert err.status == 400 and err.expression == ["Appointment.extension[0]"]


def test_missing_required_participant_status() -> None:
    body = appt()
    del body["participant"][0]["status"]
    err = fails(body)
    assert err.status == 400 and err.code == "required"
    assert err.expression == ["Appointment.participant[0].status"]


def test_missing_status_is_required() -> None:
    err = fails(appt(status=None))
    assert err.status == 400 and err.code == "required"
    assert err.expression == ["Appointment.status"]


def test_schedule_without_actor_is_rejected() -> None:
    body = copy.deepcopy(VALID["Schedule"])
    del body["actor"]
    err = fails(body)
    assert isinstance(err, BadRequest) and err.code == "required"
    assert err.expression == ["Schedule.actor"]
    body["actor"] = []
    err = fails(body)
    assert err.status == 400 and err.expression == ["Schedule.actor"]


def test_appointment_without_participant_is_rejected() -> None:
    err = fails(appt(participant=None))
    assert err.status == 400 and err.code == "required"
    assert err.expression == ["Appointment.participant"]


def test_one_issue_per_error() -> None:
    body = appt(foo=1, minutesDuration="5", status="bogus", comment="")
    body["participant"][0]["actor"]["bar"] = 2
    err = fails(body)
    assert err.status == 400
    issues = err.outcome()["issue"]
    assert len(issues) == 5
    assert sorted(expressions(err)) == [
        "Appointment.comment",
        "Appointment.foo",
        "Appointment.minutesDuration",
        "Appointment.participant[0].actor.bar",
        "Appointment.status",
    ]
    assert all(issue["severity"] == "error" and issue["diagnostics"] for issue in issues)
    assert "code-invalid" in codes(err)


# --- required bindings (400 code-invalid) ---------------------------------------------

_BINDING_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("Appointment", lambda b: b.update(status="done"), "Appointment.status"),
    (
        "Appointment",
        lambda b: b["participant"][1].update(status="maybe"),
        "Appointment.participant[1].status",
    ),
    (
        "Appointment",
        lambda b: b["participant"][0].update(required="mandatory"),
        "Appointment.participant[0].required",
    ),
    ("Slot", lambda b: b.update(status="open"), "Slot.status"),
    (
        "AppointmentResponse",
        lambda b: b.update(participantStatus="booked"),
        "AppointmentResponse.participantStatus",
    ),
    ("Patient", lambda b: b.update(gender="F"), "Patient.gender"),
    ("Patient", lambda b: b["contact"][0].update(gender="Male"), "Patient.contact[0].gender"),
    ("Patient", lambda b: b["link"][0].update(type="see-also"), "Patient.link[0].type"),
    ("Practitioner", lambda b: b.update(gender="woman"), "Practitioner.gender"),
    ("Location", lambda b: b.update(status="open"), "Location.status"),
    ("Location", lambda b: b.update(mode="room"), "Location.mode"),
    (
        "Location",
        lambda b: b["hoursOfOperation"][0].update(daysOfWeek=["mon", "Tue"]),
        "Location.hoursOfOperation[0].daysOfWeek[1]",
    ),
    (
        "PractitionerRole",
        lambda b: b["availableTime"][1].update(daysOfWeek=["saturday"]),
        "PractitionerRole.availableTime[1].daysOfWeek[0]",
    ),
    (
        "HealthcareService",
        lambda b: b["availableTime"][0].update(daysOfWeek=["fri", "xyz"]),
        "HealthcareService.availableTime[0].daysOfWeek[1]",
    ),
    ("Device", lambda b: b.update(status="broken"), "Device.status"),
    ("Device", lambda b: b["deviceName"][0].update(type="nick"), "Device.deviceName[0].type"),
    (
        "Device",
        lambda b: b["udiCarrier"][0].update(entryType="qr"),
        "Device.udiCarrier[0].entryType",
    ),
    ("Practitioner", lambda b: b["text"].update(status="done"), "Practitioner.text.status"),
    ("Patient", lambda b: b["name"][1].update(use="alias"), "Patient.name[1].use"),
    ("Patient", lambda b: b["telecom"][0].update(system="mobile"), "Patient.telecom[0].system"),
    ("Patient", lambda b: b["telecom"][0].update(use="cell"), "Patient.telecom[0].use"),
    ("Location", lambda b: b["address"].update(use="office"), "Location.address.use"),
    ("Patient", lambda b: b["address"][0].update(type="mail"), "Patient.address[0].type"),
    ("Patient", lambda b: b["identifier"][0].update(use="primary"), "Patient.identifier[0].use"),
    (
        "Organization",
        lambda b: b.update(extension=[{"url": "http://x", "valueHumanName": {"use": "x"}}]),
        "Organization.extension[0].valueHumanName.use",
    ),
    (
        "HealthcareService",
        lambda b: b["telecom"][0].update(use="Work"),
        "HealthcareService.telecom[0].use",
    ),
]


@pytest.mark.parametrize(("resource_type", "mutate", "expression"), _BINDING_CASES)
def test_required_binding_violation(
    resource_type: str, mutate: Callable[[dict[str, Any]], None], expression: str
) -> None:
    body = copy.deepcopy(VALID[resource_type])
    mutate(body)
    err = fails(body)
    assert isinstance(err, BadRequest) and err.status == 400
    assert err.code == "code-invalid"
    assert err.expression == [expression]
    assert len(err.outcome()["issue"]) == 1


def test_bad_appointment_status_code() -> None:
    err = fails(appt(status="bogus"))
    assert err.status == 400 and err.code == "code-invalid"
    assert err.expression == ["Appointment.status"]
    assert "http://hl7.org/fhir/ValueSet/appointmentstatus" in err.diagnostics


@pytest.mark.parametrize(
    "status",
    [
        "proposed",
        "pending",
        "booked",
        "arrived",
        "fulfilled",
        "cancelled",
        "noshow",
        "entered-in-error",
        "checked-in",
        "waitlist",
    ],
)
def test_every_appointment_status_is_accepted(status: str) -> None:
    assert validate_resource(appt(status=status))["status"] == status


def test_codes_are_case_sensitive() -> None:
    err = fails(appt(status="Booked"))
    assert err.code == "code-invalid"


# --- invariants (422) ------------------------------------------------------------------


def _invariant(body: dict[str, Any]) -> FhirError:
    err = fails(body)
    assert isinstance(err, Unprocessable) and err.status == 422
    assert err.code == "invariant"
    return err


def test_app1_participant_needs_type_or_actor() -> None:
    body = appt()
    body["participant"].append({"required": "optional", "status": "needs-action"})
    err = _invariant(body)
    assert err.expression == ["Appointment.participant[1]"] and "app-1" in err.diagnostics
    body["participant"][1]["type"] = [{"text": "interpreter"}]
    assert validate_resource(body) == body


def test_app2_start_and_end_together() -> None:
    err = _invariant(appt(status="proposed", end=None))
    assert "app-2" in err.diagnostics and err.expression == ["Appointment.end"]
    err = _invariant(appt(status="proposed", start=None))
    assert "app-2" in err.diagnostics and err.expression == ["Appointment.start"]


@pytest.mark.parametrize("status", ["booked", "pending", "arrived", "fulfilled", "noshow"])
def test_app3_only_proposed_cancelled_waitlist_may_lack_times(status: str) -> None:
    err = _invariant(appt(status=status, start=None, end=None))
    assert "app-3" in err.diagnostics and err.expression == ["Appointment.start"]


@pytest.mark.parametrize("status", ["proposed", "cancelled", "waitlist"])
def test_app3_statuses_allowed_without_times(status: str) -> None:
    body = appt(status=status, start=None, end=None)
    assert validate_resource(body) == body


def test_app4_cancelation_reason_only_when_cancelled_or_noshow() -> None:
    reason = {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason",
                "code": "pat",
            }
        ]
    }
    err = _invariant(appt(cancelationReason=reason))
    assert "app-4" in err.diagnostics and err.expression == ["Appointment.cancelationReason"]
    for status in ("cancelled", "noshow"):
        body = appt(status=status, cancelationReason=reason)
        assert validate_resource(body) == body


def test_noshow_with_cancelation_reason_is_accepted() -> None:
    body = appt(status="noshow", cancelationReason={"text": "did not attend"})
    assert validate_resource(body)["status"] == "noshow"


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-11-23T09:00:00-05:00", "2026-11-23T09:00:00-05:00"),
        ("2026-11-23T09:00:00-05:00", "2026-11-23T08:59:59-05:00"),
        ("2026-11-23T09:00:00-05:00", "2026-11-23T14:00:00Z"),  # same instant, other zone
        ("2026-11-23T09:00:00-05:00", "2026-11-23T13:30:00Z"),
    ],
)
def test_appointment_end_must_be_after_start(start: str, end: str) -> None:
    err = _invariant(appt(start=start, end=end))
    assert err.expression == ["Appointment.end"]
    assert start in err.diagnostics and end in err.diagnostics


def test_appointment_end_after_start_across_zones_is_accepted() -> None:
    assert validate_resource(appt(end="2026-11-23T14:00:01Z"))["end"] == "2026-11-23T14:00:01Z"


@pytest.mark.parametrize(
    "end", ["2026-11-23T09:00:00-05:00", "2026-11-23T08:30:00-05:00", "2026-11-23T13:59:59Z"]
)
def test_slot_end_must_be_after_start(end: str) -> None:
    body = copy.deepcopy(VALID["Slot"])
    body["end"] = end
    err = _invariant(body)
    assert err.expression == ["Slot.end"]


def test_structure_errors_come_before_invariants() -> None:
    err = fails(appt(status="booked", start=None, end=None, foo=1))
    assert err.status == 400 and err.expression == ["Appointment.foo"]


# --- terminology --------------------------------------------------------------------------


def test_every_binding_has_a_value_set() -> None:
    value_sets = bindings.value_sets()
    for path, url in bindings.BINDINGS.items():
        assert url in value_sets, path
        assert value_sets[url], path


def test_code_systems_are_valid_r4_code_systems() -> None:
    systems = bindings.load_code_systems()
    assert "http://hl7.org/fhir/appointmentstatus" in systems
    model = get_fhir_model_class("CodeSystem")
    for url, doc in systems.items():
        model.model_validate(doc)
        assert doc["url"] == url
        assert url.startswith(("http://hl7.org/fhir/", "http://fhirserver.dev/CodeSystem/"))
        assert doc["content"] == "complete"


def test_code_lists() -> None:
    vs = bindings.value_sets()
    base = "http://hl7.org/fhir/ValueSet/"
    assert vs[base + "slotstatus"] == {
        "busy",
        "free",
        "busy-unavailable",
        "busy-tentative",
        "entered-in-error",
    }
    assert vs[base + "participationstatus"] == {"accepted", "declined", "tentative", "needs-action"}
    assert vs[base + "participantrequired"] == {"required", "optional", "information-only"}
    assert vs[base + "days-of-week"] == {"mon", "tue", "wed", "thu", "fri", "sat", "sun"}
    assert "noshow" in vs[base + "appointmentstatus"]
    assert bindings.check_code("Appointment.status", "waitlist")
    assert not bindings.check_code("Appointment.status", "no-show")
    assert bindings.check_code("Appointment.comment", "anything")  # unbound


def test_code_lists_agree_with_fhir_resources_enums() -> None:
    """Where the R4B models record the allowed codes, ours are the same."""
    compared = 0
    for path, url in bindings.BINDINGS.items():
        resource, *elements = path.split(".")
        model: Any = get_fhir_model_class(resource)
        for element in elements[:-1]:
            model = get_fhir_model_class(model.__name__ + element[0].upper() + element[1:])
        extra = model.model_fields[elements[-1]].json_schema_extra or {}
        enum = extra.get("enum_values")
        if enum and "+" not in enum:  # "+" marks a list the generator truncated
            assert set(enum) == bindings.value_sets()[url], path
            compared += 1
    assert compared >= 15
