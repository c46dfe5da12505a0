"""Content negotiation, request bodies, Prefer headers."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from fhirserver.fhir.errors import BadRequest, NotAcceptable, PayloadTooLarge, UnsupportedMediaType

JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir", "text/json")
PATCH_TYPES = ("application/json-patch+json",)
_XML_MARKERS = ("xml",)
_JSON_FORMATS = ("json", "application/json", "application/fhir+json", "application/json+fhir")


def check_format(request: Request) -> None:
    """Honour `_format`; refuse XML (415) and Accept headers we cannot satisfy (406)."""
    fmt = request.query_params.get("_format")
    if fmt is not None and fmt.lower() not in _JSON_FORMATS:
        raise UnsupportedMediaType(f"_format={fmt} is not supported; this server speaks JSON")
    if fmt is not None:
        return
    accept = request.headers.get("accept", "")
    if not accept:
        return
    kinds = [a.split(";")[0].strip().lower() for a in accept.split(",")]
    if any(k in ("*/*", "application/*") or "json" in k for k in kinds):
        return
    raise NotAcceptable(f"cannot produce {accept}; this server produces application/fhir+json")


async def read_body(request: Request, limit: int, *, allowed: tuple[str, ...] = JSON_TYPES) -> Any:
    """Read and parse a JSON body: 413 over `limit`, 415 for other media types, 400 malformed."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and ctype not in allowed:
        raise UnsupportedMediaType(f"Content-Type {ctype} is not supported; send {allowed[0]}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the {limit} byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit} byte limit")
        chunks.append(chunk)
    data = b"".join(chunks)
    request.state.raw_body = data  # kept for request fingerprints (Idempotency-Key)
    if not data.strip():
        raise BadRequest("request body is empty")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc


def prefer(request: Request, key: str) -> str | None:
    """The value of one `Prefer` token, e.g. prefer(req, "return") -> "minimal"."""
    header = request.headers.get("prefer")
    if not header:
        return None
    for part in header.split(","):
        for token in part.split(";"):
            name, _, value = token.strip().partition("=")
            if name.strip().lower() == key:
                return value.strip().strip('"').lower()
    return None


def strict_handling(request: Request) -> bool:
    """True for `Prefer: handling=strict`."""
    return prefer(request, "handling") == "strict"
