"""The benchmark scenarios and the targets they are judged against (from the issue)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import orjson

from bench.load import Request, RequestFactory
from bench.seed import SeedInfo, patient

CEILING = "ceiling"


@dataclass(frozen=True)
class Scenario:
    """A named request mix: `make(rng)` builds the next request (path relative to /fhir)."""

    name: str
    label: str
    make: RequestFactory
    needs_store: bool = True
    expect_entries: int | None = None  # a search: entries its page must hold (checked once)


@dataclass(frozen=True)
class Target:
    """A throughput target: absolute (req/s) or relative to the ceiling (ratio)."""

    scenario: str
    description: str
    min_rps: float | None = None
    min_ratio: float | None = None

    def judge(self, throughput: float, ceiling: float | None) -> dict[str, Any]:
        """Pass/miss for a measured throughput (never raises: a bench does not fail)."""
        if self.min_ratio is not None:
            ratio = throughput / ceiling if ceiling else 0.0
            ok = ratio >= self.min_ratio
            return {"target": self.description, "measured": f"{ratio:.0%} of ceiling",
                    "pass": ok}
        assert self.min_rps is not None
        return {"target": self.description, "measured": f"{throughput:.0f}/s",
                "pass": throughput >= self.min_rps}


TARGETS = (
    Target("read", "read by id >= 40% of the ceiling (Patient: PHI, audited)", min_ratio=0.40),
    Target("read_slot", "read by id >= 40% of the ceiling (Slot: no audit record)",
           min_ratio=0.40),
    Target("search100", "100-Slot search page >= 300/s", min_rps=300),
    Target("create", "create >= 500/s", min_rps=500),
)

_CREATE_BODY = orjson.dumps(patient(7))


def build(info: SeedInfo, bearer: str | None = None) -> dict[str, Scenario]:
    """The scenarios over a seeded data set, in the order they run (with `bearer`, every
    request but the ceiling carries that access token)."""
    ids = info.patient_ids
    slots = info.slot_ids or ["none"]
    auth = (("Authorization", f"Bearer {bearer}"),) if bearer else ()
    # `_sort=start` keeps this a FHIR search over the stored Slots: `schedule` alone (with
    # start/status/service-type/_count) is the availability view of generated slots, which
    # offers nothing for the bench's rule-less Schedule (an empty page).
    search = f"/Slot?schedule=Schedule/{info.schedule_id}&_sort=start&_count=100"

    def noop(_: random.Random) -> Request:
        return Request("GET", "/_noop")

    def read(rng: random.Random) -> Request:
        return Request("GET", f"/Patient/{ids[rng.randrange(len(ids))]}", headers=auth)

    def read_slot(rng: random.Random) -> Request:
        return Request("GET", f"/Slot/{slots[rng.randrange(len(slots))]}", headers=auth)

    def search100(_: random.Random) -> Request:
        return Request("GET", search, headers=auth)

    def search100_nototal(_: random.Random) -> Request:
        return Request("GET", search + "&_total=none", headers=auth)

    def search100_distinct(rng: random.Random) -> Request:
        # The same page, as a query never asked before (a start bound decades before every
        # Slot): what the store costs when the query cache cannot answer.
        day = f"19{rng.randrange(10, 99)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
        return Request("GET", f"{search}&start=ge{day}T{rng.randrange(24):02d}:"
                              f"{rng.randrange(60):02d}:{rng.randrange(60):02d}Z", headers=auth)

    def create(_: random.Random) -> Request:
        return Request("POST", "/Patient", _CREATE_BODY, auth)

    scenarios = [
        Scenario(CEILING, "GET /_noop (ceiling)", noop, needs_store=False),
        # A Patient read waits for its AuditEvent's durable commit (docs/audit.md); a Slot
        # read writes nothing: the two together show what the trail costs a read.
        Scenario("read", "GET /Patient/{id} (audited)", read),
        Scenario("read_slot", "GET /Slot/{id}", read_slot),
        Scenario("search100", "GET /Slot?schedule=..&_sort=start&_count=100", search100,
                 expect_entries=min(100, info.slot_count)),
        Scenario("search100_nototal", "same, &_total=none", search100_nototal,
                 expect_entries=min(100, info.slot_count)),
        Scenario("search100_distinct", "same, each query new (query cache misses)",
                 search100_distinct, expect_entries=min(100, info.slot_count)),
        Scenario("create", "POST /Patient", create),
    ]
    return {s.name: s for s in scenarios}
