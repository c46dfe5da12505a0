"""Results: the printed table, `core.json` and `core.png`."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from bench.scenarios import CEILING, TARGETS

MODE_LABELS = {"in_process": "embedded store in the server process",
               "separate_store": "SecantusDB in its own process"}


def machine_info() -> dict[str, Any]:
    """CPU count, Python and platform: what the figures depend on."""
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def judge(scenarios: dict[str, dict[str, Any]], ceiling: float | None) -> list[dict[str, Any]]:
    """Pass/miss of every target whose scenario was measured."""
    out = []
    for target in TARGETS:
        result = scenarios.get(target.scenario)
        if result is not None:
            verdict = target.judge(result["throughput"], ceiling)
            out.append({"scenario": target.scenario, **verdict})
    return out


def format_table(modes: dict[str, dict[str, Any]], ceiling: float | None) -> str:
    """A plain-text table of every mode's scenarios, with the ratio to the ceiling."""
    head = (f"{'scenario':<20}{'req/s':>9}{'vs ceil':>9}{'p50 ms':>9}{'p90 ms':>9}"
            f"{'p99 ms':>9}{'errors':>8}{'srv CPU':>9}{'cli CPU':>9}")
    lines: list[str] = []
    for mode, data in modes.items():
        lines += ["", f"[{mode}] {MODE_LABELS.get(mode, mode)}", head, "-" * len(head)]
        for name, r in data["scenarios"].items():
            ratio = f"{r['throughput'] / ceiling:.0%}" if ceiling else "-"
            srv = "+".join(f"{v:.0f}" for v in r["server_cpu_pct"].values()) + "%"
            lines.append(
                f"{name:<20}{r['throughput']:>9.0f}{ratio:>9}{r['p50_ms']:>9.1f}"
                f"{r['p90_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['errors']:>8}{srv:>9}"
                f"{r['client_cpu_pct']:>8.0f}%"
            )
        for verdict in data.get("targets", []):
            mark = "PASS" if verdict["pass"] else "MISS"
            lines.append(f"  {mark}  {verdict['target']}: {verdict['measured']}")
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write the results atomically (tmp file, then rename)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def plot(path: Path, modes: dict[str, dict[str, Any]], ceiling: float | None) -> None:
    """Bar charts: throughput per scenario (ceiling as a line) and p50/p99 latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = []
    for data in modes.values():
        names += [n for n in data["scenarios"] if n not in names]
    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / max(1, len(modes))
    xs = range(len(names))
    for m, (mode, data) in enumerate(modes.items()):
        offs = [x - 0.4 + width * (m + 0.5) for x in xs]
        rows = [data["scenarios"].get(n) for n in names]
        ax_t.bar(offs, [r["throughput"] if r else 0 for r in rows], width, label=mode)
        ax_l.bar(offs, [r["p50_ms"] if r else 0 for r in rows], width * 0.5,
                 label=f"{mode} p50")
        ax_l.bar([o + width * 0.5 for o in offs], [r["p99_ms"] if r else 0 for r in rows],
                 width * 0.5, label=f"{mode} p99", alpha=0.6)
    if ceiling:
        ax_t.axhline(ceiling, color="grey", linestyle="--", label="ceiling (_noop)")
    for target in TARGETS:
        if target.min_rps is not None and target.scenario in names:
            x = names.index(target.scenario)
            ax_t.hlines(target.min_rps, x - 0.45, x + 0.45, colors="red", label="target")
        elif target.min_ratio is not None and ceiling and target.scenario in names:
            x = names.index(target.scenario)
            ax_t.hlines(target.min_ratio * ceiling, x - 0.45, x + 0.45, colors="red")
    for ax, title, unit in ((ax_t, "Throughput", "req/s"), (ax_l, "Latency", "ms")):
        ax.set_xticks(list(xs), names, rotation=20, ha="right")
        ax.set_title(title)
        ax.set_ylabel(unit)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax_l.set_yscale("log")
    fig.suptitle(f"fhirserver core benchmark (clients={_clients(modes)}, {os.cpu_count()} CPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _clients(modes: dict[str, dict[str, Any]]) -> int | str:
    for data in modes.values():
        for r in data["scenarios"].values():
            return int(r["clients"])
    return "?"


def ceiling_of(modes: dict[str, dict[str, Any]]) -> float | None:
    """The ceiling throughput (first mode that measured it)."""
    for data in modes.values():
        if CEILING in data["scenarios"]:
            return float(data["scenarios"][CEILING]["throughput"])
    return None
