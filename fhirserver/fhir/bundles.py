"""Bundles assembled from stored JSON bytes: no re-parsing, no model validation on reads."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from fhirserver.storage.resources import Stored, format_instant, now_utc


@dataclass(frozen=True)
class Entry:
    """One Bundle entry whose resource is already serialized."""

    full_url: str | None
    raw: bytes | None
    search_mode: str | None = None
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None

    def to_bytes(self) -> bytes:
        """The entry's JSON, splicing the stored resource bytes in."""
        parts: list[bytes] = []
        if self.full_url:
            parts.append(b'"fullUrl":' + orjson.dumps(self.full_url))
        if self.raw is not None:
            parts.append(b'"resource":' + self.raw)
        if self.search_mode:
            parts.append(b'"search":{"mode":' + orjson.dumps(self.search_mode) + b"}")
        if self.request:
            parts.append(b'"request":' + orjson.dumps(self.request))
        if self.response:
            parts.append(b'"response":' + orjson.dumps(self.response))
        return b"{" + b",".join(parts) + b"}"


def bundle_bytes(
    bundle_type: str,
    entries: Iterable[Entry],
    *,
    total: int | None = None,
    links: list[tuple[str, str]] | None = None,
    timestamp: datetime | None = None,
) -> bytes:
    """Serialize a Bundle of `bundle_type` from pre-serialized entries."""
    head: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": format_instant(timestamp or now_utc())},
        "type": bundle_type,
    }
    if total is not None:
        head["total"] = total
    if links:
        head["link"] = [{"relation": rel, "url": url} for rel, url in links]
    head_bytes = orjson.dumps(head)
    body = b",".join(e.to_bytes() for e in entries)
    if not body:
        return head_bytes
    return head_bytes[:-1] + b',"entry":[' + body + b"]}"


def resource_url(base_url: str, stored: Stored) -> str:
    """The fullUrl of a stored resource."""
    return f"{base_url}/{stored.resource_type}/{stored.id}"


def history_entry(base_url: str, stored: Stored) -> Entry:
    """A history Bundle entry for one version (request + response parts per R4)."""
    url = resource_url(base_url, stored)
    method = stored.method
    request_url = (
        stored.resource_type if method == "POST" else f"{stored.resource_type}/{stored.id}"
    )
    status = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}.get(
        method, "200 OK"
    )
    return Entry(
        full_url=url,
        raw=stored.raw,
        request={"method": method, "url": request_url},
        response={
            "status": status,
            "etag": stored.etag(),
            "lastModified": format_instant(stored.last_updated),
        },
    )
