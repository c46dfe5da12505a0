"""Every failure rendered as an OperationOutcome with the right HTTP status."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from fhirserver.fhir.errors import FhirError
from fhirserver.phi.cipher import TamperedRecord
from fhirserver.phi.keyring import KeyringError

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"

_HTTP_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "business-rule",
}


def outcome_response(status: int, diagnostics: str, code: str | None = None) -> Response:
    """A one-issue OperationOutcome response."""
    body = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error" if status < 500 else "fatal",
                "code": code or _HTTP_CODES.get(status, "exception"),
                "diagnostics": diagnostics,
            }
        ],
    }
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON)


def fhir_error_response(exc: FhirError) -> Response:
    """Render a FhirError."""
    headers = {str(k): str(v) for k, v in exc.extra.get("headers", {}).items()}
    return Response(
        orjson.dumps(exc.outcome()), status_code=exc.status, media_type=FHIR_JSON, headers=headers
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the exception handlers that turn every error into an OperationOutcome."""

    async def on_fhir_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, FhirError)
        return fhir_error_response(exc)

    async def on_http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return outcome_response(exc.status_code, str(exc.detail))

    async def on_validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return outcome_response(400, f"invalid request: {exc.errors()!s}"[:2000])

    async def on_sealed_record(request: Request, exc: Exception) -> Response:
        # A sealed PHI record that does not open (tampered, swapped, key missing): loud in
        # the log and a 500 for the client, never the record (docs/phi.md). The message
        # names type/id/version or a kid only, no PHI.
        log.error("PHI record integrity failure: %s", exc, extra={"path": request.url.path})
        return outcome_response(
            500, "a stored record failed its integrity check; see the server log", "exception"
        )

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # The route template, not the path: ids and query strings may identify a patient.
        route = getattr(request.scope.get("route"), "path", None) or "unmatched"
        log.exception(
            "unhandled error",
            extra={"route": route, "request_id": getattr(request.state, "request_id", None)},
        )
        return outcome_response(500, "internal server error; see the server log")

    app.add_exception_handler(FhirError, on_fhir_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(TamperedRecord, on_sealed_record)
    app.add_exception_handler(KeyringError, on_sealed_record)
    app.add_exception_handler(Exception, on_unexpected)
