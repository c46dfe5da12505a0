"""Keyset paging: links that stay correct while data changes.

A page link carries the sort key of the last (next) or first (previous) entry it
follows, never an offset; an insert or delete elsewhere cannot make a page repeat or
skip a resource that existed throughout.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from fhirserver.fhir.errors import BadRequest

Doc = dict[str, Any]


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: after (`forward`) or before the given sort-key values."""

    values: list[Any]
    forward: bool


def sort_values(doc: Mapping[str, Any], sort: list[tuple[str, int]]) -> list[Any]:
    """The values of the sort fields in one stored document."""
    values: list[Any] = []
    for field, _ in sort:
        if field.startswith("srt."):
            values.append((doc.get("srt") or {}).get(field[4:], ""))
        else:
            values.append(doc.get(field))
    return values


def encode_cursor(values: list[Any], forward: bool) -> str:
    """An opaque URL-safe cursor token."""
    enc = [{"d": v.isoformat()} if isinstance(v, datetime) else v for v in values]
    payload = orjson.dumps({"k": enc, "f": forward})
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_cursor(token: str) -> Cursor:
    """Parse a cursor token; BadRequest if it was tampered with or truncated."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded))
        if not isinstance(data["k"], list):  # a string would iterate as characters
            raise TypeError("cursor key is not a list")
        values = [datetime.fromisoformat(v["d"]) if isinstance(v, dict) else v for v in data["k"]]
        return Cursor(values=values, forward=bool(data["f"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRequest("_cursor is not a valid paging cursor") from exc


def keyset_filter(sort: list[tuple[str, int]], cursor: Cursor) -> Doc:
    """Filter for the documents strictly after (or before) the cursor in sort order.

    With sort [(a, 1), (_id, 1)] and cursor (va, vid) going forward this is
    `a > va OR (a == va AND _id > vid)`.

    BadRequest when the cursor does not hold one value per sort key (a token from another
    search, or one made up by the client).
    """
    if len(cursor.values) != len(sort):
        raise BadRequest("_cursor is not a valid paging cursor for this search")
    clauses: list[Doc] = []
    for i, (field, direction) in enumerate(sort):
        ascending = (direction > 0) == cursor.forward
        clause: Doc = {f: v for (f, _), v in zip(sort[:i], cursor.values[:i], strict=True)}
        clause[field] = {"$gt" if ascending else "$lt": cursor.values[i]}
        clauses.append(clause)
    return {"$or": clauses}


def reverse_sort(sort: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The same keys, opposite directions (to read a previous page)."""
    return [(f, -d) for f, d in sort]
