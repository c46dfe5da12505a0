"""Two processes' audit writers on one trail: the chain stays whole, and a process that
appends now and then gets its records in while another appends all the time (after they
have met, each batch takes the head document from its first statement to its commit and
a busy writer leaves a moment between batches: storage/audit_log.py); and a record that
cannot be built fails only its own request."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from fhirserver.audit.chain import opener, verify_records
from fhirserver.audit.writer import AuditWriteFailed, AuditWriter
from fhirserver.context import full_indexer
from fhirserver.metrics import REGISTRY
from fhirserver.storage.audit_log import AuditLog
from fhirserver.storage.embedded import EmbeddedServers
from fhirserver.storage.migrations import apply_migrations
from fhirserver.storage.mongo import Mongo

Doc = dict[str, Any]
HAMMERS = 32


def event(who: str, i: int) -> dict[str, Any]:
    """A minimal AuditEvent body."""
    return {
        "resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
        "recorded": "2026-11-24T00:00:00Z",
        "agent": [{"who": {"display": f"{who}-{i}"}, "requestor": True}],
        "source": {"observer": {"display": who}},
    }


async def busy_process(uri: str, db: str, stop: threading.Event, started: threading.Event,
                       count: list[int]) -> None:
    """A process appending all the time: HAMMERS requests in a loop, each awaiting its
    record."""
    mongo = Mongo(uri, db)
    writer = AuditWriter(AuditLog(mongo, full_indexer, None))
    writer.start()

    async def hammer(k: int) -> None:
        i = 0
        while not stop.is_set():
            await writer.record(event(f"busy{k}", i))
            count[0] += 1
            started.set()
            i += 1

    try:
        await asyncio.gather(*(hammer(k) for k in range(HAMMERS)))
    finally:
        await writer.stop()
        await mongo.close()


async def test_an_occasional_appender_is_not_starved_by_a_busy_one(
    embedded: EmbeddedServers, mongo_db: AsyncDatabase[Doc]
) -> None:
    """The busy process runs in a thread with its own event loop, as another server would;
    the occasional one appends from here while it runs."""
    assert embedded.mongodb_uri
    await apply_migrations(mongo_db)
    stop, started, count = threading.Event(), threading.Event(), [0]
    busy = threading.Thread(target=lambda: asyncio.run(
        busy_process(embedded.mongodb_uri or "", mongo_db.name, stop, started, count)))
    busy.start()
    mongo = Mongo(embedded.mongodb_uri, mongo_db.name)
    log = AuditLog(mongo, full_indexer, None)
    occasional = AuditWriter(log)
    occasional.start()
    try:
        assert await asyncio.to_thread(started.wait, 30)  # the busy process is appending
        seqs = [await occasional.record(event("occasional", i)) for i in range(15)]
        # Not a latency figure: the occasional writer finished while the busy one still
        # ran (a starved one would have waited for it to stop, and the test for its
        # timeout).
        assert busy.is_alive()
    finally:
        stop.set()
        await asyncio.to_thread(busy.join)
        await occasional.stop()
    assert len(set(seqs)) == 15 and count[0] > 15
    result = await verify_records(log.records(), opener(None), await log.recorded_head())
    assert result.ok, result.message()
    assert result.count == count[0] + 15
    await mongo.close()


async def test_an_event_that_cannot_be_recorded_fails_only_its_own_request(
    mongo_db: AsyncDatabase[Doc], embedded: EmbeddedServers
) -> None:
    """Each record is built when its request queues it, so one that cannot be built (here
    a value with no JSON form) fails that request alone, never the batch it would join."""
    assert embedded.mongodb_uri
    await apply_migrations(mongo_db)
    mongo = Mongo(embedded.mongodb_uri, mongo_db.name)
    log = AuditLog(mongo, full_indexer, None)
    writer = AuditWriter(log)
    writer.start()
    broken = {**event("broken", 0), "extension": [object()]}
    recorded = REGISTRY.get_sample_value(
        "fhirserver_group_commit_batch_size_sum", {"queue": "audit"}) or 0.0
    try:
        results = await asyncio.gather(
            *(writer.record(event("fine", i)) for i in range(10)),
            writer.record(broken),
            *(writer.record(event("fine", i)) for i in range(10, 20)),
            return_exceptions=True,
        )
    finally:
        await writer.stop()
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], AuditWriteFailed)
    assert sorted(r for r in results if isinstance(r, int)) == list(range(1, 21))
    # the batch metrics count what reached the queue: the 20, not the one never built
    assert REGISTRY.get_sample_value(
        "fhirserver_group_commit_batch_size_sum", {"queue": "audit"}) == recorded + 20
    result = await verify_records(log.records(), opener(None), await log.recorded_head())
    assert result.ok and result.count == 20, result.message()
    await mongo.close()
