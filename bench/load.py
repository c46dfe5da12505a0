"""The load generator: N concurrent keep-alive clients for a fixed time, in one process.

Two engines:

- `raw` (default): a minimal HTTP/1.1 client on asyncio streams, one keep-alive connection
  per client. It parses only the status line and Content-Length/chunked framing, so it costs
  far less CPU per request than a full client; on a 2-core machine the client competes with
  the server for CPU and must stay cheap.
- `httpx`: `httpx.AsyncClient` with a pool bounded to N connections (a realistic client).

The run is bounded in time (warm-up + duration + a grace period for in-flight requests)
and in count (`max_requests`). Only requests that complete inside the measured window
(after the warm-up, before the deadline) count.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import httpx

CpuProbe = Callable[[], dict[str, float]]


@dataclass(frozen=True)
class Request:
    """One request: method, path (with query), optional JSON body and extra headers."""

    method: str
    path: str
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()


RequestFactory = Callable[[random.Random], Request]


@dataclass
class LoadResult:
    """Figures for one scenario run."""

    scenario: str
    engine: str
    clients: int
    seconds: float
    ok: int
    errors: int
    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    client_cpu_pct: float
    server_cpu_pct: dict[str, float]
    statuses: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


class _Engine(Protocol):
    async def send(self, req: Request) -> int: ...

    async def aclose(self) -> None: ...


class RawConnection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, req: Request) -> int:
        """Send one request, read the whole response, return its status code."""
        if self._writer is None or self._reader is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._reader, self._writer
        head = f"{req.method} {req.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n" \
               "Accept: application/fhir+json\r\n"
        if req.body is not None:
            head += f"Content-Type: application/fhir+json\r\nContent-Length: {len(req.body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in req.headers)
        writer.write(head.encode() + b"\r\n" + (req.body or b""))
        raw = await reader.readuntil(b"\r\n\r\n")
        status = int(raw[9:12])
        headers = raw.lower()
        start = headers.find(b"\r\ncontent-length:")
        if start >= 0:
            end = headers.index(b"\r\n", start + 2)
            await reader.readexactly(int(headers[start + 17 : end]))
        elif b"\r\ntransfer-encoding: chunked" in headers:
            await self._read_chunked(reader)
        else:
            await reader.read()
            await self.aclose()
            return status
        if b"\r\nconnection: close" in headers:
            await self.aclose()
        return status

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> None:
        for _ in range(1_000_000):
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return
            await reader.readexactly(size + 2)

    async def aclose(self) -> None:
        """Close the connection (the next send reconnects)."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class HttpxEngine:
    """Requests through one shared httpx.AsyncClient (pool bounded to `clients`)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def send(self, req: Request) -> int:
        """Send one request, read the whole response, return its status code."""
        headers = {"Accept": "application/fhir+json", **dict(req.headers)}
        if req.body is not None:
            headers["Content-Type"] = "application/fhir+json"
        resp = await self.client.request(req.method, req.path, content=req.body,
                                         headers=headers)
        return resp.status_code

    async def aclose(self) -> None:
        """Nothing per worker: the shared client is closed by the runner."""


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    sent: int = 0

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text)


async def _worker(engine: _Engine, make: RequestFactory, rng: random.Random, window: tuple[
        float, float], tally: _Tally, max_requests: int) -> None:
    start, deadline = window
    clock = time.perf_counter
    try:
        while tally.sent < max_requests:
            t0 = clock()
            if t0 >= deadline:
                return
            req = make(rng)
            tally.sent += 1
            try:
                status = await engine.send(req)
            except (OSError, asyncio.IncompleteReadError, httpx.HTTPError, ValueError) as exc:
                if clock() >= start:
                    tally.error(f"{req.method} {req.path}: {type(exc).__name__}: {exc}")
                if isinstance(engine, RawConnection):
                    await engine.aclose()
                await asyncio.sleep(0.01)
                continue
            t1 = clock()
            if start <= t1 < deadline:
                tally.statuses[str(status)] += 1
                if status < 400:
                    tally.latencies.append(t1 - t0)
                else:
                    tally.error(f"{req.method} {req.path}: HTTP {status}")
    finally:
        await engine.aclose()


async def _cpu_sampler(window: tuple[float, float], probe: CpuProbe | None,
                       out: dict[str, dict[str, float]]) -> None:
    """Read client and server CPU time at the window's start and end."""
    for key, at in (("start", window[0]), ("end", window[1])):
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        out[key] = {"_wall": time.perf_counter(), "_client": time.process_time(),
                    **(probe() if probe is not None else {})}


async def run_load(
    base: str,
    scenario: str,
    make: RequestFactory,
    *,
    clients: int = 16,
    seconds: float = 10.0,
    warmup: float = 2.0,
    engine: str = "raw",
    cpu_probe: CpuProbe | None = None,
    max_requests: int = 5_000_000,
    grace: float = 15.0,
    seed: int = 1,
) -> LoadResult:
    """Drive `clients` concurrent loops against `base` and measure the steady window."""
    url = httpx.URL(base)
    host, port = url.host, url.port or 80
    prefix = url.raw_path.decode().rstrip("/")

    def prefixed(rng: random.Random) -> Request:
        req = make(rng)
        return Request(req.method, prefix + req.path, req.body, req.headers)

    now = time.perf_counter()
    window = (now + warmup, now + warmup + seconds)
    tally = _Tally()
    cpu: dict[str, dict[str, float]] = {}
    shared: httpx.AsyncClient | None = None
    engines: list[_Engine]
    if engine == "httpx":
        shared = httpx.AsyncClient(
            base_url=f"http://{host}:{port}",
            limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients),
            timeout=httpx.Timeout(grace),
        )
        engines = [HttpxEngine(shared) for _ in range(clients)]
    elif engine == "raw":
        engines = [RawConnection(host, port) for _ in range(clients)]
    else:
        raise ValueError(f"unknown engine {engine!r} (raw or httpx)")
    tasks = [_worker(e, prefixed, random.Random(seed * 1000 + i), window, tally, max_requests)
             for i, e in enumerate(engines)]
    try:
        async with asyncio.timeout_at(asyncio.get_running_loop().time() + warmup + seconds
                                      + grace):
            await asyncio.gather(_cpu_sampler(window, cpu_probe, cpu), *tasks)
    except TimeoutError:
        tally.error(f"run did not finish within {grace}s after its deadline")
    finally:
        if shared is not None:
            await shared.aclose()
    return _summarise(scenario, engine, clients, seconds, tally, cpu)


def _cpu_pct(cpu: dict[str, dict[str, float]]) -> dict[str, float]:
    """CPU use of each probed process (and `_client`) over the window, % of one core."""
    start, end = cpu.get("start"), cpu.get("end")
    if not start or not end or end["_wall"] <= start["_wall"]:
        return {}
    wall = end["_wall"] - start["_wall"]
    return {k: round(100 * (end[k] - start[k]) / wall, 1) for k in end
            if k != "_wall" and k in start}


def _summarise(scenario: str, engine: str, clients: int, seconds: float, tally: _Tally,
               cpu: dict[str, dict[str, float]]) -> LoadResult:
    lat = sorted(tally.latencies)
    pct = _cpu_pct(cpu)
    client_pct = pct.pop("_client", 0.0)
    ms = 1000.0
    return LoadResult(
        scenario=scenario,
        engine=engine,
        clients=clients,
        seconds=seconds,
        ok=len(lat),
        errors=tally.errors,
        throughput=round(len(lat) / seconds, 1),
        p50_ms=round(percentile(lat, 50) * ms, 2),
        p90_ms=round(percentile(lat, 90) * ms, 2),
        p99_ms=round(percentile(lat, 99) * ms, 2),
        mean_ms=round(sum(lat) / len(lat) * ms, 2) if lat else 0.0,
        max_ms=round(lat[-1] * ms, 2) if lat else 0.0,
        client_cpu_pct=client_pct,
        server_cpu_pct=pct,
        statuses=dict(tally.statuses),
        error_samples=tally.error_samples,
    )
