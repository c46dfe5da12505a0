"""Group commit: one writer task per process appends every queued AuditEvent in one batch.

A request calls `await writer.record(event)`: the event is made into its record (id,
search index, sealed bytes) in the request's task, joins the queue, and the call returns
once the batch holding it has committed (or raises `AuditWriteFailed`). While a batch
commits, new records queue up and go together in the next one, so under load many
requests share one transaction and one journal sync; the writer task itself only chains
and stores them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from fhirserver.batching import GroupCommitQueue
from fhirserver.storage.audit_log import AuditLog, Prepared

log = logging.getLogger(__name__)

Pending = tuple[Prepared, "asyncio.Future[int]"]
# The pause between batches while another process appends to the same trail.
_YIELD_SECONDS = 0.005


class AuditWriteFailed(RuntimeError):
    """The audit record of a request could not be stored."""


class AuditWriter:
    """The per-process queue and the task that commits it in batches."""

    def __init__(self, audit_log: AuditLog, *, max_batch: int = 500) -> None:
        self.log = audit_log
        self._batches: GroupCommitQueue[Pending] = GroupCommitQueue(
            "audit", self._commit, max_batch=max_batch, pause=self._pause
        )

    def start(self) -> None:
        """Start the writer task on the running loop."""
        self._batches.start()

    async def record(self, event: Mapping[str, Any]) -> int:
        """Queue one AuditEvent; its `seq` once durably committed."""
        if not self._batches.running():
            raise AuditWriteFailed("the audit writer is not running")
        try:
            prepared = self.log.prepare(event)
        except Exception as exc:
            # No event content here: it may name patients.
            log.error("audit record not built", extra={"error": type(exc).__name__})
            raise AuditWriteFailed("the audit record could not be built") from exc
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._batches.put((prepared, future))
        # A cancelled request does not cancel the write: the batch still commits it.
        return await asyncio.shield(future)

    def _pause(self) -> float:
        # Another process appends too, and each batch takes the head from its first
        # statement to its commit: leave the other a moment to take it (what queues
        # meanwhile goes in the next batch), or it may wait behind ours for seconds.
        return _YIELD_SECONDS if self.log.contended() else 0.0

    async def _commit(self, batch: list[Pending]) -> None:
        try:
            seqs = await self.log.append([record for record, _ in batch])
        except Exception as exc:
            # No event content here: it may name patients.
            log.error(
                "audit write failed",
                extra={"records": len(batch), "error": type(exc).__name__},
            )
            for _, future in batch:
                if not future.done():
                    future.set_exception(AuditWriteFailed("the audit record was not stored"))
            return
        for (_, future), seq in zip(batch, seqs, strict=True):
            if not future.done():
                future.set_result(seq)

    async def stop(self) -> None:
        """Commit what is queued, then end the task (requests have drained by now)."""
        await self._batches.stop()
