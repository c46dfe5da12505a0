"""The queue side of group commit (the audit writer, the create combiner): one task takes
whatever has queued up while its last batch committed and commits it together."""

from __future__ import annotations

import asyncio
from typing import TypeVar

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
