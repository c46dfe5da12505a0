"""Scheduling operation routes: Appointment/$find, $hold, $book."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhirserver.api.negotiation import check_format, read_body
from fhirserver.api.responses import fhir_response
from fhirserver.api.security import authorize, request_policy
from fhirserver.context import AppContext
from fhirserver.fhir.errors import Forbidden
from fhirserver.fhir.operations import get_operation, parse_parameters, parse_query

router = APIRouter()


async def _inputs(request: Request, ctx: AppContext, code: str) -> dict[str, list[Any]]:
    op = get_operation(code)
    if request.method == "GET":
        return parse_query(op, parse_qsl(request.url.query, keep_blank_values=True))
    return parse_parameters(op, await read_body(request, ctx.settings.max_body_bytes))


async def _ctx(request: Request, interaction: str, permission: tuple[str, str]) -> AppContext:
    """The context once the caller is authorized: `permission` is (type, SMART letter)."""
    request.state.interaction = interaction
    request.state.resource_type = "Appointment"
    check_format(request)
    ctx: AppContext = request.app.state.ctx
    policy = await authorize(request, ctx)
    if policy is not None:
        await policy.grant(*permission)
    return ctx


def _own_patient(request: Request, inputs: dict[str, list[Any]]) -> None:
    """A patient may $find only as themself (the patient parameter ranks providers)."""
    policy = request_policy(request)
    if policy is None or policy.principal.role != "patient":
        return
    own = f"Patient/{policy.principal.patient_id}"
    for value in inputs.get("patient", []):
        ref = value.get("reference") if isinstance(value, dict) else value
        if ref not in (own, policy.principal.patient_id):
            raise Forbidden("a patient can search only on their own behalf", code="forbidden")


def _idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key, scoped to the caller: another client or user replaying the same
    key must not receive the first caller's appointment."""
    key = request.headers.get("idempotency-key")
    policy = request_policy(request)
    if key is None or policy is None:
        return key
    who = policy.principal
    return f"{who.client_id}|{who.user_id or ''}|{key}"


@router.api_route("/Appointment/$find", methods=["GET", "POST"], summary="$find")
async def find(request: Request) -> Response:
    """Proposed Appointments for bookable time, earliest first across providers."""
    ctx = await _ctx(request, "operation-find", ("Slot", "s"))
    inputs = await _inputs(request, ctx, "find")
    _own_patient(request, inputs)
    return fhir_response(await ctx.scheduling.find(inputs))


@router.post("/Appointment/$hold", summary="$hold")
async def hold(request: Request) -> Response:
    """Hold a proposed appointment for a bounded time (Expires header)."""
    ctx = await _ctx(request, "operation-hold", ("Appointment", "c"))
    result = await ctx.scheduling.hold(await _inputs(request, ctx, "hold"))
    return fhir_response(result.body, result.status, result.headers)


@router.post("/Appointment/$book", summary="$book")
async def book(request: Request) -> Response:
    """Book a proposed or held appointment; idempotent under Idempotency-Key."""
    ctx = await _ctx(request, "operation-book", ("Appointment", "c"))
    values = await _inputs(request, ctx, "book")
    raw = getattr(request.state, "raw_body", b"")
    result = await ctx.scheduling.book(values, _idempotency_key(request), raw)
    return fhir_response(result.body, result.status, result.headers)
