"""storage/plan.py: a split filter selects exactly what the filter selects, on the store."""

from __future__ import annotations

import random
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from fhirserver.storage.plan import split

Doc = dict[str, Any]


def test_a_conjunction_is_flattened_merged_and_ordered() -> None:
    query = {"$and": [
        {"idx.status.c": "booked"},
        {"$and": [{"idx.patient": {"$in": ["Patient/1"]}}, {"idx.date.lo": {"$gte": 3}}]},
        {"idx.date.lo": {"$lt": 9}},
        {"$or": [{"a": 1}, {"b": 2}]},
        {"idx.status.c": {"$elemMatch": {"x": 1}}},
    ]}
    planned = split(query)
    assert planned.indexed == {"idx.patient": "Patient/1", "idx.status.c": "booked",
                               "idx.date.lo": {"$gte": 3, "$lt": 9}}
    assert list(planned.indexed) == ["idx.patient", "idx.status.c", "idx.date.lo"]
    assert planned.rest == ({"$or": [{"a": 1}, {"b": 2}]},
                            {"idx.status.c": {"$elemMatch": {"x": 1}}})
    assert planned.needs_stages
    assert not split({"a": 1, "b": {"$gt": 2}}).needs_stages
    assert split({}).whole() == {}


def _clause(rng: random.Random, depth: int = 0) -> Doc:
    f = rng.choice(["a", "b", "c.x", "c.y", "d"])
    kind = rng.randrange(8 if depth < 2 else 5)
    if kind == 0:
        return {f: rng.randrange(5)}
    if kind == 1:
        return {f: {"$in": rng.sample(range(5), rng.randint(1, 3))}}
    if kind == 2:
        return {f: {rng.choice(["$gt", "$gte", "$lt", "$lte"]): rng.randrange(5)}}
    if kind == 3:
        return {f: {"$exists": rng.random() < 0.5}}
    if kind == 4:
        return {f: {"$ne": rng.randrange(5)}}
    if kind == 5:
        return {"$or": [_clause(rng, depth + 1) for _ in range(2)]}
    if kind == 6:
        return {"$and": [_clause(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    return {"c": {"$elemMatch": {"x": {"$gte": rng.randrange(5)}, "y": rng.randrange(5)}}}


def _doc(rng: random.Random, i: int) -> Doc:
    doc: Doc = {"_id": i}
    for f in ("a", "b", "d"):
        if rng.random() < 0.8:
            doc[f] = ([rng.randrange(5) for _ in range(rng.randint(0, 3))]
                      if rng.random() < 0.5 else rng.randrange(5))
    if rng.random() < 0.8:
        doc["c"] = [{"x": rng.randrange(5), "y": rng.randrange(5)}
                    for _ in range(rng.randint(0, 3))]
    return doc


async def test_split_filters_select_what_the_filter_selects(
    mongo_db: AsyncDatabase[Doc],
) -> None:
    rng = random.Random(2611)
    coll = mongo_db["things"]
    await coll.insert_many([_doc(rng, i) for i in range(120)])
    for f in ("a", "b", "c.x", "d"):
        await coll.create_index([(f, 1)])
    for _ in range(150):
        query = {"$and": [_clause(rng) for _ in range(rng.randint(1, 4))]}
        expected = sorted([d["_id"] async for d in coll.find(query, {"_id": 1})])
        planned = split(query)
        whole = sorted([d["_id"] async for d in coll.find(planned.whole(), {"_id": 1})])
        staged = sorted([d["_id"] async for d in await coll.aggregate(
            [*planned.stages(), {"$project": {"_id": 1}}])])
        assert whole == expected, query
        assert staged == expected, query
