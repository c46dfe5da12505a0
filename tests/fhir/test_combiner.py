"""Group commit of plain creates (fhir/combiner.py) on a real AppContext: creates queued
together commit in one transaction, and each member still meets exactly its own outcome.

`asyncio.gather` queues every create before the combiner's task wakes, so these batches
are deterministic; over HTTP the same happens whenever requests overlap."""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
import pytest

from fhirserver.config import Settings
from fhirserver.context import AppContext
from fhirserver.fhir.errors import Unprocessable
from fhirserver.fhir.search import parse_search
from fhirserver.fhir.service import WriteResult, conditional_key
from fhirserver.fhir.validation import validate_resource
from fhirserver.metrics import REGISTRY
from fhirserver.storage.embedded import EmbeddedServers
from tests.api.factories import patient, uid
from tests.api.scheduling_factories import hospital, rule

VISIT = "http://fhirserver.dev/CodeSystem/visit-type"
DURATION = "http://fhirserver.dev/StructureDefinition/visit-duration"
REQUEST_TAG: contextvars.ContextVar[str | None] = contextvars.ContextVar("tag", default=None)


@pytest.fixture
async def ctx(embedded: EmbeddedServers) -> AsyncIterator[AppContext]:
    settings = Settings(mongodb_uri=embedded.mongodb_uri, redis_url=embedded.redis_url,
                        db_name=f"cc_{uuid.uuid4().hex[:10]}", demo=False)
    c = await AppContext.start(settings)
    assert c.service.combiner is not None
    yield c
    await c.mongo.client.drop_database(c.settings.db_name)
    await c.stop()


def metric(name: str) -> float:
    """The create queue's current value of the group-commit metric `name`."""
    return REGISTRY.get_sample_value(name, {"queue": "create"}) or 0.0


def schedule(location_id: str, start: str, end: str) -> dict[str, Any]:
    """A Schedule with one every-day rule at a Location."""
    return {"resourceType": "Schedule", "active": True,
            "actor": [{"reference": f"Location/{location_id}"}],
            "extension": [rule(location_id, start, end)]}


def bad_service(name: str) -> dict[str, Any]:
    """A HealthcareService whose visit duration the write hooks refuse (422)."""
    duration = [{"url": "visitType", "valueCoding": {"system": VISIT, "code": "FOLLOW_UP"}},
                {"url": "minutes", "valueInteger": 0}]
    return {"resourceType": "HealthcareService", "name": name,
            "extension": [{"url": DURATION, "extension": duration}]}


async def test_concurrent_creates_commit_in_one_transaction(ctx: AppContext) -> None:
    combiner = ctx.service.combiner
    assert combiner is not None
    family = f"Batch{uid()}"
    batches = combiner.batches
    observed = (metric("fhirserver_group_commit_batch_size_count"),
                metric("fhirserver_group_commit_batch_size_sum"))
    results = await asyncio.gather(
        *(ctx.service.create("Patient", patient(family)) for _ in range(20))
    )
    assert combiner.batches == batches + 1 and combiner.combined >= 20
    # /metrics shows the batch: one more, of 20
    assert metric("fhirserver_group_commit_batch_size_count") == observed[0] + 1
    assert metric("fhirserver_group_commit_batch_size_sum") == observed[1] + 20
    assert combiner.deferred == 1  # Patients only: one insert per collection
    ids = {r.stored.id for r in results}
    assert len(ids) == 20 and all(r.status == 201 for r in results)
    for r in results:
        read = await ctx.store.read("Patient", r.stored.id)
        assert read.version == 1 and read.raw == r.stored.raw
        assert [h.version for h in await ctx.store.history(
            "Patient", r.stored.id, since=None, at=None, limit=10)] == [1]


async def test_a_failing_member_fails_alone_and_writes_nothing(ctx: AppContext) -> None:
    combiner = ctx.service.combiner
    assert combiner is not None
    bad = f"Refused {uid()}"
    batches = combiner.batches
    calls = [ctx.service.create("Patient", patient(f"Ok{uid()}")) for _ in range(6)]
    calls.insert(2, ctx.service.create("HealthcareService", bad_service(bad)))
    calls.append(ctx.service.create("HealthcareService", bad_service(bad)))
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert combiner.batches == batches + 1  # one batch, which failed and ran alone
    refused = [r for r in results if isinstance(r, Unprocessable)]
    created = [r for r in results if isinstance(r, WriteResult)]
    assert len(refused) == 2 and len(created) == 6
    assert isinstance(results[2], Unprocessable) and isinstance(results[-1], Unprocessable)
    for r in created:
        assert (await ctx.store.read("Patient", r.stored.id)).version == 1
    services = await ctx.store.find("HealthcareService", {}, projection={"raw": 1})
    assert not [s for s in services if orjson.loads(s["raw"]).get("name") == bad]


async def test_a_mixed_batch_writes_as_it_goes(ctx: AppContext) -> None:
    """Types outside DEFERRABLE write at once inside the batch's transaction: a Schedule's
    rule check reads its Location there, and a refused Schedule fails alone."""
    combiner = ctx.service.combiner
    assert combiner is not None
    loc = await ctx.service.create("Location", hospital())
    batches, deferred = combiner.batches, combiner.deferred
    results = await asyncio.gather(
        ctx.service.create("Location", hospital()),
        ctx.service.create("Schedule", schedule(loc.stored.id, "09:00:00", "12:00:00")),
        ctx.service.create("Schedule", schedule(loc.stored.id, "21:00:00", "23:30:00")),
        ctx.service.create("Patient", patient()),
        return_exceptions=True,
    )
    assert combiner.batches == batches + 1 and combiner.deferred == deferred
    assert [type(r) for r in results] == [WriteResult, WriteResult, Unprocessable, WriteResult]
    assert "22:00-23:30 lies outside the operating hours" in str(results[2])
    for r in results:
        if isinstance(r, WriteResult):
            assert (await ctx.store.read(r.stored.resource_type, r.stored.id)).version == 1


async def test_each_member_runs_in_its_own_request_context(ctx: AppContext) -> None:
    """The write hooks see the context of the request that made each create (the access
    policy is a context variable), not the combiner task's."""
    seen: dict[str, str | None] = {}

    async def record(rtype: str, old: Mapping[str, Any] | None,
                     new: Mapping[str, Any] | None, _session: Any) -> None:
        if rtype == "Patient" and new is not None:
            seen[new["name"][0]["family"]] = REQUEST_TAG.get()

    ctx.service.add_write_hook(record)

    async def request(i: int) -> WriteResult:
        REQUEST_TAG.set(f"request-{i}")
        return await ctx.service.create("Patient", patient(f"Ctx{i}"))

    await asyncio.gather(*(request(i) for i in range(8)))
    assert seen == {f"Ctx{i}": f"request-{i}" for i in range(8)}
    assert REQUEST_TAG.get() is None


async def test_appointments_and_conditional_creates_are_never_combined(
    ctx: AppContext,
) -> None:
    combiner = ctx.service.combiner
    assert combiner is not None
    batches = combiner.batches
    for _ in range(10):
        # The conditional create's own race: a loser learns of the winner from the key
        # before the winner is answered, so its match must not come from the query cache.
        mrn = f"MRN{uid()}"
        body = {**patient(), "identifier": [{"system": "urn:mrn", "value": mrn}]}
        criteria = [("identifier", f"urn:mrn|{mrn}")]
        assert await ctx.service.match("Patient", criteria) == []  # cached: nothing yet
        results = await asyncio.gather(*(
            ctx.service.create("Patient", body, if_none_exist=criteria) for _ in range(5)
        ))
        assert len({r.stored.id for r in results}) == 1
        assert sorted(r.status for r in results) == [200, 200, 200, 200, 201]
    appointment = {"resourceType": "Appointment", "status": "proposed",
                   "participant": [{"actor": {"reference": "Patient/x"}, "status": "needs-action"}]}
    await ctx.service.create("Appointment", appointment)
    assert combiner.batches == batches


async def test_a_conditional_create_finds_a_commit_not_yet_answered(ctx: AppContext) -> None:
    """Between a create's commit and its cache bump (its response not yet sent), a
    conditional create that collides with its key must find it: its match is never served
    from the query cache."""
    mrn = f"MRN{uid()}"
    body = {**patient(), "identifier": [{"system": "urn:mrn", "value": mrn}]}
    criteria = [("identifier", f"urn:mrn|{mrn}")]
    spec = parse_search("Patient", criteria, strict=True, blind=ctx.store.blind)
    limit = ctx.service.max_conditional + 1
    # the query cache now holds "no match" for exactly the conditional match's query
    assert await ctx.store.find("Patient", spec.filter, projection={"_id": 1},
                                limit=limit) == []
    key = conditional_key("Patient", criteria, ctx.store.blind)
    resource = validate_resource(body, "Patient")
    # committed straight through the store: no write hook, so no bump yet
    first = await ctx.mongo.transaction(
        lambda s: ctx.store.create(resource, s, conditional_key=key))
    again = await ctx.service.create("Patient", body, if_none_exist=criteria)
    assert again.status == 200 and again.stored.id == first.id
