"""Group commit for plain creates: creates that arrive while one batch commits go together
in the next batch's single transaction.

A create on its own is three store round trips of fixed cost (start, the writes, commit,
with a journal sync) besides its writes. Under concurrent load most of that is shared when
the creates waiting at one moment commit together: the batch runs each member's
`create_in` in turn in one transaction, exactly as if they had run one after another, and
every member's response waits for that commit.

A batch is all or nothing, so one member's failure (a rule it breaks, a key it collides
on) must not decide the others: when a batch fails, each member runs again alone in its
own transaction and gets its own result or error, as without the combiner.

Each member runs in its request's context (the access policy the write hooks check is a
context variable). Appointments are never combined: their creates pass the booking guard,
whose reruns belong to one booking's transaction (docs/scheduling.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pymongo.asynchronous.client_session import AsyncClientSession

from fhirserver.batching import GroupCommitQueue
from fhirserver.storage.mongo import Mongo
from fhirserver.storage.resources import ResourceStore

log = logging.getLogger(__name__)
T = TypeVar("T")
CreateIn = Callable[[Mapping[str, Any], AsyncClientSession], Coroutine[Any, Any, T]]

#: Types whose creates always run in a transaction of their own.
NOT_COMBINED = frozenset({"Appointment"})
#: Types whose write hooks read nothing a create of them writes (the access policy reads
#: committed data, the availability index acts after the commit): a batch of only these
#: holds its inserts back and writes them with one insert per collection.
DEFERRABLE = frozenset({"Patient", "Practitioner", "Organization", "Device"})


@dataclass
class _Member:
    resource: Mapping[str, Any]
    context: contextvars.Context
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class CreateCombiner:
    """One queue per process and the task that commits it in batches."""

    def __init__(
        self, mongo: Mongo, store: ResourceStore, create_in: CreateIn[Any], *, max_batch: int = 64
    ) -> None:
        self.mongo = mongo
        self.store = store
        self.create_in = create_in
        self._batches: GroupCommitQueue[_Member] = GroupCommitQueue(
            "create", self._commit_settled, max_batch=max_batch
        )
        self.batches = 0
        self.combined = 0  # members committed in a batch of two or more
        self.deferred = 0  # batches whose inserts went one per collection

    def start(self) -> None:
        """Start the batching task on the running loop."""
        self._batches.start()

    def running(self) -> bool:
        """True while creates can be queued."""
        return self._batches.running()

    async def create(self, resource: Mapping[str, Any]) -> Any:
        """`create_in(resource)` committed in this or a shared transaction; its result."""
        if resource["resourceType"] in NOT_COMBINED or not self.running():
            return await self.mongo.transaction(lambda s: self.create_in(resource, s))
        member = _Member(resource, contextvars.copy_context())
        self._batches.put(member)
        # A cancelled request does not cancel the batch: its create may still commit.
        return await asyncio.shield(member.future)

    async def _commit_settled(self, batch: list[_Member]) -> None:
        try:
            await self._commit(batch)
        except BaseException as exc:  # no member may wait forever
            for member in batch:
                _settle(member.future, error=exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.exception("create batch failed")

    async def _commit(self, batch: list[_Member]) -> None:
        self.batches += 1
        if len(batch) > 1:
            ran_all = False  # tells a failed commit from a member's failure

            async def run_all(session: AsyncClientSession) -> list[Any]:
                nonlocal ran_all
                ran_all = False  # a retried attempt starts over
                results = await self._run_all(batch, session)
                ran_all = True
                return results

            try:
                results = await self.mongo.transaction(run_all)
            except Exception as exc:
                if ran_all:
                    # Every member ran and the commit itself failed: its outcome is unknown
                    # (pymongo has retried it), so none may run again. Each member answers
                    # the error, as its own transaction would have.
                    for member in batch:
                        _settle(member.future, error=exc)
                    return
                # A member failed, so the transaction aborted: each runs alone and meets
                # its own result or error.
            else:
                self.combined += len(batch)
                for member, result in zip(batch, results, strict=True):
                    _settle(member.future, result=result)
                return
        await asyncio.gather(*(self._alone(member) for member in batch))

    async def _run_all(self, batch: list[_Member], session: AsyncClientSession) -> list[Any]:
        """Every member's create in `session`, in queue order."""
        if all(m.resource["resourceType"] in DEFERRABLE for m in batch):
            self.store.defer_inserts(session)
            self.deferred += 1
        try:
            results = [await self._in_context(member, session) for member in batch]
            await self.store.flush_inserts(session)
        finally:
            self.store.drop_deferred(session)
        return results

    def _in_context(self, member: _Member, session: AsyncClientSession) -> asyncio.Task[Any]:
        """The member's `create_in`, run in its request's context."""
        return asyncio.create_task(
            self.create_in(member.resource, session), context=member.context
        )

    async def _alone(self, member: _Member) -> None:
        try:
            result = await self.mongo.transaction(lambda s: self._in_context(member, s))
        except BaseException as exc:  # the member's own error is its response
            _settle(member.future, error=exc)
        else:
            _settle(member.future, result=result)

    async def stop(self) -> None:
        """Commit what is queued, then end the task (requests have drained by now)."""
        await self._batches.stop()


def _settle(
    future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None
) -> None:
    if future.done():
        return
    if isinstance(error, asyncio.CancelledError):
        future.cancel()
    elif error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
