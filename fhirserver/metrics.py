"""The process's Prometheus registry (served at /metrics) and the metrics of its
group-commit queues.

The audit writer and the create combiner each commit one batch at a time (batching.py).
`rate(fhirserver_group_commit_seconds_sum[1m])` is the share of time such a queue spends
committing: near 1, the queue is saturated and what waits on it (every audited request,
every plain create) is bounded by its batch size over its commit time, not by CPU.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

GROUP_COMMIT_BATCH = Histogram(
    "fhirserver_group_commit_batch_size",
    "Items committed together in one batch of a group-commit queue",
    ["queue"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    registry=REGISTRY,
)
GROUP_COMMIT_SECONDS = Histogram(
    "fhirserver_group_commit_seconds",
    "Time from taking a batch off a group-commit queue to settling its members",
    ["queue"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)


@contextmanager
def group_commit(queue: str, size: int) -> Iterator[None]:
    """Record one batch of `size` items of `queue` and the time its block takes (also when
    it fails: a failed batch took the queue's time too)."""
    GROUP_COMMIT_BATCH.labels(queue).observe(size)
    started = time.perf_counter()
    try:
        yield
    finally:
        GROUP_COMMIT_SECONDS.labels(queue).observe(time.perf_counter() - started)
