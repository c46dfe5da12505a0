"""Inputs `make fuzz` (schemathesis) once answered with 500: each must be a 4xx outcome."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson
import pytest

from tests.api.factories import patient, uid

FHIR = {"Content-Type": "application/fhir+json"}
SUPERSCRIPT_TWO = "\u00b2"  # str.isdigit() is True, int() refuses it


def cursor(payload: Any) -> str:
    """A well-formed cursor token (base64 JSON) carrying `payload`."""
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def assert_outcome(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    return body


async def create_patient(client: httpx.AsyncClient) -> str:
    resp = await client.post("/Patient", json=patient(f"Fz{uid()}"), headers=FHIR)
    assert resp.status_code == 201, resp.text
    rid: str = resp.json()["id"]
    return rid


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/Patient", {"k": [], "f": True}),  # no value for the _id sort key
        ("/Slot?_sort=start", {"k": [1], "f": True}),  # one value for two sort keys
        ("/Patient", {"k": "ab", "f": True}),  # not a list
    ],
)
async def test_cursor_of_the_wrong_shape_is_400(
    client: httpx.AsyncClient, path: str, payload: Any
) -> None:
    sep = "&" if "?" in path else "?"
    resp = await client.get(f"{path}{sep}_cursor={cursor(payload)}")
    assert "cursor" in assert_outcome(resp, 400)["issue"][0]["diagnostics"]


@pytest.mark.parametrize("full_url", [[None, None], {"a": 1}, 7])
async def test_transaction_full_url_must_be_a_string(
    client: httpx.AsyncClient, full_url: Any
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": full_url,
                "resource": patient(),
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    resp = await client.post("", json=bundle, headers=FHIR)
    assert "fullUrl" in assert_outcome(resp, 400)["issue"][0]["diagnostics"]


async def test_transaction_if_match_must_be_a_string(client: httpx.AsyncClient) -> None:
    rid = await create_patient(client)
    entry = {"request": {"method": "DELETE", "url": f"Patient/{rid}", "ifMatch": 1}}
    resp = await client.post(
        "", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]},
        headers=FHIR,
    )
    assert_outcome(resp, 400)
    resp = await client.post(
        "", json={"resourceType": "Bundle", "type": "batch", "entry": [entry]}, headers=FHIR
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["entry"][0]["response"]["status"].startswith("400")
    assert (await client.get(f"/Patient/{rid}")).status_code == 200  # not deleted


async def test_if_match_with_a_non_ascii_digit_is_400(client: httpx.AsyncClient) -> None:
    rid = await create_patient(client)
    # httpx sends str headers as ASCII only; the server decodes header bytes as latin-1.
    resp = await client.delete(
        f"/Patient/{rid}", headers={"If-Match": f'W/"{SUPERSCRIPT_TWO}"'.encode("latin-1")}
    )
    assert_outcome(resp, 400)


async def test_vread_of_a_non_ascii_digit_version_is_404(client: httpx.AsyncClient) -> None:
    rid = await create_patient(client)
    resp = await client.get(f"/Patient/{rid}/_history/{SUPERSCRIPT_TWO}")
    assert_outcome(resp, 404)


@pytest.mark.parametrize("count", [SUPERSCRIPT_TWO, "\u0663"])
async def test_history_count_must_be_ascii_digits(client: httpx.AsyncClient, count: str) -> None:
    assert_outcome(await client.get("/_history", params={"_count": count}), 400)


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_history_since_out_of_range_in_utc_is_400(
    client: httpx.AsyncClient, value: str
) -> None:
    assert_outcome(await client.get("/_history", params={"_since": value}), 400)
    assert_outcome(await client.get("/Patient/_history", params={"_at": value}), 400)


@pytest.mark.parametrize("count", [SUPERSCRIPT_TWO, "--5", "-"])
async def test_operation_integer_parameter_must_be_ascii_digits(
    client: httpx.AsyncClient, count: str
) -> None:
    resp = await client.get(
        "/Appointment/$find", params={"start": "2030-01-07T00:00:00Z", "_count": count}
    )
    assert "_count" in assert_outcome(resp, 400)["issue"][0]["diagnostics"]


async def test_operation_date_time_out_of_range_in_utc_is_400(client: httpx.AsyncClient) -> None:
    resp = await client.get("/Appointment/$find", params={"start": "0001-01-01T00:00:00+14:00"})
    assert "start" in assert_outcome(resp, 400)["issue"][0]["diagnostics"]


# ---- scheduling inputs ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/Appointment/$find", {"start": "9999-12-31"}),
        ("/Appointment/$find", {"start": "0001-01-01T00:00:00+14:00"}),
        ("/$bulk-publish", {"_since": "9999-12-31T23:59:59-14:00"}),
        ("/Slot", {"schedule": "Schedule/x", "start": "eq9999-12-31"}),
        ("/Slot", {"schedule": "Schedule/x", "_count": SUPERSCRIPT_TWO}),
        ("/Slot", {"schedule": "Schedule/x", "_cursor": cursor({"k": [], "f": True})}),
        ("/Slot", {"schedule": "Schedule/x", "_cursor": cursor({"k": [1, 2], "f": True})}),
        ("/Slot", {"schedule": "Schedule/x", "_cursor": cursor({"k": ["a", "b"], "f": True})}),
        ("/Slot", {"schedule": "Schedule/x",
                   "_cursor": cursor({"k": ["2026-12-01T09:00:00", "b"], "f": True})}),
    ],
)
async def test_scheduling_inputs_out_of_range_are_400(
    client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    assert_outcome(await client.get(path, params=params), 400)


async def test_far_future_generated_slot_is_404(client: httpx.AsyncClient) -> None:
    assert_outcome(await client.get("/Slot/g-999912312300-30-sch-x"), 404)


async def test_hold_of_an_appointment_whose_id_is_not_a_string(
    client: httpx.AsyncClient,
) -> None:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "appointment", "resource": {"resourceType": "Appointment", "id": ["x"],
                                             "status": "proposed", "participant": []}}]}
    r = await client.post("/Appointment/$hold", json=body, headers=FHIR)
    assert 400 <= r.status_code < 500, r.text
