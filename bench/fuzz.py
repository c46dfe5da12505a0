"""`make fuzz`: schemathesis against the server's OpenAPI schema, looking for 5xx.

Starts the server with the demo data on a fresh temporary data dir, reads its
`/fhir/openapi.json` and makes it fuzzable (`bench.fuzz_schema.augment`: FastAPI's schema
declares no FHIR query parameters or bodies, so those are added from the server's own
CapabilityStatement and OperationDefinitions, with examples from the demo data), then runs
`schemathesis run <schema> --checks not_a_server_error` with a bounded number of examples
per operation and a wall-clock limit. Lists every 5xx response (method, URL, body, and the
response) from the HAR log, and the requests sent per operation.

Writes bench/results/fuzz.json (examples run, status code counts, per operation, every
distinct 5xx) and fuzz.txt (the same, readable). Exit code: 0 clean; 1 any 5xx was seen;
2 schemathesis did not run properly, or some operation of the server's schema got no
request (the run did not exercise every route).

Environment: FUZZ_EXAMPLES (50 per operation), FUZZ_SECONDS (600: wall-clock limit of the
schemathesis run), FUZZ_WORKERS (2), FUZZ_SEED (1), FUZZ_PHASES
(examples,coverage,fuzzing), FUZZ_KEEP (0: keep the temp dir with schema, reports, logs).
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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from bench import cli
from bench.fuzz_schema import OPERATION_HEADER, augment, collect, route_regex
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


def schemathesis_argv(schema: str, origin: str, report_dir: Path) -> list[str]:
    """The schemathesis command line, bounded by FUZZ_* settings."""
    exe = venv_tool("schemathesis") or venv_tool("st")
    if exe is None:
        raise RuntimeError("schemathesis is not installed (pip install -e '.[bench]')")
    return [
        exe, "run", schema, "--url", origin,
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


def server_log_errors(log_path: Path, limit: int = 40) -> list[str]:
    """Distinct errors of the server's (JSON lines) log: message and the traceback's end."""
    seen: dict[str, None] = {}
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            if "Traceback" in line or "ERROR" in line:
                seen.setdefault(line[:1500], None)
            continue
        if record.get("level") not in ("ERROR", "CRITICAL") and "exc_info" not in record:
            continue
        if record.get("logger") == "uvicorn.error" and "exc_info" in record:
            continue  # the same exception, re-logged by uvicorn after our handler
        tb = str(record.get("exc_info", "")).splitlines()
        where = [t.strip() for t in tb if t.strip().startswith("File ")][-2:]
        text = f"{record.get('logger')}: {record.get('message')}"
        if tb:
            text += " | " + " | ".join([*where, tb[-1].strip()])
        seen.setdefault(text[:1500], None)
        if len(seen) >= limit:
            break
    return list(seen)


def har_entries(har_path: Path) -> list[dict[str, Any]]:
    """The request/response entries of schemathesis's HAR log (empty when missing)."""
    if not har_path.exists():
        return []
    har = json.loads(har_path.read_text() or "{}")
    entries: list[dict[str, Any]] = har.get("log", {}).get("entries", [])
    return entries


def server_errors(entries: list[dict[str, Any]]) -> list[ServerError]:
    """Every 5xx in the HAR log, with its request."""
    out = []
    for entry in entries:
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


def schema_operations(schema: dict[str, Any]) -> list[tuple[str, str]]:
    """(METHOD, path template) of every operation in an OpenAPI schema."""
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    return [(m.upper(), path) for path, item in schema.get("paths", {}).items()
            for m in item if m in methods]


def per_operation(entries: list[dict[str, Any]],
                  operations: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """Requests and status counts per operation (a URL goes to its most specific template)."""
    ranked = sorted(((m, t, route_regex(t)) for m, t in operations),
                    key=lambda o: (o[1].count("{"), -len(o[1])))
    out: dict[str, dict[str, Any]] = {f"{m} {t}": {"requests": 0, "statuses": Counter()}
                                      for m, t in operations}
    for entry in entries:
        req = entry.get("request", {})
        method, path = req.get("method", "?"), unquote(urlsplit(req.get("url", "")).path)
        label = next((h.get("value") for h in req.get("headers", [])
                      if str(h.get("name", "")).lower() == OPERATION_HEADER.lower()), None)
        if label not in out or not str(label).startswith(f"{method} "):
            label = next((f"{m} {t}" for m, t, rx in ranked
                          if m == method and rx.match(path)), None)
        if label is not None:
            row = out[label]
            row["requests"] += 1
            row["statuses"][str(entry.get("response", {}).get("status", 0))] += 1
    return {k: {"requests": v["requests"], "statuses": dict(sorted(v["statuses"].items()))}
            for k, v in out.items()}


def distinct(errors: list[ServerError]) -> list[tuple[ServerError, int]]:
    """Each distinct 5xx (by method, path, response) once, with how often it was seen."""
    unique: dict[tuple[str, str, str], tuple[ServerError, int]] = {}
    for err in errors:
        first, count = unique.get(err.key(), (err, 0))
        unique[err.key()] = (first, count + 1)
    return list(unique.values())


def build_summary(report: dict[str, Any], entries: list[dict[str, Any]],
                  operations: list[tuple[str, str]], server_ops: list[tuple[str, str]],
                  code: int, log_errors: list[str], seconds: float) -> dict[str, Any]:
    """The fuzz.json payload."""
    errors = server_errors(entries)
    ops = per_operation(entries, operations)
    untested = [f"{m} {t}" for m, t in operations if ops[f"{m} {t}"]["requests"] == 0]
    reported_5xx = [f for f in report.get("failures", []) if f.get("code") == "not_a_server_error"]
    incomplete = (not report or report.get("operations", {}).get("errored")
                  or bool(untested))
    verdict = "5xx" if errors or reported_5xx else "incomplete" if incomplete else "clean"
    statuses = Counter(str(e.get("response", {}).get("status", 0)) for e in entries)
    return {
        "result": verdict,
        "seconds": round(seconds, 1),
        "schemathesis": {
            "version": report.get("schemathesis_version"),
            "command": report.get("command"),
            "exit_code": code,
            "stop_reason": report.get("stop_reason"),
            "operations": report.get("operations"),
            "phases": {k: v.get("status") for k, v in (report.get("phases") or {}).items()},
            "test_cases": report.get("test_cases"),
            "failures": report.get("failures", []),
            "errors": report.get("errors", []),
        },
        "examples_run": (report.get("test_cases") or {}).get("generated"),
        "requests": len(entries),
        "status_counts": dict(sorted(statuses.items())),
        "server_schema_operations": [f"{m} {t}" for m, t in server_ops],
        "untested_operations": untested,
        "per_operation": ops,
        "server_errors": [{"status": e.status, "count": n, "method": e.method, "url": e.url,
                           "body": e.body[:2000], "response": e.response}
                          for e, n in distinct(errors)],
        "server_log_errors": log_errors,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The text written to fuzz.txt."""
    st = summary["schemathesis"]
    ops = st.get("operations") or {}
    cases = st.get("test_cases") or {}
    lines = [
        f"fhirserver fuzz: {summary['result'].upper()} (schemathesis {st.get('version')}, "
        "check not_a_server_error)",
        f"command: {st.get('command', '?')}",
        f"schemathesis exit code {st['exit_code']}, stop reason {st.get('stop_reason', '?')}, "
        f"{summary['seconds']:.0f}s",
        f"operations tested {ops.get('tested', '?')}/{ops.get('selected', '?')}, "
        f"test cases {cases.get('generated', '?')}, with failures "
        f"{cases.get('with_failures', '?')}, errored {cases.get('errored', '?')}",
        f"requests {summary['requests']}, status codes " + ", ".join(
            f"{k}: {v}" for k, v in summary["status_counts"].items()),
        "",
        "requests per operation (status: count):",
    ]
    for name, row in summary["per_operation"].items():
        codes = " ".join(f"{k}:{v}" for k, v in row["statuses"].items())
        lines.append(f"  {row['requests']:6d}  {name}  [{codes}]")
    if summary["untested_operations"]:
        lines += ["", "operations that got no request: "
                  + ", ".join(summary["untested_operations"])]
    errs = summary["server_errors"]
    lines += ["", f"5xx responses: {sum(e['count'] for e in errs)} ({len(errs)} distinct by "
              "method, path, response)"]
    for e in errs:
        lines += ["", f"- {e['status']} x{e['count']}: {e['method']} {urlsplit(e['url']).path}",
                  f"  url: {e['url']}"]
        if e["body"]:
            lines.append(f"  body: {e['body'][:800]}")
        lines.append(f"  response: {e['response'][:400]}")
    for group in st.get("failures", []):
        lines.append(f"failure group: {group.get('title')} x{group.get('count')} "
                     f"{group.get('operations')}")
    for group in st.get("errors", []):
        lines.append(f"schemathesis error: {group.get('title')} x{group.get('count')}")
    if summary["server_log_errors"]:
        lines += ["", "server log errors:", *(f"  {e}" for e in summary["server_log_errors"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer; 0 clean, 1 some 5xx found, 2 incomplete (see the module doc)."""
    cli.parser("bench.fuzz", __doc__).parse_args(argv)
    limit = float(os.environ.get("FUZZ_SECONDS", "600"))
    keep = os.environ.get("FUZZ_KEEP", "0") == "1"
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fhirfuzz-"))
    report_dir = work / "report"
    server = ServerProcess(work / "data", work / "server.log", demo=True)
    started = time.perf_counter()
    try:
        with running(server):
            facts = collect(server.base)
            schema = augment(facts)
            schema_path = work / "openapi-fuzz.json"
            schema_path.write_text(json.dumps(schema, indent=1))
            origin = server.base.rsplit("/fhir", 1)[0]
            operations = schema_operations(schema)
            log(f"server with demo data on {server.base}; fuzzing {len(operations)} operations "
                f"({len(schema_operations(facts.openapi))} in the server's schema)")
            code = run_schemathesis(schemathesis_argv(str(schema_path), origin, report_dir),
                                    work, work / "schemathesis.out", limit)
        seconds = time.perf_counter() - started
        report_path = report_dir / "report.json"
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        summary = build_summary(report, har_entries(report_dir / "requests.har"), operations,
                                schema_operations(facts.openapi), code,
                                server_log_errors(server.log_path), seconds)
        (RESULTS / "fuzz.json").write_text(json.dumps(summary, indent=2) + "\n")
        text = format_summary(summary)
        (RESULTS / "fuzz.txt").write_text(text)
        print(text)
        if not report:
            out_tail = (work / "schemathesis.out").read_text(errors="replace")[-3000:]
            print(out_tail, file=sys.stderr)
        return {"clean": 0, "5xx": 1}.get(summary["result"], 2)
    finally:
        if keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
