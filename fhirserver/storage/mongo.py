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


@dataclass
class _Attempt:
    """What one transaction attempt collected for after its commit."""

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
        """Run `fn(session)` in one multi-document transaction, retried on transient errors,
        then the callbacks registered with `after_commit` (only when it committed).

        Our own FhirErrors raised inside abort the transaction and propagate unchanged.
        """
        async with self.client.start_session() as session:
            key = id(session)

            async def attempt(s: AsyncClientSession) -> T:
                self._attempts[key] = _Attempt()  # a retried attempt starts over
                return await fn(s)

            try:
                result = await session.with_transaction(
                    attempt,
                    read_concern=ReadConcern("snapshot"),
                    write_concern=WriteConcern("majority"),
                )
                callbacks = self._attempts[key].callbacks
            finally:
                self._attempts.pop(key, None)
        for callback in callbacks:
            await callback()
        return result

    def _attempt(self, session: AsyncClientSession) -> _Attempt:
        found = self._attempts.get(id(session))
        if found is None:
            raise RuntimeError("not inside Mongo.transaction")
        return found

    def attempt_state(self, session: AsyncClientSession) -> dict[Any, Any]:
        """Scratch space of the running transaction attempt (cleared on retry)."""
        return self._attempt(session).state

    def after_commit(self, session: AsyncClientSession, callback: AfterCommit) -> None:
        """Run `callback()` once the running transaction has committed (never if it aborts;
        a retried attempt drops what the failed one registered)."""
        self._attempt(session).callbacks.append(callback)

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
