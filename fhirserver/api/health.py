"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fhirserver.metrics import REGISTRY

router = APIRouter()
metrics_router = APIRouter()
noop_router = APIRouter()

# A typical small resource, served as-is: the benchmark's ceiling for a read.
_NOOP_BODY = (
    b'{"resourceType":"Patient","id":"noop","meta":{"versionId":"1",'
    b'"lastUpdated":"2026-01-01T00:00:00.000Z"},"name":[{"family":"Ceiling",'
    b'"given":["No","Op"]}],"gender":"unknown","birthDate":"1970-01-01"}'
)


@router.get("/health", summary="liveness")
async def health(request: Request) -> Response:
    """200 while the process serves requests."""
    request.state.interaction = "health"
    return Response(orjson.dumps({"status": "ok"}), media_type="application/json")


@router.get("/ready", summary="readiness")
async def ready(request: Request) -> Response:
    """200 when MongoDB and Redis answer, 503 otherwise."""
    request.state.interaction = "ready"
    ctx = request.app.state.ctx
    mongo_ok = await ctx.mongo.ping()
    try:
        redis_ok = bool(await ctx.redis.ping())
    except Exception:
        redis_ok = False
    ok = mongo_ok and redis_ok
    body = {"status": "ready" if ok else "unavailable", "mongodb": mongo_ok, "redis": redis_ok}
    return Response(
        orjson.dumps(body), status_code=200 if ok else 503, media_type="application/json"
    )


@metrics_router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    """Request counts and latencies per interaction, and the group-commit queues' batches,
    in the Prometheus text format."""
    request.state.interaction = "metrics"
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@noop_router.get("/_noop", include_in_schema=False)
async def noop(request: Request) -> Response:
    """Constant bytes through the same stack (middleware, routing): the benchmark ceiling."""
    request.state.interaction = "noop"
    return Response(_NOOP_BODY, media_type="application/fhir+json", headers={"ETag": 'W/"1"'})
