"""Mongo.transaction on the embedded store: a rerun requested from inside starts over in a
new transaction, keeps its run state, and nothing of the aborted run commits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhirserver.storage.embedded import EmbeddedServers
from fhirserver.storage.mongo import Mongo, RerunTransaction

Doc = dict[str, Any]


@pytest.fixture
async def mongo(embedded: EmbeddedServers, mongo_db: AsyncDatabase[Doc]) -> AsyncIterator[Mongo]:
    assert embedded.mongodb_uri
    m = Mongo(embedded.mongodb_uri, mongo_db.name)
    yield m
    await m.close()


async def test_a_rerun_starts_over_and_keeps_its_run_state(mongo: Mongo) -> None:
    runs: list[int] = []
    committed: list[int] = []

    async def fn(session: AsyncClientSession) -> str:
        run = mongo.run_state(session)
        run["n"] = n = run.get("n", 0) + 1
        runs.append(n)
        assert mongo.attempt_state(session) == {}  # each run's attempt starts empty
        mongo.attempt_state(session)["mine"] = n
        await mongo.db["things"].insert_one({"run": n}, session=session)

        async def done() -> None:
            committed.append(n)

        mongo.after_commit(session, done)
        if n < 2:
            raise RerunTransaction
        return "ok"

    assert await mongo.transaction(fn) == "ok"
    assert runs == [1, 2] and committed == [2]
    assert [d["run"] async for d in mongo.db["things"].find()] == [2]  # run 1 aborted


async def test_reruns_are_bounded(mongo: Mongo) -> None:
    runs: list[int] = []

    async def fn(session: AsyncClientSession) -> None:
        runs.append(1)
        await mongo.db["other"].insert_one({}, session=session)
        raise RerunTransaction

    with pytest.raises(RerunTransaction):
        await mongo.transaction(fn)
    assert len(runs) == 3
    assert await mongo.db["other"].count_documents({}) == 0
