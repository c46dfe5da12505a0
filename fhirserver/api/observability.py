"""Request ids, structured JSON logs and Prometheus metrics, as one ASGI middleware.

Only method, route template, status and timing are logged: query strings and bodies may
hold PHI and never reach the log.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from typing import Any

from prometheus_client import Counter, Histogram
from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhirserver.metrics import REGISTRY

log = logging.getLogger("fhirserver.access")

REQUESTS = Counter(
    "fhirserver_requests_total",
    "HTTP requests by FHIR interaction, resource type and status",
    ["interaction", "resource_type", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "fhirserver_request_seconds",
    "HTTP request latency by FHIR interaction and resource type",
    ["interaction", "resource_type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)


def configure_logging(level: str) -> None:
    """JSON log lines on stderr for the whole process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # PyMongo's DEBUG command log prints documents (resource content): never below INFO.
    logging.getLogger("pymongo").setLevel(max(root.level, logging.INFO))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = name != "uvicorn.access"


class ObservabilityMiddleware:
    """Assigns X-Request-ID, logs one JSON line per request, records metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 200 else uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            interaction = state.get("interaction", "other")
            rtype = state.get("resource_type", "")
            REQUESTS.labels(interaction, rtype, str(status)).inc()
            LATENCY.labels(interaction, rtype).observe(elapsed)
            route = scope.get("route")
            log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope.get("method"),
                    "route": getattr(route, "path", None) or "unmatched",
                    "interaction": interaction,
                    "resource_type": rtype,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
