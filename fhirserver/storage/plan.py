"""Filters shaped so the embedded store can answer them from an index.

SecantusDB looks for an index only when the top level of a filter holds nothing but field
conditions: one `$and`, `$or` or `$nor` there and it decodes the whole collection (a page of
one patient's Appointments among 20,000 took 500 ms instead of 3). A FHIR search is a
conjunction of parameters, and a date prefix or a comma list is an `$or`, so most searches
of two parameters or more had that shape.

`split` therefore takes a filter apart into

- `indexed`: the plain field conditions of the conjunction, merged into one document
  (nested `$and`s flattened; two range conditions on one field joined; a one-value `$in`
  made an equality) and ordered so the most selective comes first, since the store uses the
  first field that has an index;
- `rest`: every other clause (`$or`, `$nor`, a second condition on a field that does not
  merge).

The store then runs `indexed` as the first `$match` of an aggregation, which rides an
index, and `rest` as the second. The answer is the same conjunction: mongod, which plans
either form itself, answers it alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Doc = dict[str, Any]

# Operators that test each array element on their own, so that two of them on one field
# may share one document: {f: {$gte: a}} and {f: {$lt: b}} is {f: {$gte: a, $lt: b}}.
_MERGEABLE = frozenset({"$gt", "$gte", "$lt", "$lte", "$ne", "$in", "$nin", "$exists", "$eq"})
_RANGE = frozenset({"$gt", "$gte", "$lt", "$lte"})


@dataclass(frozen=True)
class Split:
    """A filter as its indexable conjunction and the clauses that remain."""

    indexed: Doc = field(default_factory=dict)
    rest: tuple[Doc, ...] = ()

    def whole(self) -> Doc:
        """The same filter as one document."""
        if not self.rest:
            return dict(self.indexed)
        clauses = [self.indexed, *self.rest] if self.indexed else list(self.rest)
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    def stages(self) -> list[Doc]:
        """`$match` stages of an aggregation answering the filter, the indexable one first."""
        out: list[Doc] = [{"$match": self.indexed}] if self.indexed else []
        if self.rest:
            rest = self.rest[0] if len(self.rest) == 1 else {"$and": list(self.rest)}
            out.append({"$match": rest})
        return out or [{"$match": {}}]

    @property
    def needs_stages(self) -> bool:
        """True when the filter has an indexable part and a rest (one find cannot use an
        index for it on SecantusDB)."""
        return bool(self.indexed) and bool(self.rest)


def split(query: Mapping[str, Any]) -> Split:
    """`query` as indexable conjunction and rest (see the module docstring)."""
    fields: Doc = {}
    rest: list[Doc] = []

    def add(clause: Mapping[str, Any]) -> None:
        for key, cond in clause.items():
            if key == "$and" and isinstance(cond, Sequence):
                for sub in cond:
                    add(sub)
            elif key.startswith("$"):
                rest.append({key: cond})
            elif key not in fields:
                fields[key] = _simplified(cond)
            else:
                merged = _merge(fields[key], _simplified(cond))
                if merged is None:
                    rest.append({key: cond})
                else:
                    fields[key] = merged

    add(query)
    ordered = dict(sorted(fields.items(), key=lambda kv: _rank(*kv)))
    return Split(ordered, tuple(rest))


def _is_operators(cond: Any) -> bool:
    return isinstance(cond, Mapping) and bool(cond) and all(
        isinstance(k, str) and k.startswith("$") for k in cond)


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def _simplified(cond: Any) -> Any:
    """A one-value `$in` of a scalar as the equality it is (compound indexes plan those)."""
    if _is_operators(cond) and set(cond) == {"$in"}:
        values = cond["$in"]
        if isinstance(values, list) and len(values) == 1 and _scalar(values[0]) \
                and values[0] is not None:
            return values[0]
    return cond


def _merge(a: Any, b: Any) -> Any | None:
    """One condition equal to `a` and `b` together; None when they do not combine."""
    if a == b:
        return a
    if not (_is_operators(a) and _is_operators(b)):
        return None
    if set(a) & set(b) or not set(a) | set(b) <= _MERGEABLE:
        return None
    return {**a, **b}


def _rank(key: str, cond: Any) -> int:
    """Most selective first: `_id`, then references, other equalities, ranges, the rest."""
    values: list[Any] = []
    if _is_operators(cond):
        if set(cond) == {"$in"} and isinstance(cond["$in"], list):
            values = cond["$in"]
        elif set(cond) <= _RANGE:
            return 3
        else:
            return 4
    else:
        values = [cond]
    if key == "_id":
        return 0
    if values and all(isinstance(v, str) and "/" in v for v in values):
        return 1  # "Type/id": one resource's worth of matches
    return 2
