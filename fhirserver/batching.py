"""Group commit (the audit writer, the create combiner): one task per queue takes whatever
has queued up while its last batch committed and commits it together, and records each
batch on /metrics (fhirserver/metrics.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from fhirserver.metrics import group_commit

T = TypeVar("T")


async def next_batch(queue: asyncio.Queue[T | None], max_batch: int) -> tuple[list[T], bool]:
    """Wait for the next item, then take every item already queued behind it (at most
    `max_batch` in all). A None in the queue asks the consumer to stop: the second value is
    then True, with the items that came before it."""
    first = await queue.get()
    if first is None:
        return [], True
    batch = [first]
    while len(batch) < max_batch and not queue.empty():
        item = queue.get_nowait()
        if item is None:
            return batch, True
        batch.append(item)
    return batch, False


class GroupCommitQueue(Generic[T]):
    """A queue and the one task that hands it to `commit` in batches, one at a time.

    `commit` answers its batch's members itself (it must not raise for a member's sake);
    `pause`, if given, is asked after each batch for seconds to wait before the next."""

    def __init__(
        self,
        name: str,
        commit: Callable[[list[T]], Awaitable[None]],
        *,
        max_batch: int,
        pause: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self.commit = commit
        self.max_batch = max_batch
        self.pause = pause
        self._queue: asyncio.Queue[T | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        """Start the committing task on the running loop."""
        self._task = asyncio.create_task(self._run(), name=self.name)

    def running(self) -> bool:
        """True while items can be queued."""
        return not self._closed and self._task is not None and not self._task.done()

    def put(self, item: T) -> None:
        """Queue `item` for the next batch."""
        self._queue.put_nowait(item)

    async def stop(self) -> None:
        """Commit what is queued, then end the task."""
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(None)
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = await next_batch(self._queue, self.max_batch)
            if not batch:
                continue
            with group_commit(self.name, len(batch)):
                await self.commit(batch)
            wait = self.pause() if self.pause is not None else 0.0
            if wait > 0:
                await asyncio.sleep(wait)
