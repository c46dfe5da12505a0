"""$bulk-publish routes: the SMART Scheduling Links manifest and its NDJSON files."""

from __future__ import annotations

from datetime import datetime

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from fhirserver.context import AppContext
from fhirserver.fhir.errors import BadRequest, NotFound
from fhirserver.scheduling.criteria import parse_instant
from fhirserver.scheduling.publish import FILE_TYPES

router = APIRouter()
CACHE = {"Cache-Control": "public, max-age=300"}


def _setup(request: Request) -> tuple[AppContext, datetime | None]:
    request.state.interaction = "operation-bulk-publish"
    ctx: AppContext = request.app.state.ctx
    unknown = set(request.query_params) - {"_since"}
    if unknown:
        raise BadRequest(f"$bulk-publish has no parameter {sorted(unknown)[0]!r}")
    raw = request.query_params.get("_since")
    return ctx, parse_instant(raw, "_since") if raw else None


@router.get("/$bulk-publish", summary="$bulk-publish manifest")
async def manifest(request: Request) -> Response:
    """The manifest naming the Location, Schedule and Slot NDJSON files."""
    ctx, since = _setup(request)
    body = orjson.dumps(ctx.publisher.manifest(ctx.clock.now(), since))
    return Response(body, media_type="application/json", headers=CACHE)


@router.get("/$bulk-publish/{name}", summary="$bulk-publish file")
async def ndjson_file(request: Request, name: str) -> Response:
    """One NDJSON output file (Location.ndjson, Schedule.ndjson or Slot.ndjson)."""
    ctx, since = _setup(request)
    rtype = name.removesuffix(".ndjson")
    if not name.endswith(".ndjson") or rtype not in FILE_TYPES:
        raise NotFound(f"no published file {name!r}; try {', '.join(FILE_TYPES)}.ndjson")
    lines = ctx.publisher.ndjson(rtype, ctx.clock.now(), since)
    return StreamingResponse(lines, media_type="application/fhir+ndjson", headers=CACHE)
