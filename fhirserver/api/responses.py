"""Rendering stored resources and write results as HTTP responses."""

from __future__ import annotations

from datetime import UTC
from email.utils import format_datetime

import orjson
from fastapi import Request
from fastapi.responses import Response

from fhirserver.api.negotiation import prefer
from fhirserver.fhir.service import WriteResult
from fhirserver.storage.resources import Stored

FHIR_JSON = "application/fhir+json"


def fhir_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A FHIR JSON response from bytes."""
    return Response(body, status_code=status, media_type=FHIR_JSON, headers=headers)


def version_headers(stored: Stored) -> dict[str, str]:
    """ETag and Last-Modified of a version."""
    return {
        "ETag": stored.etag(),
        "Last-Modified": format_datetime(stored.last_updated.astimezone(UTC), usegmt=True),
    }


def read_response(stored: Stored) -> Response:
    """200 with the stored bytes."""
    return fhir_response(stored.raw or b"{}", 200, version_headers(stored))


def write_response(request: Request, result: WriteResult, base_url: str) -> Response:
    """Render a create/update/patch/delete result honouring `Prefer: return=`."""
    stored = result.stored
    if stored is None or stored.deleted:
        headers = version_headers(stored) if stored is not None else {}
        headers.pop("Last-Modified", None)
        return Response(status_code=204 if result.status == 204 else 200, headers=headers)
    headers = version_headers(stored)
    if result.status == 201 or request.method in ("PUT", "PATCH", "POST"):
        headers["Location"] = (
            f"{base_url}/{stored.resource_type}/{stored.id}/_history/{stored.version}"
        )
    mode = prefer(request, "return") or "representation"
    if mode == "minimal":
        return Response(status_code=result.status, headers=headers)
    if mode == "operationoutcome":
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "information",
                    "code": "informational",
                    "diagnostics": f"{stored.resource_type}/{stored.id} version "
                    f"{stored.version} {'created' if result.status == 201 else 'stored'}",
                }
            ],
        }
        return fhir_response(orjson.dumps(outcome), result.status, headers)
    return fhir_response(stored.raw or b"{}", result.status, headers)
