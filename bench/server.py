"""Start and stop the processes a benchmark talks to: fhirserver, a separate SecantusDB.

Every process is a subprocess of the harness, listens on 127.0.0.1 only, is waited for with
a deadline and stopped with SIGTERM (SIGKILL only if it ignores SIGTERM for too long).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def venv_tool(name: str) -> str | None:
    """Path of a console script next to this interpreter, else on PATH, else None."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (Linux); empty elsewhere."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


def process_cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of one process, without its children (0.0 when unreadable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process and its descendants (0.0 when unreadable)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo, seen = 0.0, [pid], 0
    while todo and seen < 64:
        current = todo.pop()
        seen += 1
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
        todo.extend(child_pids(current))
    return total


class ManagedProcess:
    """A subprocess with its output in a log file, stopped by SIGTERM."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The process id (the process must have been started)."""
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def spawn(self) -> None:
        """Start the process in its own session, output appended to the log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def check_alive(self) -> None:
        """Raise with the log's tail if the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}; log tail:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the process's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, wait up to `timeout` s, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        code = self.proc.returncode
        self.proc = None
        return code


def wait_healthy(process: ManagedProcess, base: str, timeout: float) -> bool:
    """Poll `base`/health until it answers 200 (True) or the deadline passes (False);
    raises if the process dies meanwhile."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            process.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{base}/health").status_code == 200:
                    return True
            time.sleep(0.25)
    return False


@dataclass
class ServerProcess:
    """`python -m fhirserver.cli serve` on a free port and its own data directory."""

    data_dir: Path
    log_path: Path
    demo: bool = False
    wrapper: Sequence[str] = ()
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None

    @property
    def base(self) -> str:
        """The FHIR base URL, e.g. http://127.0.0.1:PORT/fhir."""
        return f"http://{HOST}:{self.port}/fhir"

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 180.0) -> None:
        """Start the server and wait until /fhir/health answers 200 (lifespan done)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRSERVER_")}
        env.pop("MONGODB_URI", None)
        env.pop("REDIS_URL", None)
        env["FHIRSERVER_BENCH_ENDPOINTS"] = "true"
        # The core is measured without token checks unless a scenario sends tokens.
        env["FHIRSERVER_AUTH_REQUIRED"] = "false"
        env["FHIRSERVER_LOG_LEVEL"] = "WARNING"
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        argv = [sys.executable, *self.wrapper, "-m", "fhirserver.cli", "serve",
                "--host", HOST, "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if not self.demo:
            argv.append("--no-demo")
        self.process = ManagedProcess("fhirserver", argv, self.log_path, env)
        self.process.spawn()
        if wait_healthy(self.process, self.base, timeout):
            return
        tail = self.process.log_tail()
        self.stop()
        raise RuntimeError(f"fhirserver not ready within {timeout}s; log tail:\n{tail}")

    def stop(self) -> int | None:
        """Stop the server with SIGTERM (graceful: flushes the embedded store)."""
        if self.process is None:
            return None
        code = self.process.stop()
        self.process = None
        return code
