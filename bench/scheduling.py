"""`python -m bench.scheduling`: $find, $book and the availability index on a synthetic system.

Generates (or reuses) a synthetic health system (`fhirserver generate`) in a bench data
dir, measures the index build in this process, then starts the server as a separate
process and drives it with concurrent clients:

- ceiling: GET /_noop (same stack, constant bytes)
- find_index: $find by specialty + near + 14-day window, _count=20, via the index
- find_naive: the same requests against a server with the index off (engine per request)
- book_uncontended: $book of distinct free slots
- book_contended: rounds of all clients booking the same slot at once (1 wins, the rest 409)
- cancel_visible: time from a cancellation's response to the freed slot showing in $find
- double bookings: the invariant scan (find_overlaps) over the whole database afterwards
- index at full scale: build time and memory for --full-providers (default 5000) x --days,
  from generated resources in memory (no database), to judge the issue's targets

Writes bench/results/scheduling.json and scheduling.png and prints a table, each figure
beside its target. Targets are reported, never asserted.

Environment: BENCH_CLIENTS (32), BENCH_SECONDS (10), BENCH_WARMUP (2),
BENCH_DATA_DIR (a temp dir; reused across runs for the same size and day).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson

from bench.load import RawConnection, Request, percentile, run_load
from bench.report import machine_info, write_json
from bench.server import HOST, ManagedProcess, free_port, tree_cpu_seconds, wait_healthy

RESULTS = Path(__file__).resolve().parent / "results"
GRANULE = 15  # the synthetic system's visits are multiples of 15 minutes
METROS = [(40.7128, -74.0060), (41.8781, -87.6298), (34.0522, -118.2437), (29.7604, -95.3698),
          (33.4484, -112.0740), (39.9526, -75.1652), (32.7767, -96.7970), (47.6062, -122.3321)]
OP = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def log(message: str) -> None:
    """Progress on stderr, with a timestamp."""
    print(f"[bench.scheduling {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr,
          flush=True)


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRSERVER_")}
    env.pop("MONGODB_URI", None)
    env.pop("REDIS_URL", None)
    env.update({"FHIRSERVER_CLAIM_GRANULE_MINUTES": str(GRANULE), "PYTHONUNBUFFERED": "1",
                "FHIRSERVER_LOG_LEVEL": "WARNING",
                # The scheduling engine is measured, not token checks (bench.run has those).
                "FHIRSERVER_AUTH_REQUIRED": "false"})
    env.update(extra)
    return env


class Server:
    """`fhirserver serve` on the bench data dir (index on or off)."""

    def __init__(self, data_dir: Path, log_path: Path, *, index: bool) -> None:
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}/fhir"
        argv = [sys.executable, "-m", "fhirserver.cli", "serve", "--host", HOST, "--port",
                str(self.port), "--data-dir", str(data_dir), "--no-demo"]
        self.proc = ManagedProcess("fhirserver", argv, log_path, _env({
            "FHIRSERVER_BENCH_ENDPOINTS": "true",
            "FHIRSERVER_AVAILABILITY_INDEX": "1" if index else "0"}))
        self.ready_seconds = 0.0

    def start(self, timeout: float = 900.0) -> None:
        """Start and wait for /health (the index is built before the server is ready)."""
        t0 = time.perf_counter()
        self.proc.spawn()
        if wait_healthy(self.proc, self.base, timeout):
            self.ready_seconds = time.perf_counter() - t0
            return
        self.proc.stop()
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.proc.log_tail()}")

    def rss_mb(self) -> float:
        """Resident memory of the server process."""
        pages = int(Path(f"/proc/{self.proc.pid}/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6

    def stop(self) -> None:
        """SIGTERM and wait."""
        self.proc.stop()


@contextlib.contextmanager
def serving(data_dir: Path, work: Path, *, index: bool) -> Iterator[Server]:
    """A running server, always stopped."""
    srv = Server(data_dir, work / f"server-{'index' if index else 'naive'}.log", index=index)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


# ---- generation and the in-process index build ------------------------------------------

def generate(data_dir: Path, providers: int, days: int) -> dict[str, Any]:
    """`fhirserver generate` in a subprocess (reuses an existing system)."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "fhirserver.cli", "generate", "--providers", str(providers),
         "--days", str(days), "--data-dir", str(data_dir)],
        env=_env({}), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"generate failed:\n{out.stderr[-3000:]}")
    line = out.stdout.strip().splitlines()[-1]
    return {"seconds": round(time.perf_counter() - t0, 1), "output": line,
            "reused": line.startswith("already")}


def _rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


async def _build_from_db(data_dir: Path) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from fhirserver.context import full_indexer
    from fhirserver.scheduling.clock import SystemClock
    from fhirserver.scheduling.index import IndexService
    from fhirserver.storage.embedded import EmbeddedServers
    from fhirserver.storage.mongo import Mongo
    from fhirserver.storage.resources import ResourceStore

    emb = EmbeddedServers(data_dir)
    emb.start()
    try:
        assert emb.mongodb_uri and emb.redis_url
        mongo = Mongo(emb.mongodb_uri, "fhirserver")
        redis = aioredis.Redis.from_url(emb.redis_url)
        svc = IndexService(mongo, ResourceStore(mongo.db, full_indexer), redis, SystemClock(),
                           GRANULE)
        rss0 = _rss_mb()
        await svc.rebuild()
        rss1 = _rss_mb()
        assert svc.index is not None
        st = svc.index.stats()
        await redis.aclose()
        await mongo.close()
        return {"build_seconds": round(svc.build_seconds, 2), "rss_delta_mb": round(rss1 - rss0, 1),
                "structures_mb": round(st.bytes / 1e6, 1), "schedules": st.schedules,
                "irregular": st.irregular, "offers": st.offers, "actors": st.actors}
    finally:
        emb.stop()


def full_scale_index(providers: int, days: int) -> dict[str, Any]:
    """Build the index for a providers x days system straight from generated resources and
    their claims, in memory (what the server holds, minus reading it from the database)."""
    from fhirserver.generate import GenerateConfig, _Builder
    from fhirserver.scheduling.claims_policy import granules
    from fhirserver.scheduling.index import AvailabilityIndex

    b = _Builder(GenerateConfig(providers=providers, days=days, granule_minutes=GRANULE))
    b.organizations()
    locs = b.locations()
    trios = list(b.providers())
    now = datetime.now(UTC)
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    ix = AvailabilityIndex(now, days + 10, GRANULE)
    for loc in locs:
        ix.set_location(loc["id"], loc)
    for prac, role, _ in trios:
        ix.set_role(role["id"], role)
        ix.set_practitioner(prac["id"], prac)
    ix.bulk_load([s for _, _, s in trios], {})
    expand_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    claims = 0

    def rows() -> Iterator[tuple[str, datetime, str, None]]:
        nonlocal claims
        for p in b.provs:
            actor = f"Practitioner/{p.pid}"
            for _, start, end in b.appointments(p):
                for g in granules(start, end, GRANULE):
                    claims += 1
                    yield actor, g, "booking", None

    ix.load_claims(rows(), now)
    claims_s = time.perf_counter() - t1
    st = ix.stats()
    return {"providers": providers, "days": days, "expand_seconds": round(expand_s, 1),
            "claims_seconds": round(claims_s, 1), "claims": claims,
            "build_seconds_in_memory": round(expand_s + claims_s, 1),
            "structures_mb": round(st.bytes / 1e6, 1),
            "rss_delta_mb": round(_rss_mb() - rss0, 1), "offers": st.offers,
            "distinct_templates": len(ix.cache), "irregular": st.irregular}


# ---- load scenarios -------------------------------------------------------------------

SPECIALTIES = ["394802001", "394579002", "394582007", "394537008", "394585009", "394801008",
               "394583002", "394584008", "394589003", "394591006", "394594003", "394592004"]


def find_request(rng: random.Random) -> Request:
    """$find: a specialty near a metro centre, the next 14 days, 20 results."""
    lat, lng = METROS[rng.randrange(len(METROS))]
    q = urlencode({"specialty": f"http://snomed.info/sct|{rng.choice(SPECIALTIES)}",
                   "near": f"{lat}|{lng}|60|km", "_count": "20"})
    return Request("GET", f"/Appointment/$find?{q}")


def book_body(offer: dict[str, Any], patient: str) -> bytes:
    """A $book Parameters body for one proposed Appointment."""
    return orjson.dumps({"resourceType": "Parameters", "parameter": [
        {"name": "appointment", "resource": offer},
        {"name": "patient", "valueString": f"Patient/{patient}"}]})


async def collect_offers(base: str, practitioners: list[str], want: int) -> list[dict[str, Any]]:
    """Distinct, non-overlapping free offers across many practitioners (for $book)."""
    out: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for pid in practitioners:
            r = await client.get("/Appointment/$find", params={
                "practitioner": f"Practitioner/{pid}", "_count": "100"}, headers=OP)
            if r.status_code != 200:
                continue
            last_end = ""
            for e in r.json().get("entry", []):
                appt = e["resource"]
                if appt["start"] >= last_end:  # same zone per practitioner: text order works
                    out.append(appt)
                    last_end = appt["end"]
            if len(out) >= want:
                break
    return out


async def contended(base: str, offers: list[dict[str, Any]], clients: int,
                    rounds: int) -> dict[str, Any]:
    """Rounds of `clients` simultaneous $book of one slot: latencies of every answer."""
    from httpx import URL

    url = URL(base)
    conns = [RawConnection(url.host, url.port or 80) for _ in range(clients)]
    prefix = url.raw_path.decode().rstrip("/")
    lat: list[float] = []
    statuses: dict[str, int] = {}
    for r in range(rounds):
        body = book_body(offers[r], f"syn-pat-{r:06d}")

        async def one(conn: RawConnection, body: bytes = body) -> None:
            t0 = time.perf_counter()
            status = await conn.send(Request("POST", f"{prefix}/Appointment/$book", body))
            lat.append(time.perf_counter() - t0)
            statuses[str(status)] = statuses.get(str(status), 0) + 1

        await asyncio.gather(*(one(c) for c in conns))
    for c in conns:
        await c.aclose()
    lat.sort()
    return {"rounds": rounds, "clients": clients, "requests": len(lat), "statuses": statuses,
            "p50_ms": round(percentile(lat, 50) * 1000, 1),
            "p99_ms": round(percentile(lat, 99) * 1000, 1),
            "max_ms": round(lat[-1] * 1000, 1) if lat else 0.0,
            "one_winner_per_round": statuses.get("201", 0) == rounds}


async def cancel_visibility(base: str, offers: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """Book, cancel, then poll $find (deadline, no sleeps) until the freed slot is offered."""
    times: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for i, offer in enumerate(offers[:n]):
            body = book_body(offer, f"syn-pat-{i:06d}")
            r = await client.post("/Appointment/$book", content=body, headers=OP)
            if r.status_code not in (200, 201):
                continue
            appt = r.json()["entry"][0]["resource"]
            appt["status"] = "cancelled"
            pract = next(p["actor"]["reference"] for p in offer["participant"]
                         if p["actor"]["reference"].startswith("Practitioner/"))
            params = {"practitioner": pract, "start": offer["start"], "end": offer["end"],
                      "_count": "100"}
            put = await client.put(f"/Appointment/{appt['id']}", content=orjson.dumps(appt),
                                   headers=OP)
            t0 = time.perf_counter()
            assert put.status_code == 200, put.text
            while time.perf_counter() - t0 < 10.0:
                got = await client.get("/Appointment/$find", params=params, headers=OP)
                ids = {e["resource"]["id"] for e in got.json().get("entry", [])}
                if offer["id"] in ids:
                    times.append(time.perf_counter() - t0)
                    break
            else:
                times.append(float("inf"))
    times.sort()
    return {"samples": len(times), "p50_ms": round(percentile(times, 50) * 1000, 2),
            "max_ms": round(times[-1] * 1000, 2) if times else None}


def load(base: str, name: str, make: Any, clients: int, seconds: float, warmup: float,
         pid: int) -> dict[str, Any]:
    """One run_load scenario with the server's CPU."""
    res = asyncio.run(run_load(base, name, make, clients=clients, seconds=seconds,
                               warmup=warmup, cpu_probe=lambda: {"fhirserver":
                                                                 tree_cpu_seconds(pid)}))
    log(f"  {name:<18} {res.throughput:8.1f} req/s  p50 {res.p50_ms:.1f} ms  "
        f"p99 {res.p99_ms:.1f} ms  errors {res.errors}")
    return res.as_dict()


async def _overlaps(data_dir: Path) -> int:
    from fhirserver.config import Settings
    from fhirserver.phi.codec import PhiCodec
    from fhirserver.storage.claims import find_overlaps
    from fhirserver.storage.embedded import EmbeddedServers
    from fhirserver.storage.mongo import Mongo

    emb = EmbeddedServers(data_dir, with_redis=False)
    emb.start()
    try:
        assert emb.mongodb_uri
        mongo = Mongo(emb.mongodb_uri, "fhirserver")
        cipher = PhiCodec.from_settings(Settings(data_dir=data_dir)).cipher  # sealed Appointments
        problems = await find_overlaps(mongo.db, granule_minutes=GRANULE, cipher=cipher)
        await mongo.close()
        return len(problems)
    finally:
        emb.stop()


# ---- report ---------------------------------------------------------------------------

def judge(r: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(figure, measured, target, pass) rows."""
    out: list[tuple[str, str, str, bool]] = []
    f, naive, ceil = r["find_index"], r.get("find_naive"), r["ceiling"]["throughput"]
    out.append(("ceiling GET /_noop", f"{ceil:.0f}/s", "(reference)", True))
    out.append(("$find via index", f"{f['throughput']:.0f}/s ({f['throughput'] / ceil:.0%} of "
                f"ceiling)", ">= 833/s", f["throughput"] >= 833))
    out.append(("$find p99 (32 clients)", f"{f['p99_ms']:.0f} ms (p50 {f['p50_ms']:.0f})",
                "<= 200 ms", f["p99_ms"] <= 200))
    if naive and naive["throughput"]:
        x = f["throughput"] / naive["throughput"]
        out.append(("$find index / naive", f"x{x:.0f} (naive {naive['throughput']:.1f}/s, "
                    f"p50 {naive['p50_ms']:.0f} ms)", ">= x20", x >= 20))
    b = r["book_uncontended"]
    out.append(("$book uncontended", f"{b['throughput']:.0f}/s (p99 {b['p99_ms']:.0f} ms)",
                ">= 150/s", b["throughput"] >= 150))
    c = r["book_contended"]
    out.append(("$book p99 under contention", f"{c['p99_ms']:.0f} ms "
                f"({c['clients']} clients x {c['rounds']} slots)", "<= 500 ms",
                c["p99_ms"] <= 500))
    out.append(("double bookings (find_overlaps)", str(r["double_bookings"]), "0",
                r["double_bookings"] == 0))
    ib = r["index_build"]
    out.append(("index memory (this system)", f"{ib['structures_mb']} MB structures, RSS "
                f"+{ib['rss_delta_mb']} MB", "(see full scale)", True))
    out.append(("index build from DB (this system)", f"{ib['build_seconds']} s", "<= 60 s",
                ib["build_seconds"] <= 60))
    if "full_scale" in r:
        fs = r["full_scale"]
        out.append((f"index memory {fs['providers']}x{fs['days']} (in memory)",
                    f"{fs['structures_mb']} MB (RSS +{fs['rss_delta_mb']} MB)", "<= 200 MB",
                    fs["structures_mb"] <= 200))
        out.append((f"index build {fs['providers']}x{fs['days']} (no DB read)",
                    f"{fs['build_seconds_in_memory']} s", "<= 60 s",
                    fs["build_seconds_in_memory"] <= 60))
    cv = r["cancel_visible"]
    out.append(("cancellation -> visible in $find", f"{cv['max_ms']} ms max "
                f"(p50 {cv['p50_ms']} ms, {cv['samples']} samples)", "<= 1000 ms",
                (cv["max_ms"] or 1e9) <= 1000))
    return out


def table(rows: list[tuple[str, str, str, bool]]) -> str:
    """The printed table."""
    w = max(len(r[0]) for r in rows) + 2
    lines = [f"{'figure':<{w}}{'measured':<60}{'target':<18}", "-" * (w + 84)]
    for name, measured, target, ok in rows:
        mark = "" if target.startswith("(") else ("PASS" if ok else "MISS")
        lines.append(f"{name:<{w}}{measured:<60}{target:<18}{mark}")
    return "\n".join(lines)


def plot(path: Path, r: dict[str, Any]) -> None:
    """Throughput bars (ceiling, $find index/naive, $book) and latency bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["ceiling", "find_index", "find_naive", "book_uncontended"]
    rows = [r.get(n) or {"throughput": 0, "p50_ms": 0, "p99_ms": 0} for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax1.bar(names, [x["throughput"] for x in rows], color=["grey", "C0", "C1", "C2"])
    ax1.axhline(833, color="red", linestyle="--", label="$find target 833/s")
    ax1.axhline(150, color="green", linestyle=":", label="$book target 150/s")
    ax1.set_yscale("log")
    ax1.set_ylabel("req/s")
    ax1.legend(fontsize=8)
    ax1.set_title("Throughput (32 clients)")
    lat_names = [*names[1:], "book_contended"]
    lat_rows = [r.get(n) or {"p50_ms": 0, "p99_ms": 0} for n in lat_names]
    xs = range(len(lat_names))
    ax2.bar([x - 0.2 for x in xs], [x["p50_ms"] for x in lat_rows], 0.4, label="p50")
    ax2.bar([x + 0.2 for x in xs], [x["p99_ms"] for x in lat_rows], 0.4, label="p99")
    ax2.set_xticks(list(xs), lat_names, rotation=15)
    ax2.set_yscale("log")
    ax2.set_ylabel("ms")
    ax2.legend(fontsize=8)
    ax2.set_title("Latency")
    fig.suptitle(f"fhirserver scheduling: {r['config']['providers']} providers x "
                 f"{r['config']['days']} days, {os.cpu_count()} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the scheduling benchmark."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--providers", type=int, default=int(os.environ.get("BENCH_PROVIDERS", 200)))
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--full-providers", type=int, default=5000,
                    help="size of the in-memory full-scale index build (0: skip)")
    ap.add_argument("--naive-seconds", type=float, default=10.0)
    args = ap.parse_args(argv)
    clients = int(os.environ.get("BENCH_CLIENTS", 32))
    seconds = float(os.environ.get("BENCH_SECONDS", 10))
    warmup = float(os.environ.get("BENCH_WARMUP", 2))
    today = datetime.now(UTC).date().isoformat()
    root = Path(os.environ.get("BENCH_DATA_DIR",
                               Path(tempfile.gettempdir()) / "fhirserver-bench-scheduling"))
    data_dir = root / f"{args.providers}x{args.days}-{today}"
    for old in root.glob(f"{args.providers}x{args.days}-*") if root.exists() else []:
        if old != data_dir:
            shutil.rmtree(old, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix="fhirbench-sched-"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    r: dict[str, Any] = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                         "machine": machine_info(),
                         "config": {"providers": args.providers, "days": args.days,
                                    "clients": clients, "seconds": seconds,
                                    "granule_minutes": GRANULE, "data_dir": str(data_dir)}}
    started = time.perf_counter()
    log(f"generating {args.providers} providers x {args.days} days in {data_dir}")
    r["generate"] = generate(data_dir, args.providers, args.days)
    log(f"  {r['generate']}")
    r["index_build"] = asyncio.run(_build_from_db(data_dir))
    log(f"index build from the database: {r['index_build']}")
    # Every run books and holds thousands of offers: measured on the generated system
    # itself, each run would start from a fuller calendar than the last (and measure
    # less). Runs work on a copy, so each one starts from the same state.
    generated, data_dir = data_dir, work / "system"
    t0 = time.perf_counter()
    shutil.copytree(generated, data_dir)
    r["config"]["copy_seconds"] = round(time.perf_counter() - t0, 1)
    rng = random.Random(5)
    practitioners = [f"syn-pr-{i:05d}" for i in range(args.providers)]
    rng.shuffle(practitioners)
    with serving(data_dir, work, index=True) as srv:
        r["server_ready_seconds"] = round(srv.ready_seconds, 1)
        r["server_rss_mb_index"] = round(srv.rss_mb(), 1)
        pid = srv.proc.pid
        r["ceiling"] = load(srv.base, "ceiling", lambda _: Request("GET", "/_noop"), clients,
                            seconds, warmup, pid)
        r["find_index"] = load(srv.base, "find_index", find_request, clients, seconds, warmup,
                               pid)
        need = int(400 * (seconds + warmup + 5))
        offers = asyncio.run(collect_offers(srv.base, practitioners, need + 200))
        log(f"  collected {len(offers)} distinct offers to book")
        contended_offers, cancel_offers, free_offers = offers[:30], offers[30:50], offers[50:]
        it = iter(free_offers)
        counter = [0]

        def book(_: random.Random) -> Request:
            counter[0] += 1
            offer = next(it, None)
            if offer is None:
                return Request("GET", "/_noop")
            return Request("POST", "/Appointment/$book",
                           book_body(offer, f"syn-pat-{counter[0] % 400:06d}"))

        r["book_uncontended"] = load(srv.base, "book_uncontended", book, clients, seconds,
                                     warmup, pid)
        r["book_uncontended"]["offers_available"] = len(free_offers)
        r["book_contended"] = asyncio.run(contended(srv.base, contended_offers, clients,
                                                    len(contended_offers)))
        log(f"  book_contended {r['book_contended']}")
        r["cancel_visible"] = asyncio.run(cancel_visibility(srv.base, cancel_offers, 20))
        log(f"  cancel_visible {r['cancel_visible']}")
    with serving(data_dir, work, index=False) as srv:
        r["server_rss_mb_naive"] = round(srv.rss_mb(), 1)
        r["find_naive"] = load(srv.base, "find_naive", find_request, clients,
                               args.naive_seconds, warmup, srv.proc.pid)
    r["double_bookings"] = asyncio.run(_overlaps(data_dir))
    log(f"double bookings found: {r['double_bookings']}")
    shutil.rmtree(data_dir, ignore_errors=True)  # the generated system stays as it was
    if args.full_providers:
        log(f"full-scale index in memory: {args.full_providers} x {args.days}")
        r["full_scale"] = full_scale_index(args.full_providers, args.days)
        log(f"  {r['full_scale']}")
    r["bench_rusage_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3)
    r["total_seconds"] = round(time.perf_counter() - started, 1)
    rows = judge(r)
    r["targets"] = [{"figure": a, "measured": b, "target": c, "pass": d} for a, b, c, d in rows]
    write_json(RESULTS / "scheduling.json", r)
    plot(RESULTS / "scheduling.png", r)
    print(table(rows))
    print(f"\nwrote {RESULTS / 'scheduling.json'}, {RESULTS / 'scheduling.png'} "
          f"in {r['total_seconds']}s (server logs in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
