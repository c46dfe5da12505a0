"""The MongoDB connection and the transaction runner."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

T = TypeVar("T")
Doc = dict[str, Any]
AfterCommit = Callable[[], Awaitable[None]]
# How often one `Mongo.transaction` call runs its function again on RerunTransaction.
_RERUNS = 2


class RerunTransaction(Exception):
    """Raised inside a transaction function: abort this transaction and run the function
    again in a new one (at most twice). `Mongo.run_state` keeps what the first run wants
    the next to know, e.g. that a write must read before it inserts after all."""


@dataclass
class _Attempt:
    """What one transaction attempt collected for after its commit; `run` is shared by
    every attempt of one `Mongo.transaction` call."""

    run: dict[Any, Any]
    state: dict[Any, Any] = field(default_factory=dict)
    callbacks: list[AfterCommit] = field(default_factory=list)


class Mongo:
    """One AsyncMongoClient and the application database."""

    def __init__(self, uri: str, db_name: str) -> None:
        self.client: AsyncMongoClient[Doc] = AsyncMongoClient(
            uri, tz_aware=True, uuidRepresentation="standard"
        )
        self.db: AsyncDatabase[Doc] = self.client[db_name]
        self._attempts: dict[int, _Attempt] = {}

    async def transaction(self, fn: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        """Run `fn(session)` in one multi-document transaction, retried on transient errors
        and run again on RerunTransaction, then the callbacks registered with
        `after_commit` (only when it committed).

        Our own FhirErrors raised inside abort the transaction and propagate unchanged.
        """
        runs: dict[Any, Any] = {}
        for _ in range(_RERUNS):
            try:
                result, callbacks = await self._run(fn, runs)
                break
            except RerunTransaction:
                continue  # with_transaction aborted it; `runs` carries over
        else:
            result, callbacks = await self._run(fn, runs)  # the last run: no more reruns
        for callback in callbacks:
            await callback()
        return result

    async def _run(
        self, fn: Callable[[AsyncClientSession], Awaitable[T]], runs: dict[Any, Any]
    ) -> tuple[T, list[AfterCommit]]:
        async with self.client.start_session() as session:
            key = id(session)

            async def attempt(s: AsyncClientSession) -> T:
                self._attempts[key] = _Attempt(runs)  # a retried attempt starts over
                return await fn(s)

            try:
                result = await session.with_transaction(
                    attempt,
                    read_concern=ReadConcern("snapshot"),
                    write_concern=WriteConcern("majority"),
                )
                return result, self._attempts[key].callbacks
            finally:
                self._attempts.pop(key, None)

    def _attempt(self, session: AsyncClientSession) -> _Attempt:
        found = self._attempts.get(id(session))
        if found is None:
            raise RuntimeError("not inside Mongo.transaction")
        return found

    def attempt_state(self, session: AsyncClientSession) -> dict[Any, Any]:
        """Scratch space of the running transaction attempt (cleared on retry)."""
        return self._attempt(session).state

    def run_state(self, session: AsyncClientSession) -> dict[Any, Any]:
        """Scratch space of the running `transaction` call: unlike `attempt_state` it
        survives a RerunTransaction (and a transient-error retry)."""
        return self._attempt(session).run

    def after_commit(self, session: AsyncClientSession, callback: AfterCommit) -> None:
        """Run `callback()` once the running transaction has committed (never if it aborts;
        a retried attempt drops what the failed one registered)."""
        self._attempt(session).callbacks.append(callback)

    def deliver_after_commit(
        self,
        session: AsyncClientSession,
        owner: object,
        item: Any,
        deliver: Callable[[list[Any]], Awaitable[None]],
    ) -> None:
        """Collect `item` for `owner` in the running attempt; once the transaction has
        committed, `deliver(items)` runs once with everything `owner` collected in it (for
        write hooks that act on a transaction's writes together)."""
        state = self._attempt(session).state
        items: list[Any] | None = state.get(owner)
        if items is None:
            collected: list[Any] = []
            state[owner] = items = collected
            self.after_commit(session, lambda: deliver(collected))
        items.append(item)

    async def ping(self) -> bool:
        """True when the server answers."""
        try:
            await self.client.admin.command("ping")
        except Exception:
            return False
        return True

    async def close(self) -> None:
        """Close the client's connections."""
        await self.client.close()
