"""What the server's group-commit queues did during a scenario, from its /metrics.

The audit writer and the create combiner commit one batch at a time. Scraped before and
after a scenario, their histograms give each queue's batches, mean batch size, mean commit
time and busy share (commit time over the scenario's wall time). A queue busy ~100% bounds
what waits on it at (mean batch / mean commit time), whatever the CPUs do.
"""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

BATCH = "fhirserver_group_commit_batch_size"
SECONDS = "fhirserver_group_commit_seconds"
#: (queue, sample name) -> value
Scrape = dict[tuple[str, str], float]


def scrape(base: str) -> Scrape:
    """The group-commit samples of the server at `base` (its /fhir URL)."""
    root = base.rsplit("/fhir", 1)[0]
    text = httpx.get(f"{root}/metrics", timeout=30).text
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        if family.name not in (BATCH, SECONDS):
            continue
        for s in family.samples:
            if s.name.endswith(("_count", "_sum")):
                out[(s.labels["queue"], s.name)] = s.value
    return out


def delta(before: Scrape, after: Scrape, wall_seconds: float) -> dict[str, dict[str, Any]]:
    """Per queue that committed anything between the scrapes: batches, mean batch size,
    mean commit ms and busy % of `wall_seconds`."""
    out: dict[str, dict[str, Any]] = {}
    for queue in sorted({q for q, _ in after}):
        batches, items, seconds = (
            after.get((queue, name), 0.0) - before.get((queue, name), 0.0)
            for name in (f"{BATCH}_count", f"{BATCH}_sum", f"{SECONDS}_sum")
        )
        if batches <= 0:
            continue
        out[queue] = {
            "batches": int(batches),
            "items": int(items),
            "mean_batch": round(items / batches, 1),
            "mean_commit_ms": round(seconds / batches * 1000, 2),
            "busy_pct": round(seconds / wall_seconds * 100, 1),
        }
    return out
