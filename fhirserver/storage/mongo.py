"""The MongoDB connection and the transaction runner."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

T = TypeVar("T")
Doc = dict[str, Any]


class Mongo:
    """One AsyncMongoClient and the application database."""

    def __init__(self, uri: str, db_name: str) -> None:
        self.client: AsyncMongoClient[Doc] = AsyncMongoClient(
            uri, tz_aware=True, uuidRepresentation="standard"
        )
        self.db: AsyncDatabase[Doc] = self.client[db_name]

    async def transaction(self, fn: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        """Run `fn(session)` in one multi-document transaction, retried on transient errors.

        Our own FhirErrors raised inside abort the transaction and propagate unchanged.
        """
        async with self.client.start_session() as session:
            return await session.with_transaction(
                fn,
                read_concern=ReadConcern("snapshot"),
                write_concern=WriteConcern("majority"),
            )

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
