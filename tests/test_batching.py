"""The group-commit queue: a batch is what queued up behind the first item, up to a limit,
and a None asks the consumer to stop after what came before it."""

from __future__ import annotations

import asyncio

from fhirserver.batching import next_batch


async def test_a_batch_takes_what_is_queued_up_to_the_limit() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    for i in range(5):
        queue.put_nowait(i)
    assert await next_batch(queue, 3) == ([0, 1, 2], False)
    assert await next_batch(queue, 3) == ([3, 4], False)
    waiting = asyncio.create_task(next_batch(queue, 3))
    await asyncio.sleep(0)
    assert not waiting.done()  # an empty queue: wait for the next item
    queue.put_nowait(7)
    assert await waiting == ([7], False)


async def test_a_none_stops_after_the_items_before_it() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    for item in (1, 2, None, 3):
        queue.put_nowait(item)
    assert await next_batch(queue, 10) == ([1, 2], True)
    queue2: asyncio.Queue[int | None] = asyncio.Queue()
    queue2.put_nowait(None)
    assert await next_batch(queue2, 10) == ([], True)
