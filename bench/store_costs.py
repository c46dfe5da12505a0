"""Micro-benchmark: what an inserted document costs the embedded store, by index count.

`python -m bench.store_costs [DOCS]`: an embedded SecantusDB in a temp dir; for k
single-field indexes (k = 0, 1, 2, 4, 8, 14), the mean time per document of
`insert_many` in batches of 16 (the create combiner's and the audit writer's typical
batch), for two kinds of document:

- `entries`: every indexed field holds two values, so each index gets two entries;
- `no entries`: the indexes are sparse and the documents lack their fields, so no index
  gets an entry. What such an index still costs is per-document work that does not
  depend on entries: SecantusDB reads the collection's index catalog (one row per index,
  BSON-decoded) twice for every inserted document (`Storage._unique_conflict` and
  `Storage._validate_geo_indexes` each call `_index_options_map`).

Writes bench/results/store_costs.json and .txt. The figures explain the two core targets
the embedded store misses (docs/performance.md): a Patient create writes 3 documents over
22 indexes, an audited read one document over 8.
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from bench import cli
from bench.report import machine_info
from bench.run import RESULTS
from fhirserver.storage.embedded import EmbeddedServers

INDEX_COUNTS = (0, 1, 2, 4, 8, 14)
BATCH = 16
RAW = b"x" * 1500  # about a stored resource's size


def _doc(i: int, fields: int) -> dict[str, Any]:
    return {"_id": f"d{i}", "raw": RAW,
            "idx": {f"f{f}": [f"a{i}", f"b{i}"] for f in range(fields)}}


def _per_doc_ms(client: MongoClient[dict[str, Any]], name: str, k: int, entries: bool,
                docs: int) -> float:
    coll = client["costs"][name]
    for f in range(k):
        coll.create_index(f"idx.f{f}", sparse=not entries)
    fields = k if entries else 0
    coll.insert_many([_doc(-j - 1, fields) for j in range(BATCH)])  # warm the collection
    batches = [[_doc(b * BATCH + j, fields) for j in range(BATCH)]
               for b in range(docs // BATCH)]
    start = time.perf_counter()
    for batch in batches:
        coll.insert_many(batch)
    return (time.perf_counter() - start) / (len(batches) * BATCH) * 1000


def measure(docs: int) -> dict[str, Any]:
    """Per-document insert time for every index count, with and without entries."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        embedded = EmbeddedServers(Path(d), with_redis=False, cache_size="256M")
        embedded.start()
        try:
            assert embedded.mongodb_uri
            client: MongoClient[dict[str, Any]]
            with MongoClient(embedded.mongodb_uri) as client:
                for k in INDEX_COUNTS:
                    with_entries = _per_doc_ms(client, f"e{k}", k, True, docs)
                    without = _per_doc_ms(client, f"n{k}", k, False, docs)
                    rows.append({"indexes": k, "entries_ms": round(with_entries, 3),
                                 "no_entries_ms": round(without, 3)})
        finally:
            embedded.stop()
    return {"when": datetime.now(UTC).isoformat(timespec="seconds"), "docs": docs,
            "batch": BATCH, "machine": machine_info(), "rows": rows}


def format_text(result: dict[str, Any]) -> str:
    """The table, and the per-index slopes."""
    rows = result["rows"]
    lines = [f"embedded store: insert_many in batches of {result['batch']}, "
             f"{result['docs']} documents per row (ms per document)",
             f"{'indexes':>8} {'2 entries each':>15} {'no entries':>11}"]
    lines += [f"{r['indexes']:>8} {r['entries_ms']:>15.3f} {r['no_entries_ms']:>11.3f}"
              for r in rows]
    first, last = rows[0], rows[-1]
    span = last["indexes"] - first["indexes"]
    lines.append(
        f"per index: {(last['entries_ms'] - first['entries_ms']) / span:.3f} ms with entries, "
        f"{(last['no_entries_ms'] - first['no_entries_ms']) / span:.3f} ms without "
        "(the index catalog read for every document)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Measure, print, write bench/results/store_costs.{json,txt}."""
    ap = cli.parser("bench.store_costs", __doc__)
    ap.add_argument("docs", nargs="?", type=int, default=640,
                    help="documents inserted per index count and kind (default 640)")
    result = measure(ap.parse_args(argv).docs)
    text = format_text(result)
    print(text, end="")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "store_costs.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "store_costs.txt").write_text(text)


if __name__ == "__main__":
    main()
