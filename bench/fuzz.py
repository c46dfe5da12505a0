"""`make fuzz`: schemathesis against the server's OpenAPI schema, looking for 5xx.

Starts the server with the demo data on a fresh temporary data dir, runs `schemathesis run
.../fhir/openapi.json --checks not_a_server_error` with a bounded number of examples per
operation and a wall-clock limit, then lists every 5xx response (method, URL, body, and
the response) from the HAR log. Writes bench/results/fuzz.txt; exits 1 if any 5xx was
seen, 2 if schemathesis could not run.

Environment: FUZZ_EXAMPLES (50 per operation), FUZZ_SECONDS (900: wall-clock limit of the
schemathesis run), FUZZ_WORKERS (2), FUZZ_SEED (1), FUZZ_PHASES
(examples,coverage,fuzzing), FUZZ_KEEP (0: keep the temp dir with reports and logs).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.run import RESULTS, log, running
from bench.server import ServerProcess, venv_tool


@dataclass(frozen=True)
class ServerError:
    """One 5xx response and the request that caused it."""

    status: int
    method: str
    url: str
    body: str
    response: str

    def key(self) -> tuple[str, str, str]:
        """Deduplication key: method, path (no query) and the response's first line."""
        return self.method, urlsplit(self.url).path, self.response[:200]


def schemathesis_argv(schema_url: str, report_dir: Path) -> list[str]:
    """The schemathesis command line, bounded by FUZZ_* settings."""
    exe = venv_tool("schemathesis") or venv_tool("st")
    if exe is None:
        raise RuntimeError("schemathesis is not installed (pip install -e '.[bench]')")
    return [
        exe, "run", schema_url,
        "--checks", "not_a_server_error",
        "--max-examples", os.environ.get("FUZZ_EXAMPLES", "50"),
        "--seed", os.environ.get("FUZZ_SEED", "1"),
        "--workers", os.environ.get("FUZZ_WORKERS", "2"),
        "--phases", os.environ.get("FUZZ_PHASES", "examples,coverage,fuzzing"),
        "--continue-on-failure",
        "--suppress-health-check", "all",
        "--generation-database", "none",
        "--request-timeout", "30",
        "--no-color",
        "--report", "json,har",
        "--report-dir", str(report_dir),
        "--report-json-path", str(report_dir / "report.json"),
        "--report-har-path", str(report_dir / "requests.har"),
    ]


def run_schemathesis(argv: list[str], cwd: Path, out: Path, limit: float) -> int:
    """Run schemathesis; on the time limit, SIGINT (it writes its reports), then SIGKILL."""
    with out.open("wb") as fh:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            return proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            log(f"schemathesis still running after {limit:.0f}s: interrupting")
            proc.send_signal(signal.SIGINT)
            try:
                return proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait(timeout=10)


def server_errors(har_path: Path) -> list[ServerError]:
    """Every 5xx in the HAR log, with its request."""
    if not har_path.exists():
        return []
    har = json.loads(har_path.read_text() or "{}")
    out = []
    for entry in har.get("log", {}).get("entries", []):
        status = int(entry.get("response", {}).get("status", 0))
        if status < 500:
            continue
        req = entry.get("request", {})
        out.append(ServerError(
            status=status,
            method=req.get("method", "?"),
            url=req.get("url", "?"),
            body=(req.get("postData") or {}).get("text", ""),
            response=(entry["response"].get("content") or {}).get("text", "")[:600],
        ))
    return out


def server_log_errors(log_path: Path, limit: int = 40) -> list[str]:
    """Distinct error lines (and traceback ends) of the server's log."""
    seen: dict[str, None] = {}
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for i, line in enumerate(lines):
        is_error = '"ERROR"' in line or "Traceback" in line or '"exc_info"' in line
        if not is_error:
            continue
        text = line if "Traceback" not in line else " | ".join(lines[i:i + 40][-3:])
        seen.setdefault(text[:1500], None)
        if len(seen) >= limit:
            break
    return list(seen)


def format_summary(report: dict[str, Any], errors: list[ServerError], code: int,
                   log_errors: list[str], seconds: float) -> str:
    """The text written to fuzz.txt."""
    unique: dict[tuple[str, str, str], tuple[ServerError, int]] = {}
    for err in errors:
        first, count = unique.get(err.key(), (err, 0))
        unique[err.key()] = (first, count + 1)
    cases = report.get("test_cases", {})
    ops = report.get("operations") or {}
    lines = [
        "fhirserver fuzz: schemathesis, check not_a_server_error",
        f"command: {report.get('command', '?')}",
        f"schemathesis exit code {code}, stop reason {report.get('stop_reason', '?')}, "
        f"{seconds:.0f}s",
        f"operations tested {ops.get('tested', '?')}/{ops.get('selected', '?')}, "
        f"test cases {cases.get('generated', '?')}, with failures "
        f"{cases.get('with_failures', '?')}, errored {cases.get('errored', '?')}",
        "",
        f"5xx responses: {len(errors)} ({len(unique)} distinct by method, path, response)",
    ]
    for (method, path, _), (err, count) in unique.items():
        lines += ["", f"- {err.status} x{count}: {method} {path}", f"  url: {err.url}"]
        if err.body:
            lines.append(f"  body: {err.body[:800]}")
        lines.append(f"  response: {err.response[:400]}")
    for group in report.get("failures", []):
        lines.append(f"failure group: {group.get('title')} x{group.get('count')} "
                     f"{group.get('operations')}")
    for group in report.get("errors", []):
        lines.append(f"schemathesis error: {group.get('title')} x{group.get('count')}")
    if log_errors:
        lines += ["", "server log errors:", *(f"  {e}" for e in log_errors)]
    return "\n".join(lines) + "\n"


def main() -> int:
    """Run the fuzzer; 0 clean, 1 some 5xx found, 2 schemathesis did not run properly."""
    limit = float(os.environ.get("FUZZ_SECONDS", "900"))
    keep = os.environ.get("FUZZ_KEEP", "0") == "1"
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fhirfuzz-"))
    report_dir = work / "report"
    server = ServerProcess(work / "data", work / "server.log", demo=True)
    started = time.perf_counter()
    try:
        with running(server):
            schema = f"{server.base}/openapi.json"
            log(f"server with demo data on {server.base}; fuzzing {schema}")
            code = run_schemathesis(schemathesis_argv(schema, report_dir), work,
                                    work / "schemathesis.out", limit)
        seconds = time.perf_counter() - started
        report_path = report_dir / "report.json"
        har = report_dir / "requests.har"
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        errors = server_errors(har)
        summary = format_summary(report, errors, code, server_log_errors(server.log_path),
                                 seconds)
        (RESULTS / "fuzz.txt").write_text(summary)
        print(summary)
        out_tail = (work / "schemathesis.out").read_text(errors="replace")[-3000:]
        if not report:
            print(out_tail, file=sys.stderr)
            return 2
        return 1 if errors or any(f.get("code") == "not_a_server_error"
                                  for f in report.get("failures", [])) else 0
    finally:
        if keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
