"""KeyedLocks: one holder per key at a time, other keys independent, nothing left behind."""

from __future__ import annotations

import asyncio

from fhirserver.scheduling.keyed_locks import KeyedLocks


async def test_one_holder_per_key_and_cleanup() -> None:
    locks = KeyedLocks()
    inside: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}
    b_entered = asyncio.Event()

    async def use(key: str) -> None:
        async with locks.hold(key):
            inside[key] += 1
            most[key] = max(most[key], inside[key])
            if key == "b":
                b_entered.set()
            await asyncio.sleep(0)
            inside[key] -= 1

    async def a_waits_for_b() -> None:
        async with locks.hold("a"):
            # "b" is a different key: it gets in while "a" is held
            await asyncio.wait_for(b_entered.wait(), timeout=5)

    await asyncio.gather(a_waits_for_b(), *(use(k) for k in "ab" * 10))
    assert most == {"a": 1, "b": 1}
    assert len(locks) == 0


async def test_no_key_no_lock_and_errors_release() -> None:
    locks = KeyedLocks()
    async with locks.hold(None):
        assert len(locks) == 0
    try:
        async with locks.hold("x"):
            raise ValueError("boom")
    except ValueError:
        pass
    assert len(locks) == 0
    async with locks.hold("x"):  # not left locked
        assert len(locks) == 1
