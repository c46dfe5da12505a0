"""Which resources of one type a caller may see, as a MongoDB filter and as a predicate.

A Visibility is a list of alternatives `(field, allowed values)`: a resource is visible
when, for some alternative, one of its values of that field is allowed. Fields are `_id`
or `idx.<search parameter>` (docs/search-index.md), so the same rule filters a search in
MongoDB and checks a single stored document in Python, and the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Doc = dict[str, Any]


@dataclass(frozen=True)
class Visibility:
    """Resources visible through any of the alternatives; no alternatives: none at all."""

    alternatives: tuple[tuple[str, frozenset[str]], ...] = ()

    @classmethod
    def where(cls, *alternatives: tuple[str, Iterable[str]]) -> Visibility:
        """Build from `(field, values)` pairs; empty value sets are dropped."""
        alts = tuple((f, frozenset(v)) for f, v in alternatives)
        return cls(tuple((f, v) for f, v in alts if v))

    def union(self, other: Visibility) -> Visibility:
        """Visible through either."""
        return Visibility(self.alternatives + other.alternatives)

    @property
    def nothing(self) -> bool:
        """True when no resource is visible."""
        return not self.alternatives

    def mongo_filter(self) -> Doc:
        """The filter selecting exactly the visible resources."""
        clauses: list[Doc] = [
            {f: next(iter(v))} if len(v) == 1 else {f: {"$in": sorted(v)}}
            for f, v in self.alternatives
        ]
        if not clauses:
            return {"_id": {"$in": []}}
        return clauses[0] if len(clauses) == 1 else {"$or": clauses}

    def matches(self, doc: Mapping[str, Any]) -> bool:
        """True when a stored document (with `_id` and `idx`) is visible."""
        idx = doc.get("idx") or {}
        for fld, allowed in self.alternatives:
            if fld == "_id":
                values: Iterable[Any] = [doc.get("_id")]
            else:
                values = idx.get(fld.removeprefix("idx."), [])
            if any(isinstance(v, str) and v in allowed for v in values):
                return True
        return False


def and_filters(*filters: Doc | None) -> Doc:
    """The conjunction of MongoDB filters (None and {} mean no condition).

    Disjoint plain filters are merged into one document rather than `$and`: SecantusDB
    plans index use only for filters without top-level operators.
    """
    parts = [f for f in filters if f]
    if not parts:
        return {}
    if len(parts) == 1:
        return parts[0]
    merged: Doc = {}
    for part in parts:
        if any(k.startswith("$") or k in merged for k in part):
            return {"$and": parts}
        merged.update(part)
    return merged
