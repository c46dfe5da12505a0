"""The running server's parts, built once in the lifespan and shared by handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis

from fhirserver.access.current import check_write_hook
from fhirserver.audit.writer import AuditWriter
from fhirserver.auth.service import AuthService
from fhirserver.config import Settings
from fhirserver.fhir.combiner import CreateCombiner
from fhirserver.fhir.indexing import extract_index
from fhirserver.fhir.searching import Searcher, SearchLimits
from fhirserver.fhir.searchparams import SEARCH_PARAMS
from fhirserver.fhir.service import FhirService
from fhirserver.phi.codec import PhiCodec
from fhirserver.phi.rotation import reseal_all, sealed_under
from fhirserver.scheduling.availability import Interval
from fhirserver.scheduling.booking import BookingGuard
from fhirserver.scheduling.clock import Clock, SystemClock
from fhirserver.scheduling.finder import Finder
from fhirserver.scheduling.index import IndexService
from fhirserver.scheduling.operations import SchedulingOperations
from fhirserver.scheduling.publish import Publisher
from fhirserver.scheduling.repository import SchedulingRepository
from fhirserver.scheduling.rule_checks import RuleChecks
from fhirserver.scheduling.slots import GeneratedSlots
from fhirserver.storage.audit_log import AuditLog
from fhirserver.storage.claims import ClaimsRepository
from fhirserver.storage.embedded import EmbeddedServers
from fhirserver.storage.idempotency import IdempotencyStore
from fhirserver.storage.migrations import apply_migrations
from fhirserver.storage.mongo import Mongo
from fhirserver.storage.query_cache import (
    Generations,
    LocalGenerations,
    QueryCache,
    RedisGenerations,
)
from fhirserver.storage.resources import ResourceStore

log = logging.getLogger(__name__)


def full_indexer(resource: Any) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """Extract search values; every sortable param gets a sort key ("" when absent).

    Keyset paging compares sort keys; a key that is missing on some documents would
    sort apart from "" and make pages skip or repeat.
    """
    idx, srt = extract_index(resource)
    for name in SEARCH_PARAMS.get(resource["resourceType"], {}):
        srt.setdefault(name, "")
    return idx, srt


def generations_for(settings: Settings, redis: aioredis.Redis) -> Generations:
    """Where the query cache's generation counters live (storage/query_cache.py): in this
    process for the embedded store, whose only FhirService is this process's (a second
    server on the data dir fails fast); in Redis, shared by a cluster, otherwise."""
    if settings.mongodb_uri is None:
        return LocalGenerations()
    return RedisGenerations(redis, f"fhirserver:{settings.db_name}:query")


@dataclass
class AppContext:
    """Everything a request handler may need."""

    settings: Settings
    mongo: Mongo
    redis: aioredis.Redis
    store: ResourceStore
    service: FhirService
    searcher: Searcher
    claims: ClaimsRepository
    scheduling: SchedulingOperations
    generated_slots: GeneratedSlots
    publisher: Publisher
    clock: Clock
    embedded: EmbeddedServers | None = None
    # The SMART authorization server (sync clients of its own: see fhirserver/auth/store.py).
    auth: AuthService | None = None
    # The availability index ($find's read model; None when turned off).
    availability: IndexService | None = None
    # The audit trail's group-commit writer (docs/audit.md).
    audit: AuditWriter | None = None
    # PHI at rest (docs/phi.md): sealing, blind index, keyring.
    phi: PhiCodec | None = None
    # Background re-seal of records not under the active key (phi_seal_on_start).
    seal_task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, settings: Settings, clock: Clock | None = None) -> AppContext:
        """Start embedded servers if needed, connect, migrate, wire the domain."""
        clock = clock or SystemClock()
        embedded: EmbeddedServers | None = None
        mongo_uri, redis_url = settings.mongodb_uri, settings.redis_url
        if mongo_uri is None or redis_url is None:
            embedded = EmbeddedServers(
                settings.data_dir,
                with_mongo=mongo_uri is None,
                with_redis=redis_url is None,
                cache_size=settings.embedded_cache_size,
                in_process=settings.embedded_store_in_process,
            )
            embedded.start()
            mongo_uri = mongo_uri or embedded.mongodb_uri
            redis_url = redis_url or embedded.redis_url
        assert mongo_uri and redis_url
        mongo = Mongo(mongo_uri, settings.db_name)
        await apply_migrations(mongo.db)
        redis = aioredis.Redis.from_url(redis_url)
        phi = PhiCodec.from_settings(settings)
        store = ResourceStore(mongo.db, full_indexer, phi)
        service = FhirService(mongo, store)
        if settings.query_cache_mb > 0:
            store.cache = QueryCache(
                generations_for(settings, redis),
                max_bytes=settings.query_cache_mb * 1024 * 1024,
                ttl_seconds=settings.query_cache_ttl_seconds,
            )
        claims = ClaimsRepository(mongo.db)
        granule = settings.claim_granule_minutes
        # The access policy sees every write first (REST, transaction entries, $hold, $book).
        service.add_write_hook(check_write_hook)
        # Every Appointment write passes the claims guard inside its own transaction.
        guard = BookingGuard(store, claims, clock, mongo, granule_minutes=granule)
        service.add_write_hook(guard.on_write)
        # Rules, free Slots and visit durations are checked against operating hours (422).
        service.add_write_hook(RuleChecks(store).on_write)
        if store.cache is not None:  # cached answers over a written type retire at commit
            service.add_write_hook(store.cache.write_hook(mongo))
        searcher = Searcher(
            store,
            SearchLimits(
                default_count=settings.default_page_size,
                max_count=settings.max_page_size,
                max_include=settings.max_include,
                max_chain_ids=settings.max_chain_ids,
            ),
        )

        async def busy(resources: list[str], window: Interval) -> list[Interval]:
            spans = await claims.busy(
                resources,
                window.start,
                window.end,
                now=clock.now(),
                granule=timedelta(minutes=granule),
            )
            return [Interval(s, e) for s, e in spans]

        repo = SchedulingRepository(store, searcher)
        availability: IndexService | None = None
        if settings.availability_index:
            availability = IndexService(mongo, store, redis, clock, granule, cipher=phi.cipher)
            availability.install(service)  # after the guard: applies committed changes only
            await availability.start()
        finder = Finder(repo, busy, availability)
        generated = GeneratedSlots(repo, claims, busy, granule)
        scheduling = SchedulingOperations(
            service, finder, IdempotencyStore(mongo.db, phi.cipher), clock, settings.base_url()
        )
        publisher = Publisher(repo, generated, settings.base_url())
        auth = await asyncio.to_thread(
            AuthService.start, settings, mongo_uri, redis_url, clock, phi.cipher
        )
        audit = AuditWriter(AuditLog(mongo, full_indexer, phi.cipher))
        audit.start()
        if settings.combine_creates:
            service.combiner = CreateCombiner(mongo, store, service.create_in)
            service.combiner.start()
        ctx = cls(
            settings, mongo, redis, store, service, searcher, claims, scheduling, generated,
            publisher, clock, embedded, auth, availability, audit, phi,
        )
        if settings.phi_seal_on_start:
            ctx.seal_task = asyncio.create_task(ctx._seal_leftovers())
        return ctx

    async def _seal_leftovers(self) -> None:
        """Seal plaintext from before encryption (and records under an old key) in the
        background, unless the last complete pass left everything under the active key."""
        assert self.phi is not None
        try:
            if await sealed_under(self.mongo.db) == self.phi.cipher.active_kid:
                return
            stats = await reseal_all(self.mongo.db, self.phi, self.store.indexer)
            if stats.total:
                log.info("sealed %d PHI records under %s", stats.total, stats.kid)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sealing PHI records under the active key failed; "
                          "run `fhirserver keys rotate --reseal-only`")

    async def stop(self) -> None:
        """Close connections, then stop embedded servers (flushing data)."""
        if self.seal_task is not None:
            self.seal_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.seal_task
        if self.service.combiner is not None:
            await self.service.combiner.stop()
        if self.audit is not None:
            await self.audit.stop()
        if self.availability is not None:
            await self.availability.stop()
        if self.auth is not None:
            self.auth.close()
        await self.redis.aclose()
        await self.mongo.close()
        if self.embedded is not None:
            self.embedded.stop()
