"""The FHIR REST routes: one line of parsing, one domain call, one render each."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import parse_qsl, urlencode

import orjson
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from fhirserver.access.policy import AccessPolicy
from fhirserver.api.negotiation import PATCH_TYPES, check_format, read_body, strict_handling
from fhirserver.api.responses import fhir_response, read_response, write_response
from fhirserver.api.security import authorize, request_policy
from fhirserver.context import AppContext
from fhirserver.fhir.bundles import bundle_bytes, history_entry
from fhirserver.fhir.errors import BadRequest, MethodNotAllowed, NotFound
from fhirserver.fhir.search import parse_search
from fhirserver.fhir.searching import search_bundle
from fhirserver.fhir.service import require_type, require_writable
from fhirserver.fhir.transactions import BundleProcessor
from fhirserver.fhir.types import is_read_only
from fhirserver.scheduling.availability import parse_generated_slot_id
from fhirserver.scheduling.slots import availability_view, is_availability_view, view_page

TYPE_RE = r"^[A-Z][A-Za-z]+$"
ID_RE = r"^[A-Za-z0-9\-\.]{1,64}$"
Params = list[tuple[str, str]]


async def get_ctx(request: Request) -> AppContext:
    """The application context, once the request is authorized (dependency)."""
    ctx: AppContext = request.app.state.ctx
    check_format(request)
    await authorize(request, ctx)
    return ctx


Ctx = Annotated[AppContext, Depends(get_ctx)]
TypePath = Annotated[str, Path(pattern=TYPE_RE, description="FHIR resource type")]
IdPath = Annotated[str, Path(pattern=ID_RE, description="logical id")]

router = APIRouter()


def _label(request: Request, interaction: str, rtype: str = "") -> None:
    request.state.interaction = interaction
    request.state.resource_type = rtype


def query_params(request: Request) -> Params:
    """The query string as an ordered list of pairs (repeats kept)."""
    return parse_qsl(request.url.query, keep_blank_values=True)


async def run_search(
    ctx: AppContext, rtype: str, params: Params, strict: bool, policy: AccessPolicy | None
) -> bytes:
    """Parse, execute and render one search (also used by transaction GET entries), of
    what `policy` lets the caller see."""
    require_type(rtype)
    cursor = next((v for k, v in params if k == "_cursor"), None)
    spec = parse_search(
        rtype,
        [(k, v) for k, v in params if k != "_cursor"],
        strict=strict,
        blind=ctx.store.blind,
    )
    page = await ctx.searcher.page(spec, cursor, strict, policy)
    return search_bundle(
        spec, page, base_url=ctx.settings.base_url(), path=rtype, cursor_token=cursor
    )


@router.get("/_history", summary="history-system")
async def history_system(request: Request, ctx: Ctx) -> Response:
    """Every version of every resource, newest first."""
    _label(request, "history-system")
    _unrestricted_history(request, None)
    return fhir_response(await _history(ctx, request, None, None))


@router.get("/{rtype}", summary="search-type")
async def search_get(request: Request, ctx: Ctx, rtype: TypePath) -> Response:
    """Search a type with query parameters (Slot by schedule: the bookable slots)."""
    _label(request, "search-type", rtype)
    params = query_params(request)
    policy = request_policy(request)
    if rtype == "Slot" and is_availability_view(params):
        if policy is not None:
            await policy.grant("Slot", "s")
        slots = await availability_view(ctx.generated_slots, params, ctx.clock.now())
        return fhir_response(
            view_page(slots, params, ctx.settings.base_url(), ctx.settings.default_page_size)
        )
    return fhir_response(await run_search(ctx, rtype, params, strict_handling(request), policy))


@router.post("/{rtype}/_search", summary="search-type (POST)")
async def search_post(request: Request, ctx: Ctx, rtype: TypePath) -> Response:
    """Search with form-encoded parameters in the body (plus any in the URL)."""
    _label(request, "search-type", rtype)
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    if ctype and ctype != "application/x-www-form-urlencoded":
        raise BadRequest("POST _search takes application/x-www-form-urlencoded parameters")
    body = (await request.body()).decode("utf-8", "replace")
    params = query_params(request) + parse_qsl(body, keep_blank_values=True)
    policy = request_policy(request)
    return fhir_response(await run_search(ctx, rtype, params, strict_handling(request), policy))


@router.get("/{rtype}/_history", summary="history-type")
async def history_type(request: Request, ctx: Ctx, rtype: TypePath) -> Response:
    """Every version of every resource of a type, newest first."""
    _label(request, "history-type", rtype)
    _require_history(rtype)
    _unrestricted_history(request, rtype)
    return fhir_response(await _history(ctx, request, rtype, None))


@router.get("/{rtype}/{rid}/_history", summary="history-instance")
async def history_instance(request: Request, ctx: Ctx, rtype: TypePath, rid: IdPath) -> Response:
    """Every version of one resource, newest first."""
    _label(request, "history-instance", rtype)
    _require_history(rtype)
    await _check_read(request, rtype, rid)
    await ctx.store.last_version(rtype, rid) or await ctx.service.read(rtype, rid)
    return fhir_response(await _history(ctx, request, rtype, rid))


def _unrestricted_history(request: Request, rtype: str | None) -> None:
    policy = request_policy(request)
    if policy is not None:
        policy.require_unrestricted(rtype, "history")


async def _check_read(request: Request, rtype: str, rid: str) -> None:
    """403 without a read scope for the type, 404 for a resource that is not the caller's."""
    policy = request_policy(request)
    if policy is not None:
        await policy.check_read(rtype, rid)


def _require_history(rtype: str) -> None:
    """404 for unknown types; 405 for read-only types, which keep no history (AuditEvent)."""
    require_type(rtype)
    if is_read_only(rtype):
        raise MethodNotAllowed(f"{rtype} keeps no versions: only read and search are supported")


async def _history(ctx: AppContext, request: Request, rtype: str | None, rid: str | None) -> bytes:
    q = request.query_params
    since = _instant(q.get("_since"), "_since")
    at = _instant(q.get("_at"), "_at")
    count_s = q.get("_count", str(ctx.settings.default_page_size))
    if not (count_s.isascii() and count_s.isdigit()):
        raise BadRequest("_count must be a non-negative integer")
    count = min(int(count_s), ctx.settings.max_page_size)
    before = None
    if "_before_key" in q:
        lu_s, _, hid = q["_before_key"].partition("|")
        before = (_instant(lu_s, "_before_key") or datetime.min, hid)
    rows = await ctx.store.history(rtype, rid, since=since, at=at, limit=count + 1, before=before)
    base = ctx.settings.base_url()
    path = "/".join(p for p in (rtype, rid, "_history") if p)
    keep = [(k, v) for k, v in query_params(request) if k != "_before_key"]
    links = [("self", str(request.url))]
    if len(rows) > count:
        last = rows[count - 1]
        key = f"{last.last_updated.isoformat()}|{last.resource_type}/{last.id}/{last.version}"
        links.append(("next", f"{base}/{path}?" + urlencode([*keep, ("_before_key", key)])))
    entries = [history_entry(base, s) for s in rows[:count]]
    return bundle_bytes("history", entries, total=None, links=links)


def _instant(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be a FHIR instant, got {value!r}") from None
    if ts.tzinfo is None:
        raise BadRequest(f"{name} must carry a time zone")
    try:
        ts.astimezone(UTC)  # 0001-01-01T00:00:00+14:00 is before year 1 in UTC
    except OverflowError:
        raise BadRequest(f"{name} is out of range, got {value!r}") from None
    return ts


@router.get("/{rtype}/{rid}/_history/{vid}", summary="vread")
async def vread(request: Request, ctx: Ctx, rtype: TypePath, rid: IdPath, vid: str) -> Response:
    """One version of a resource."""
    _label(request, "vread", rtype)
    _require_history(rtype)
    await _check_read(request, rtype, rid)
    return read_response(await ctx.service.vread(rtype, rid, vid))


@router.get("/{rtype}/{rid}", summary="read")
async def read(request: Request, ctx: Ctx, rtype: TypePath, rid: IdPath) -> Response:
    """The current version of a resource."""
    _label(request, "read", rtype)
    await _check_read(request, rtype, rid)
    if rtype == "Slot" and parse_generated_slot_id(rid) is not None:
        slot = await ctx.generated_slots.read(rid, ctx.clock.now())
        if slot is None:
            raise NotFound(f"Slot/{rid} is not offered by its schedule")
        return fhir_response(orjson.dumps(slot))
    stored = await ctx.service.read(rtype, rid)
    if request.headers.get("if-none-match") == stored.etag():
        return Response(status_code=304, headers={"ETag": stored.etag()})
    return read_response(stored)


@router.post("/{rtype}", summary="create")
async def create(request: Request, ctx: Ctx, rtype: TypePath) -> Response:
    """Create (conditional with If-None-Exist)."""
    _label(request, "create", rtype)
    require_writable(rtype)
    body = await read_body(request, ctx.settings.max_body_bytes)
    ine = request.headers.get("if-none-exist")
    criteria = parse_qsl(ine.lstrip("?"), keep_blank_values=True) if ine is not None else None
    result = await ctx.service.create(rtype, body, if_none_exist=criteria)
    return write_response(request, result, ctx.settings.base_url())


@router.put("/{rtype}/{rid}", summary="update")
async def update(request: Request, ctx: Ctx, rtype: TypePath, rid: IdPath) -> Response:
    """Update, or create with a client-chosen id."""
    _label(request, "update", rtype)
    require_writable(rtype)
    body = await read_body(request, ctx.settings.max_body_bytes)
    result = await ctx.service.update(rtype, rid, body, if_match=request.headers.get("if-match"))
    return write_response(request, result, ctx.settings.base_url())


@router.put("/{rtype}", summary="conditional update")
async def conditional_update(request: Request, ctx: Ctx, rtype: TypePath) -> Response:
    """Update the one resource matching the query (or create)."""
    _label(request, "update", rtype)
    require_writable(rtype)
    body = await read_body(request, ctx.settings.max_body_bytes)
    result = await ctx.service.conditional_update(
        rtype, query_params(request), body, if_match=request.headers.get("if-match")
    )
    return write_response(request, result, ctx.settings.base_url())


@router.patch("/{rtype}/{rid}", summary="patch")
async def patch(request: Request, ctx: Ctx, rtype: TypePath, rid: IdPath) -> Response:
    """JSON Patch a resource."""
    _label(request, "patch", rtype)
    require_writable(rtype)
    body = await read_body(request, ctx.settings.max_body_bytes, allowed=PATCH_TYPES)
    result = await ctx.service.patch(rtype, rid, body, if_match=request.headers.get("if-match"))
    return write_response(request, result, ctx.settings.base_url())


@router.delete("/{rtype}/{rid}", summary="delete")
async def delete(request: Request, ctx: Ctx, rtype: TypePath, rid: IdPath) -> Response:
    """Delete a resource (later reads answer 410)."""
    _label(request, "delete", rtype)
    result = await ctx.service.delete(rtype, rid, if_match=request.headers.get("if-match"))
    return write_response(request, result, ctx.settings.base_url())


@router.delete("/{rtype}", summary="conditional delete")
async def conditional_delete(request: Request, ctx: Ctx, rtype: TypePath) -> Response:
    """Delete the one resource matching the query."""
    _label(request, "delete", rtype)
    result = await ctx.service.conditional_delete(rtype, query_params(request))
    return write_response(request, result, ctx.settings.base_url())


async def transaction(request: Request, ctx: Ctx) -> Response:
    """Process a transaction or batch Bundle."""
    _label(request, "transaction")
    body = await read_body(request, ctx.settings.max_body_bytes)

    policy = request_policy(request)

    async def search(rtype: str, params: Params) -> bytes:
        return await run_search(ctx, rtype, params, strict_handling(request), policy)

    async def check_read(rtype: str, rid: str) -> None:
        await _check_read(request, rtype, rid)

    processor = BundleProcessor(ctx.service, ctx.settings.base_url(), search, check_read)
    return fhir_response(await processor.process(body))
