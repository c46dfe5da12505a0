"""`make bench`: core throughput/latency figures of fhirserver, against its own ceiling.

Starts the server on a fresh temporary data dir (embedded store), seeds it through the FHIR
API, then runs each scenario with N concurrent clients for a fixed time after a warm-up.
Optionally repeats the store-bound scenarios with SecantusDB in its own process, and
profiles the read, search and create scenarios (py-spy --gil attached to the server, else
pyinstrument). Writes bench/results/core.json, core.txt (the printed report: figures beside
the same run's ceiling, targets, in-process vs separate store, where the time goes),
core.png and profile-*.txt. Targets are reported as PASS/MISS, never asserted.

Environment: BENCH_CLIENTS (16), BENCH_SECONDS (10), BENCH_WARMUP (2), BENCH_ENGINE
(raw|httpx), BENCH_PATIENTS (2000), BENCH_SLOTS (2000), BENCH_SEPARATE_STORE (1),
BENCH_PROFILE (auto|py-spy|pyinstrument|none), BENCH_PROFILE_SECONDS (8),
BENCH_CLIENT_CHECK (1), BENCH_KEEP (0: keep the temp dir with server logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import cli, profile, report, server_metrics
from bench.load import LoadResult, run_load
from bench.scenarios import CEILING, Scenario, build
from bench.seed import SeedInfo, seed
from bench.server import (
    HOST,
    ManagedProcess,
    ServerProcess,
    child_pids,
    free_port,
    process_cpu_seconds,
)

RESULTS = Path(__file__).resolve().parent / "results"
# Scenarios profiled in an extra phase (profile-NAME.txt).
PROFILED = ("read", "search100", "create")
# Scenarios measured again in separate-store mode with MORE_CLIENTS times the clients.
MORE_CLIENTS_SCENARIOS = ("read", "create")
MORE_CLIENTS = 4


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass(frozen=True)
class Config:
    """Benchmark settings, read from BENCH_* environment variables."""

    clients: int = 16
    seconds: float = 10.0
    warmup: float = 2.0
    engine: str = "raw"
    patients: int = 2000
    slots: int = 2000
    separate_store: bool = True
    authorized: bool = True
    profiler: str = "auto"
    profile_seconds: float = 8.0
    client_check: bool = True
    keep: bool = False

    @classmethod
    def from_env(cls) -> Config:
        """The configuration from the environment (defaults above)."""
        return cls(
            clients=max(1, _env_int("BENCH_CLIENTS", 16)),
            seconds=max(1.0, _env_float("BENCH_SECONDS", 10.0)),
            warmup=max(0.0, _env_float("BENCH_WARMUP", 2.0)),
            engine=os.environ.get("BENCH_ENGINE", "raw"),
            patients=max(1, _env_int("BENCH_PATIENTS", 2000)),
            slots=max(1, _env_int("BENCH_SLOTS", 2000)),
            separate_store=os.environ.get("BENCH_SEPARATE_STORE", "1") != "0",
            authorized=os.environ.get("BENCH_AUTHORIZED", "1") != "0",
            profiler=os.environ.get("BENCH_PROFILE", "auto"),
            profile_seconds=max(1.0, _env_float("BENCH_PROFILE_SECONDS", 8.0)),
            client_check=os.environ.get("BENCH_CLIENT_CHECK", "1") != "0",
            keep=os.environ.get("BENCH_KEEP", "0") == "1",
        )

    def resolved_profiler(self) -> str:
        """py-spy when available (auto), else pyinstrument; or as configured."""
        if self.profiler == "auto":
            return "py-spy" if profile.py_spy_path() else "pyinstrument"
        return self.profiler


def log(message: str) -> None:
    """Progress on stderr, with a timestamp."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def measure(cfg: Config, base: str, scenario: Scenario,
            probe: Callable[[], dict[str, float]] | None, seconds: float | None = None,
            engine: str | None = None, clients: int | None = None) -> LoadResult:
    """Run one scenario and log its headline figures."""
    clients = clients or cfg.clients
    result = asyncio.run(run_load(
        base, scenario.name, scenario.make, clients=clients,
        seconds=seconds or cfg.seconds, warmup=cfg.warmup, engine=engine or cfg.engine,
        cpu_probe=probe,
    ))
    at = "" if clients == cfg.clients else f" ({clients} clients)"
    log(f"  {scenario.name + at:<18} {result.throughput:8.0f} req/s  p50 {result.p50_ms:.1f} ms"
        f"  p99 {result.p99_ms:.1f} ms  errors {result.errors}")
    return result


def measure_with_queues(cfg: Config, base: str, scenario: Scenario,
                        probe: Callable[[], dict[str, float]],
                        clients: int | None = None) -> dict[str, Any]:
    """`measure`, plus what the server's group-commit queues did meanwhile."""
    before = server_metrics.scrape(base)
    result = measure(cfg, base, scenario, probe, clients=clients)
    queues = server_metrics.delta(before, server_metrics.scrape(base),
                                  cfg.warmup + cfg.seconds)
    return {**result.as_dict(), "group_commit": queues}


def check_scenario(base: str, scenario: Scenario) -> dict[str, Any]:
    """Send one request of the scenario and look at the answer: a bench of 400s, or of an
    empty search page, measures nothing."""
    req = scenario.make(random.Random(0))
    with httpx.Client(timeout=60) as client:
        resp = client.request(req.method, base + req.path, content=req.body,
                              headers={"Accept": "application/fhir+json",
                                       "Content-Type": "application/fhir+json",
                                       **dict(req.headers)})
    out: dict[str, Any] = {"request": f"{req.method} {req.path}", "status": resp.status_code,
                           "ok": resp.status_code < 400}
    if scenario.expect_entries is not None:
        body = resp.json() if resp.status_code == 200 else {}
        out["entries"] = len(body.get("entry", []))
        out["total"] = body.get("total")
        out["ok"] = out["ok"] and out["entries"] == scenario.expect_entries
    if not out["ok"]:
        log(f"  WARNING {scenario.name}: {out} (expected "
            f"{scenario.expect_entries or 'a 2xx'}): {resp.text[:300]}")
    return out


def cpu_probe(processes: dict[str, int]) -> Callable[[], dict[str, float]]:
    """CPU seconds of each named process tree."""
    return lambda: {name: process_cpu_seconds(pid) for name, pid in processes.items()}


@contextlib.contextmanager
def running(server: ServerProcess) -> Iterator[None]:
    """Start the server (and so its embedded store); always stop it."""
    try:
        server.start()
        yield
    finally:
        server.stop()


def client_capacity(cfg: Config, work: Path) -> dict[str, Any]:
    """What the load generator can do alone: each engine against a trivial responder."""
    port = free_port()
    stub = ManagedProcess("stub", [sys.executable, "-m", "bench.stub", "--port", str(port),
                                   "--lifetime", "300"], work / "stub.log")
    stub.spawn()
    out: dict[str, Any] = {}
    try:
        for _ in range(50):
            stub.check_alive()
            with contextlib.suppress(OSError):
                import socket

                socket.create_connection((HOST, port), 0.5).close()
                break
            time.sleep(0.1)
        noop = build(SeedInfo(patient_ids=["x"]))[CEILING]
        probe = cpu_probe({"stub": stub.pid})
        for engine in ("raw", "httpx"):
            res = measure(cfg, f"http://{HOST}:{port}/fhir", noop, probe,
                          seconds=min(5.0, cfg.seconds), engine=engine)
            out[engine] = {"throughput": res.throughput, "client_cpu_pct": res.client_cpu_pct,
                           "stub_cpu_pct": res.server_cpu_pct.get("stub"),
                           "p50_ms": res.p50_ms, "p99_ms": res.p99_ms}
    finally:
        stub.stop()
    return out


def run_mode(cfg: Config, work: Path, mode: str, names: list[str],
             profile_with_py_spy: bool) -> dict[str, Any]:
    """Start a server (store in its process, or the default: a child process), seed,
    measure `names`."""
    env = {"FHIRSERVER_EMBEDDED_STORE_IN_PROCESS": "true"} if mode == "in_process" else {}
    if mode == "authorized":
        env.update(authorized_env(work))
    server = ServerProcess(work / f"{mode}-data", work / f"{mode}-server.log", extra_env=env)
    out: dict[str, Any] = {"scenarios": {}}
    with running(server):
        procs = {"fhirserver": server.pid}
        for child in child_pids(server.pid):
            if b"store_process" in Path(f"/proc/{child}/cmdline").read_bytes():
                procs["secantusd"] = child
        bearer = bench_token(server.base) if mode == "authorized" else None
        log(f"{mode}: server on {server.base}, seeding {cfg.patients} patients, "
            f"{cfg.slots} slots")
        info = seed(server.base, cfg.patients, cfg.slots, bearer=bearer)
        out["seed"] = {"patients": len(info.patient_ids), "slots": info.slot_count,
                       "seconds": info.seconds}
        log(f"{mode}: seeded in {info.seconds}s")
        scenarios = build(info, bearer)
        probe = cpu_probe(procs)
        for name in names:
            check = check_scenario(server.base, scenarios[name])
            out["scenarios"][name] = {
                **measure_with_queues(cfg, server.base, scenarios[name], probe),
                "check": check}
        if mode == "separate_store":
            # The same scenarios with 4x the clients: a figure that does not grow while the
            # CPUs have room is bounded by a queue, not by work.
            out["more_clients"] = {
                name: measure_with_queues(cfg, server.base, scenarios[name], probe,
                                          clients=cfg.clients * MORE_CLIENTS)
                for name in MORE_CLIENTS_SCENARIOS}
        if profile_with_py_spy:
            out["profiles"] = {name: py_spy_phase(cfg, server, scenarios[name], probe, work)
                               for name in PROFILED}
    return out


BENCH_CLIENT, BENCH_SECRET = "bench", "bench-secret-not-for-production"


def authorized_env(work: Path) -> dict[str, str]:
    """Authorization on, with a backend-service client for the load generator."""
    clients = work / "bench-clients.json"
    clients.write_text(json.dumps([{
        "client_id": BENCH_CLIENT, "type": "confidential-symmetric",
        "client_secret": BENCH_SECRET, "scope": "system/*.cruds",
        "grant_types": ["client_credentials"]}]))
    return {"FHIRSERVER_AUTH_REQUIRED": "true", "FHIRSERVER_CLIENTS_FILE": str(clients)}


def bench_token(base: str) -> str:
    """A system/*.cruds access token from the server's token endpoint."""
    resp = httpx.post(base.rsplit("/fhir", 1)[0] + "/auth/token",
                      auth=(BENCH_CLIENT, BENCH_SECRET), timeout=30,
                      data={"grant_type": "client_credentials", "scope": "system/*.cruds"})
    resp.raise_for_status()
    token: str = resp.json()["access_token"]
    return token


def py_spy_phase(cfg: Config, server: ServerProcess, scenario: Scenario,
                 probe: Callable[[], dict[str, float]], work: Path) -> dict[str, Any]:
    """One extra phase of `scenario` with py-spy attached to the server."""
    raw = work / f"profile-{scenario.name}.raw"
    spy = profile.start_py_spy(server.pid, cfg.warmup + cfg.profile_seconds, raw,
                               work / "py-spy.log")
    try:
        result = measure(cfg, server.base, scenario, probe, seconds=cfg.profile_seconds)
        spy.wait(timeout=cfg.profile_seconds + 60)
    finally:
        if spy.poll() is None:
            spy.terminate()
            spy.wait(timeout=10)
    text = raw.read_text() if raw.exists() else ""
    recorded = cfg.warmup + cfg.profile_seconds
    shares = profile.gil_shares(text)
    shares["gil_held_pct_of_wall"] = round(shares["samples"] / (100 * recorded) * 100, 1)
    out = write_profile(scenario.name, result, profile.summarise_folded(
        text, f"py-spy --gil profile of the server during '{scenario.label}' "
              f"({cfg.clients} clients, {recorded:.0f}s incl. warm-up); the GIL was held "
              f"{shares['gil_held_pct_of_wall']}% of the time"), raw)
    return {**out, "gil": shares}


def write_profile(name: str, result: LoadResult, summary: str,
                  raw: Path | None = None) -> dict[str, Any]:
    """Write bench/results/profile-NAME.txt (and the raw stacks); return the run's figures."""
    head = (f"throughput under the profiler: {result.throughput:.0f} req/s, "
            f"p50 {result.p50_ms} ms, p99 {result.p99_ms} ms\n\n")
    (RESULTS / f"profile-{name}.txt").write_text(head + summary)
    if raw is not None and raw.exists():
        with raw.open("rb") as src, gzip.open(RESULTS / f"profile-{name}.folded.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    return {"throughput": result.throughput, "p50_ms": result.p50_ms,
            "p99_ms": result.p99_ms, "file": f"bench/results/profile-{name}.txt"}


def pyinstrument_phases(cfg: Config, work: Path) -> dict[str, Any]:
    """Fallback profiler: a fresh server under pyinstrument per scenario (main thread only)."""
    out: dict[str, Any] = {}
    for name in PROFILED:
        text_out = work / f"pyinstrument-{name}.txt"
        server = ServerProcess(work / f"pyi-{name}-data", work / f"pyi-{name}.log",
                               wrapper=profile.pyinstrument_wrapper(text_out))
        with running(server):
            info = seed(server.base, min(cfg.patients, 500), min(cfg.slots, 500))
            scenario = build(info)[name]
            result = measure(cfg, server.base, scenario, None, seconds=cfg.profile_seconds)
        summary = text_out.read_text() if text_out.exists() else "pyinstrument wrote nothing\n"
        out[name] = write_profile(name, result, "pyinstrument profile (main thread)\n\n"
                                  + "\n".join(summary.splitlines()[:150]) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the whole benchmark; returns 0 even when targets are missed."""
    cli.parser("bench.run", __doc__).parse_args(argv)
    cfg = Config.from_env()
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fhirbench-"))
    started = time.perf_counter()
    profiler = cfg.resolved_profiler()
    log(f"config {asdict(cfg)}; profiler {profiler}; work dir {work}")
    payload: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": report.machine_info(),
        "config": {**asdict(cfg), "profiler": profiler},
    }
    modes: dict[str, dict[str, Any]] = {}
    try:
        if cfg.client_check:
            log("client capacity (load generator against a trivial responder)")
            payload["client_capacity"] = client_capacity(cfg, work)
        all_names = [CEILING, "read", "read_slot", "search100", "search100_nototal",
                     "search100_distinct", "create"]
        modes["in_process"] = run_mode(cfg, work, "in_process", all_names,
                                       profile_with_py_spy=profiler == "py-spy")
        if cfg.separate_store:
            modes["separate_store"] = run_mode(cfg, work, "separate_store", all_names,
                                               profile_with_py_spy=False)
        if cfg.authorized:
            # The default server (store in its child) with tokens: the cost of authorization.
            modes["authorized"] = run_mode(cfg, work, "authorized", all_names,
                                           profile_with_py_spy=False)
        if profiler == "pyinstrument":
            modes["in_process"]["profiles"] = pyinstrument_phases(cfg, work)
    finally:
        if cfg.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    ceiling = report.ceiling_of(modes)
    for data in modes.values():
        # each mode's figures beside the ceiling measured on that mode's server
        data["ceiling_rps"] = report.ceiling_of({"m": data}) or ceiling
        data["targets"] = report.judge(data["scenarios"], data["ceiling_rps"])
    if "separate_store" in modes:
        payload["separate_vs_in_process"] = report.store_comparison(modes)
    payload["ceiling_rps"] = ceiling
    payload["summary"] = report.summary(modes)
    payload["modes"] = modes
    payload["total_seconds"] = round(time.perf_counter() - started, 1)
    report.write_json(RESULTS / "core.json", payload)
    report.plot(RESULTS / "core.png", modes, ceiling)
    parts = [f"fhirserver core benchmark, {payload['generated_at']}: {cfg.clients} clients, "
             f"{cfg.seconds:.0f}s per scenario after {cfg.warmup:.0f}s warm-up, "
             f"{cfg.patients} Patients and {cfg.slots} Slots (one Schedule); "
             f"{payload['machine']['cpu_count']} CPUs shared with the load generator",
             report.format_table(modes)]
    if "client_capacity" in payload:
        cap = payload["client_capacity"]
        parts.append("load generator alone (against a trivial responder): " + ", ".join(
            f"{k} {v['throughput']:.0f} req/s at {v['client_cpu_pct']:.0f}% CPU"
            for k, v in cap.items()))
    if "separate_vs_in_process" in payload:
        parts.append(report.format_store_comparison(payload["separate_vs_in_process"]))
    if "authorized" in modes and "separate_store" in modes:
        parts.append(report.format_authorization_cost(modes))
    parts.append(report.format_group_commit(modes))
    where = report.format_where_time_goes(modes["in_process"].get("profiles", {}))
    if where:
        parts.append(where)
    text = "\n\n".join(parts) + "\n"
    (RESULTS / "core.txt").write_text(text)
    print(text)
    print(f"wrote {RESULTS / 'core.json'}, core.txt, core.png, profile-*.txt "
          f"in {payload['total_seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
