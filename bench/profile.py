"""Profiling a server under load: py-spy attached to the running server (preferred, sees
every thread including SecantusDB's and native WiredTiger frames), or pyinstrument wrapping
the server command (fallback when py-spy is not installed; main thread only).

`summarise_folded` turns py-spy's raw (collapsed) stacks into a readable text report:
GIL-holding samples per thread, per component (by the innermost Python frame), and the top
functions by inclusive and by self time.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.server import venv_tool

# Innermost Python frame's top-level module -> component, in the order shown.
_COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("HTTP server (uvicorn, h11/httptools)", ("uvicorn", "h11", "httptools", "websockets")),
    ("ASGI framework (starlette, fastapi, anyio)", ("starlette", "fastapi", "anyio")),
    ("pydantic / fhir.resources", ("pydantic", "pydantic_core", "pydantic_settings",
                                   "fhir", "fhir_core")),
    ("MongoDB driver (pymongo, bson)", ("pymongo", "bson", "gridfs")),
    ("SecantusDB (embedded store, Python + WiredTiger)", ("secantus", "secantusdb",
                                                          "wiredtiger")),
    ("redis client", ("redis",)),
    ("metrics / logging", ("prometheus_client", "logging", "pythonjsonlogger")),
    ("JSON (orjson, json)", ("orjson", "json")),
    ("asyncio loop, sockets, threads", ("asyncio", "selectors", "socket", "ssl",
                                        "threading", "concurrent", "queue", "selectors")),
)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_THREAD = re.compile(r"^thread \((?P<tid>[^)]*)\)(?:: (?P<name>.*))?$")
_SITE = re.compile(r"/(?:site|dist)-packages/")
_STDLIB = re.compile(r"/lib/python3\.\d+/")


def py_spy_path() -> str | None:
    """The py-spy executable, if installed."""
    return venv_tool("py-spy")


def start_py_spy(pid: int, seconds: float, out: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start `py-spy record` on `pid` for `seconds`, writing raw collapsed stacks to `out`.

    `--gil`: only the thread holding the GIL is sampled, so the profile shows how the one
    core Python code can use is shared (event loop vs SecantusDB's connection threads).
    `--nonblocking`: the server is not paused for each sample (pausing it 100 times a second
    halved its throughput under load; a sample may now and then be inconsistent).
    """
    exe = py_spy_path()
    if exe is None:
        raise RuntimeError("py-spy is not installed")
    argv = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
            "--rate", "100", "--format", "raw", "--threads", "--gil", "--nonblocking",
            "--full-filenames", "--output", str(out)]
    with log.open("ab") as fh:
        return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def pyinstrument_wrapper(out: Path) -> list[str]:
    """Arguments placed before `-m fhirserver.cli` to run the server under pyinstrument."""
    return ["-m", "pyinstrument", "--renderer", "text", "--outfile", str(out)]


def module_of(path: str) -> str:
    """Dotted module of a source path (site-packages, stdlib or the repo), best effort."""
    for pattern in (_SITE, _STDLIB):
        match = pattern.search(path)
        if match:
            path = path[match.end():]
            break
    else:
        if "/fhirserver/" in path:
            path = "fhirserver/" + path.split("/fhirserver/", 1)[1]
    path = re.sub(r"(/__init__)?\.py$", "", path.lstrip("/"))
    return path.replace("/", ".")


def component(module: str) -> str:
    """The component a module belongs to (fhirserver modules by sub-package)."""
    top = module.split(".")[0]
    if top == "fhirserver":
        return "fhirserver: " + ".".join(module.split(".")[1:3])
    for name, tops in _COMPONENTS:
        if top in tops:
            return name
    return f"other: {top}"


def _parse_line(line: str) -> tuple[str, list[str], int] | None:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    if not stack or not count.isdigit():
        return None
    frames = stack.split(";")
    match = _THREAD.match(frames[0])
    if match is None:
        return "?", frames, int(count)
    name = match["name"] or f"thread {match['tid']}"
    return re.sub(r"[-_ ]?\d+$", "", name) or name, frames[1:], int(count)


def _python_frames(frames: Iterable[str]) -> list[tuple[str, str]]:
    """(module, 'module:function') of each Python frame, outermost first."""
    out = []
    for frame in frames:
        match = _FRAME.match(frame)
        if match and match["file"].endswith(".py"):
            module = module_of(match["file"])
            out.append((module, f"{module}:{match['func']}"))
    return out


def _native_lib(frames: list[str]) -> str | None:
    """The shared library of the innermost native frame, when it is one (e.g. WiredTiger)."""
    match = _FRAME.match(frames[-1]) if frames else None
    if match and not match["file"].endswith(".py") and match["line"] is None:
        return match["file"]
    return None


@dataclass
class _Tally:
    total: int = 0
    threads: Counter[str] = field(default_factory=Counter)
    components: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    self_time: Counter[str] = field(default_factory=Counter)
    libs: Counter[str] = field(default_factory=Counter)


def _tally(text: str) -> _Tally:
    """Samples of py-spy raw output per thread, component, function and native library."""
    t = _Tally()
    for line in text.splitlines():
        parsed = _parse_line(line)
        if parsed is None:
            continue
        thread, frames, count = parsed
        t.total += count
        t.threads[thread] += count
        py = _python_frames(frames)
        if py:
            t.components[component(py[-1][0])] += count
            t.self_time[py[-1][1]] += count
            for func in {f for _, f in py}:
                t.inclusive[func] += count
        else:
            t.components["native only (no Python frame)"] += count
        lib = _native_lib(frames)
        if lib:
            t.libs[lib] += count
    return t


def thread_group(name: str) -> str:
    """Event loop (MainThread), the embedded store's threads, or other threads."""
    if name == "MainThread":
        return "event loop (MainThread)"
    if name.startswith("secantus"):
        return "embedded store threads (secantus-*)"
    return "other threads"


def gil_shares(text: str, top: int = 8) -> dict[str, Any]:
    """Share of GIL-holding samples (%) per thread group, thread, component and function."""
    t = _tally(text)
    if not t.total:
        return {"samples": 0}

    def pct(counter: Counter[str], limit: int | None = None) -> dict[str, float]:
        return {k: round(100 * n / t.total, 1) for k, n in counter.most_common(limit)}

    groups: Counter[str] = Counter()
    for name, n in t.threads.items():
        groups[thread_group(name)] += n
    return {"samples": t.total, "thread_groups": pct(groups), "threads": pct(t.threads, top),
            "components": pct(t.components, top), "self": pct(t.self_time, top)}


def summarise_folded(text: str, title: str, top: int = 25) -> str:
    """A text report of py-spy raw output (one `stack count` line per distinct stack)."""
    tally = _tally(text)
    total, threads, components = tally.total, tally.threads, tally.components
    inclusive, self_time, libs = tally.inclusive, tally.self_time, tally.libs
    if not total:
        return f"{title}\n\nno samples\n"
    groups: Counter[str] = Counter()
    for name, n in threads.items():
        groups[thread_group(name)] += n

    def table(counter: Counter[str], limit: int) -> list[str]:
        return [f"  {100 * n / total:5.1f}%  {key}" for key, n in counter.most_common(limit)]

    lines = [title, "", f"{total} samples (100/s, the thread holding the GIL; % of samples)", "",
             "Per thread group (who holds the GIL):", *table(groups, 5), "",
             "Per thread:", *table(threads, 10), "",
             "Per component (innermost Python frame: that code and the C it calls):",
             *table(components, 20), "",
             *(["Innermost native library (with --native):", *table(libs, 10), ""]
               if libs else []),
             f"Top {top} functions, inclusive:", *table(inclusive, top), "",
             f"Top {top} functions, self (innermost Python frame):", *table(self_time, top), ""]
    return "\n".join(lines)
