"""Keeping the availability index in step with the database, in every server process.

- **Build**: at start-up, from MongoDB (Locations, PractitionerRoles, Practitioners,
  Schedules, Slots, claims) into a fresh `AvailabilityIndex`, then swapped in.
- **In-process**: a FhirService write hook records every committed change of an
  Appointment, Schedule, Slot, Location, PractitionerRole or Practitioner (old and new
  JSON) per transaction; when the transaction commits (the wrapper around
  `Mongo.transaction`), the changes are applied to the index before the write returns,
  so the writer's next $find already sees them. Aborted or retried attempts apply nothing.
- **Across processes**: each applied change is appended to a Redis stream with a sequence
  number (one Lua call: INCR + XADD). Every process reads the stream and applies the
  others' changes; a sequence gap (stream trimmed past us, a lost event) triggers a full
  rebuild.

The index is a read model: $book never trusts it (the claims index decides).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from pymongo.asynchronous.client_session import AsyncClientSession

from fhirserver.fhir.service import FhirService
from fhirserver.phi.cipher import RecordCipher, TamperedRecord
from fhirserver.phi.keyring import KeyringError
from fhirserver.scheduling.clock import Clock
from fhirserver.scheduling.criteria import FindCriteria
from fhirserver.scheduling.finder import Proposal
from fhirserver.scheduling.hours import ref_id
from fhirserver.scheduling.index.core import DAY, AvailabilityIndex
from fhirserver.storage.claims import CLAIMS, aware
from fhirserver.storage.mongo import Mongo
from fhirserver.storage.resources import ResourceStore

log = logging.getLogger(__name__)
Json = dict[str, Any]
T = TypeVar("T")
TRACKED = frozenset({"Appointment", "Schedule", "Slot", "Location", "PractitionerRole",
                     "Practitioner"})
STREAM = "fhirserver:availability:events"
SEQ = "fhirserver:availability:seq"
MAXLEN = 100_000
_PUBLISH = """
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 's', seq, 'e', ARGV[1])
return seq
"""


class IndexService:
    """Owns the process's availability index: build, in-process updates, Redis sync."""

    def __init__(self, mongo: Mongo, store: ResourceStore, redis: aioredis.Redis,
                 clock: Clock, granule_minutes: int, coverage_days: int = 100,
                 *, cipher: RecordCipher | None = None) -> None:
        self.mongo = mongo
        # Stream events carry whole Appointments (PHI): sealed when a cipher is given.
        self.cipher = cipher
        self.store = store
        self.redis = redis
        self.clock = clock
        self.granule_minutes = granule_minutes
        self.coverage_days = coverage_days
        self.index: AvailabilityIndex | None = None
        self.origin = uuid.uuid4().hex
        self.last_seq = 0
        self.last_id = "0-0"
        self.build_seconds = 0.0
        self._listener: asyncio.Task[None] | None = None
        self._want_rebuild = False
        self._stopping = False
        self._replay_own_until = 0
        self._lock = asyncio.Lock()
        self._publish = self.redis.register_script(_PUBLISH)
        self.applied_remote = 0

    # ---- wiring ---------------------------------------------------------------

    def install(self, service: FhirService) -> None:
        """Register the write hook; changes reach the index once their transaction commits."""
        service.add_write_hook(self.on_write)

    async def on_write(self, resource_type: str, old: Mapping[str, Any] | None,
                       new: Mapping[str, Any] | None, session: AsyncClientSession) -> None:
        """FhirService write hook: remember the change; apply it after the commit."""
        if resource_type not in TRACKED:
            return
        change = (resource_type, dict(old) if old else None, dict(new) if new else None)
        self.mongo.deliver_after_commit(session, self, change, self.changed)

    # ---- build ----------------------------------------------------------------

    async def start(self) -> None:
        """Build the index and start following the Redis stream."""
        await self.rebuild()
        self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        """Stop following the stream."""
        task, self._listener = self._listener, None
        self._stopping = True
        if task is None:
            return
        # The reader blocks at most 500 ms in XREAD; cancelling redis-py mid-read can hang,
        # so it is asked to stop and only cancelled if it does not within the deadline.
        done, _ = await asyncio.wait({task}, timeout=3.0)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 2.0)

    async def _stream_position(self) -> tuple[str, int]:
        last: Any = await self.redis.xrevrange(STREAM, count=1)
        if not last:
            seq: Any = await self.redis.get(SEQ)
            return "0-0", int(seq or 0)
        entry_id, fields = last[0]
        return _text(entry_id), int(fields[b"s"])

    async def rebuild(self) -> None:
        """Build a fresh index from MongoDB and swap it in. Every event from the stream
        position taken before reading is replayed afterwards, this process's own too
        (they were applied to the old index while the new one was being read)."""
        async with self._lock:
            started = time.perf_counter()
            self.last_id, self.last_seq = await self._stream_position()
            now = self.clock.now()
            index = AvailabilityIndex(now, self.coverage_days, self.granule_minutes)
            await self._load(index, now)
            self.index = index
            self._replay_own_until = (await self._stream_position())[1]
            self.build_seconds = time.perf_counter() - started
            st = index.stats()
            log.info("availability index built in %.1fs: %d schedules (%d irregular), "
                     "%d offers, %d actors, %.1f MB", self.build_seconds, st.schedules,
                     st.irregular, st.offers, st.actors, st.bytes / 1e6)

    async def _docs(self, rtype: str, query: Mapping[str, Any] | None = None) -> list[Json]:
        cursor = self.mongo.db[rtype].find(dict(query or {}), {"raw": 1}).batch_size(5000)
        return [orjson.loads(d["raw"]) async for d in cursor]

    async def _load(self, index: AvailabilityIndex, now: datetime) -> None:
        for loc in await self._docs("Location"):
            index.set_location(str(loc["id"]), loc)
        for role in await self._docs("PractitionerRole"):
            index.set_role(str(role["id"]), role)
        for prac in await self._docs("Practitioner"):
            index.set_practitioner(str(prac["id"]), prac)
        slots: dict[str, list[Json]] = {}
        for slot in await self._docs("Slot"):
            sid = ref_id(slot.get("schedule"), "Schedule")
            if sid:
                slots.setdefault(sid, []).append(slot)
        index.bulk_load(await self._docs("Schedule"), slots)
        cursor = self.mongo.db[CLAIMS].find({}, {"_id": 0, "r": 1, "g": 1, "k": 1, "exp": 1})
        rows = [(d["r"], aware(d["g"]), d.get("k", "booking"),
                 aware(d["exp"]) if d.get("exp") else None)
                async for d in cursor.batch_size(20_000)]
        index.load_claims(rows, now)

    # ---- changes --------------------------------------------------------------

    async def changed(self, changes: list[tuple[str, Json | None, Json | None]]) -> None:
        """Apply committed changes here, then publish them to the other processes."""
        await self.apply_all(changes)
        payload = [{"t": t, "old": o, "new": n} for t, o, n in changes]
        try:
            event = orjson.dumps({"o": self.origin, "c": payload})
            if self.cipher is not None:
                event, _ = self.cipher.seal(STREAM, event)
            await self._publish(keys=[STREAM, SEQ], args=[event, MAXLEN])
        except Exception:  # Redis down: the others catch up by a rebuild (seq gap)
            log.warning("could not publish an availability change", exc_info=True)

    async def apply_all(self, changes: list[tuple[str, Json | None, Json | None]]) -> None:
        """Apply committed changes in order; a run of Slot changes re-expands each of their
        Schedules once (a transaction or a batch of creates may write hundreds of Slots)."""
        index = self.index
        if index is None:
            return
        slots: dict[str, dict[str, Json | None]] = {}  # Schedule -> Slot id -> its new state
        for rtype, old, new in changes:
            if rtype != "Slot":
                await self._slots_changed(index, slots)
                await self._apply_other(index, rtype, old, new)
                continue
            rid = str((new or old or {}).get("id", ""))
            for s in (old, new):
                sid = ref_id(s.get("schedule"), "Schedule") if s else None
                if sid:
                    here = new is not None and ref_id(new.get("schedule"), "Schedule") == sid
                    slots.setdefault(sid, {})[rid] = new if here else None
        await self._slots_changed(index, slots)

    async def _apply_other(
        self, index: AvailabilityIndex, rtype: str, old: Json | None, new: Json | None
    ) -> None:
        """Apply one committed change of a tracked type other than Slot (`apply_all`
        folds Slots per Schedule)."""
        rid = str((new or old or {}).get("id", ""))
        if rtype == "Appointment":
            index.apply_appointment(old, new, self.clock.now())
        elif rtype == "Practitioner":
            index.set_practitioner(rid, new)
        elif rtype == "PractitionerRole":
            index.set_role(rid, new)
            affected = [e.sid for e in index.entries
                        if f"PractitionerRole/{rid}" in e.refs]
            await self._reload_schedules(index, affected)
        elif rtype == "Location":
            index.set_location(rid, new)
            await self._reload_schedules(index, index.schedules_at(rid))
        elif rtype == "Schedule":
            await self._reload_schedules(index, [rid], {rid: new})

    async def _reload_schedules(self, index: AvailabilityIndex, sids: list[str],
                                known: Mapping[str, Json | None] | None = None) -> None:
        if not sids:
            return
        known = dict(known or {})
        missing = [s for s in sids if s not in known]
        if missing:
            docs = await self.store.find("Schedule", {"_id": {"$in": missing}},
                                         projection={"raw": 1})
            found = {d["_id"]: orjson.loads(d["raw"]) for d in docs}
            for s in missing:
                known[s] = found.get(s)
        for sid in sids:
            schedule = known.get(sid)
            slots = await self._slots_of(sid) if schedule is not None else []
            index.set_schedule(sid, schedule, slots)

    async def _slots_changed(
        self, index: AvailabilityIndex, slots: dict[str, dict[str, Json | None]]
    ) -> None:
        """Swap explicit Slots in their Schedules' in-memory lists (`slots`: Schedule ->
        Slot id -> the Slot now, or None when it left the Schedule), one re-expansion per
        Schedule; re-reading every Slot of the Schedule on each Slot write made bulk Slot
        loads quadratic. Empties `slots`."""
        for sid in sorted(slots):
            swaps = slots[sid]
            ix = index.sched_ix.get(sid)
            if ix is None:
                await self._reload_schedules(index, [sid])
                continue
            kept = [x for x in index.entries[ix].slots if str(x.get("id")) not in swaps]
            kept.extend(x for x in swaps.values() if x is not None)
            docs = await self.store.find("Schedule", {"_id": sid}, projection={"raw": 1})
            index.set_schedule(sid, orjson.loads(docs[0]["raw"]) if docs else None, kept)
        slots.clear()

    async def _slots_of(self, sid: str) -> list[Json]:
        docs = await self.store.find("Slot", {"idx.schedule": f"Schedule/{sid}"},
                                     projection={"raw": 1})
        return [orjson.loads(d["raw"]) for d in docs]

    async def _listen(self) -> None:
        """Apply the other processes' changes from the Redis stream, in order."""
        while not self._stopping:
            if self._want_rebuild:
                self._want_rebuild = False
                await self.rebuild()
            try:
                got: Any = await self.redis.xread({STREAM: self.last_id}, count=500, block=500)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("availability stream read failed; retrying", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            for _, entries in got or []:
                for entry_id, fields in entries:
                    seq = int(fields[b"s"])
                    if self.last_seq and seq != self.last_seq + 1 and seq > self.last_seq:
                        log.warning("availability stream gap (%d -> %d): rebuilding",
                                    self.last_seq, seq)
                        await self.rebuild()
                        break
                    self.last_id, self.last_seq = _text(entry_id), seq
                    try:
                        blob = fields[b"e"]
                        event = orjson.loads(
                            self.cipher.open(STREAM, blob) if self.cipher is not None else blob
                        )
                    except (TamperedRecord, KeyringError, orjson.JSONDecodeError):
                        log.warning("unreadable availability event: rebuilding", exc_info=True)
                        await self.rebuild()
                        break
                    if event.get("o") == self.origin and seq > self._replay_own_until:
                        continue
                    async with self._lock:
                        await self.apply_all([(c["t"], c.get("old"), c.get("new"))
                                              for c in event.get("c", [])])
                    self.applied_remote += 1

    # ---- queries --------------------------------------------------------------

    async def proposals(self, c: FindCriteria, now: datetime, limit: int,
                        established: Callable[[str | None], Awaitable[set[str]]],
                        only: set[str] | None = None) -> list[Proposal] | None:
        """Proposals from the index; None when it cannot answer (the caller falls back)."""
        index = self.index
        if index is None:
            return None
        if now.timestamp() - index.base > DAY:
            self._want_rebuild = True  # slide the coverage: the listener rebuilds
        mine = await established(c.patient) if c.patient else set()
        return index.proposals(c, now, limit, mine, only=only)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def horizon(now: datetime, days: int) -> tuple[datetime, datetime]:
    """The coverage a build at `now` gets."""
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=days)
