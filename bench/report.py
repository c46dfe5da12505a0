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
               "separate_store": "SecantusDB in its own process (default: the server's child)",
               "authorized": "the default, authorization on: every request a system token"}


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


def format_table(modes: dict[str, dict[str, Any]]) -> str:
    """A plain-text table of every mode's scenarios, with the ratio to that mode's ceiling."""
    head = (f"{'scenario':<20}{'req/s':>9}{'vs ceil':>9}{'p50 ms':>9}{'p90 ms':>9}"
            f"{'p99 ms':>9}{'errors':>8}{'srv CPU':>9}{'cli CPU':>9}")
    lines: list[str] = []
    for mode, data in modes.items():
        ceiling = data.get("ceiling_rps")
        lines += ["", f"[{mode}] {MODE_LABELS.get(mode, mode)}; ceiling (GET /_noop, same "
                      f"server, same run): {ceiling or 0:.0f} req/s", head, "-" * len(head)]
        for name, r in data["scenarios"].items():
            ratio = f"{r['throughput'] / ceiling:.0%}" if ceiling else "-"
            srv = "+".join(f"{v:.0f}" for v in r["server_cpu_pct"].values()) + "%"
            lines.append(
                f"{name:<20}{r['throughput']:>9.0f}{ratio:>9}{r['p50_ms']:>9.1f}"
                f"{r['p90_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['errors']:>8}{srv:>9}"
                f"{r['client_cpu_pct']:>8.0f}%"
            )
            check = r.get("check") or {}
            if check and not check.get("ok", True):
                lines.append(f"  ^ CHECK FAILED: {check}")
        for verdict in data.get("targets", []):
            mark = "PASS" if verdict["pass"] else "MISS"
            lines.append(f"  {mark}  {verdict['target']}: {verdict['measured']}")
    return "\n".join(lines)


# Scenarios that touch the store, for the in-process / separate-process comparison.
STORE_SCENARIOS = ("read", "search100", "create")


def summary(modes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per mode and target scenario: the headline figures beside the same run's ceiling."""
    out: dict[str, dict[str, Any]] = {}
    for mode, data in modes.items():
        ceiling = data.get("ceiling_rps")
        ceil_row = data["scenarios"].get(CEILING, {})
        rows: dict[str, Any] = {}
        for target in TARGETS:
            r = data["scenarios"].get(target.scenario)
            if r is None:
                continue
            rows[target.scenario] = {
                "throughput_rps": r["throughput"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
                "ceiling_rps": ceiling, "ceiling_p50_ms": ceil_row.get("p50_ms"),
                "ceiling_p99_ms": ceil_row.get("p99_ms"),
                "ratio_to_ceiling": round(r["throughput"] / ceiling, 3) if ceiling else None,
                **{k: v for k, v in target.judge(r["throughput"], ceiling).items()},
            }
        out[mode] = rows
    return out


def ratios_between(
    modes: dict[str, dict[str, Any]], base_mode: str, other_mode: str
) -> dict[str, dict[str, float | None]]:
    """Per scenario: `other_mode` throughput and latency over `base_mode`'s."""
    base, sep = modes[base_mode]["scenarios"], modes[other_mode]["scenarios"]
    ratios: dict[str, dict[str, float | None]] = {}
    for name, r in sep.items():
        b = base.get(name)
        if not b or not b["throughput"]:
            continue
        ratios[name] = {
            "throughput": round(r["throughput"] / b["throughput"], 2),
            "p50": round(r["p50_ms"] / b["p50_ms"], 2) if b["p50_ms"] else None,
            "p99": round(r["p99_ms"] / b["p99_ms"], 2) if b["p99_ms"] else None,
        }
    return ratios


def store_comparison(modes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Separate-process store vs embedded in the server process: ratios and a verdict."""
    ratios = ratios_between(modes, "in_process", "separate_store")
    store = [ratios[n]["throughput"] or 0.0 for n in STORE_SCENARIOS if n in ratios]
    gmean = 1.0
    for x in store:
        gmean *= max(x, 1e-9)
    gmean = gmean ** (1 / len(store)) if store else 1.0
    if gmean >= 1.10:
        verdict = ("the store in its own process is faster on the store-bound scenarios: "
                   "run it separately (the server then has the GIL to itself)")
    elif gmean <= 0.90:
        verdict = ("the embedded store is faster: keep it in the server process (the extra "
                   "process costs more than sharing the GIL saves)")
    else:
        verdict = ("no clear difference (within 10%, and a shared 2-core machine is noisy): "
                   "keep the embedded default")
    return {"ratios": ratios, "store_scenarios_geomean": round(gmean, 2), "verdict": verdict}


def format_store_comparison(cmp: dict[str, Any]) -> str:
    """The comparison as text."""
    lines = ["separate-process store / embedded (in-process), same run "
             "(>1 throughput = separate is faster; <1 latency = separate is faster):"]
    for name, r in cmp["ratios"].items():
        lines.append(f"  {name:<20} throughput x{r['throughput']}  p50 x{r['p50']}  "
                     f"p99 x{r['p99']}")
    lines.append(f"  geometric mean of throughput ratios over {', '.join(STORE_SCENARIOS)}: "
                 f"x{cmp['store_scenarios_geomean']}")
    lines.append(f"  verdict: {cmp['verdict']}")
    return "\n".join(lines)


def format_authorization_cost(modes: dict[str, dict[str, Any]]) -> str:
    """What checking a token on every request costs: authorized / same server without."""
    lines = ["authorization on / off, same server configuration, same run "
             "(throughput <1 = the share authorization takes):"]
    for name, r in ratios_between(modes, "separate_store", "authorized").items():
        lines.append(f"  {name:<20} throughput x{r['throughput']}  p50 x{r['p50']}  "
                     f"p99 x{r['p99']}")
    return "\n".join(lines)


def format_group_commit(modes: dict[str, dict[str, Any]]) -> str:
    """What the audit writer and the create combiner did in each scenario of every mode
    with the store in its own process, at the run's clients and (`more_clients`) at more."""
    head = (f"{'mode':<16}{'scenario':<20}{'clients':>8}{'req/s':>8}  {'queue':<8}"
            f"{'batches':>8}{'mean batch':>11}{'commit ms':>10}{'busy':>7}")
    lines = ["group commit: each queue commits one batch at a time; busy is its commit time "
             "over the scenario's wall time (warm-up included)", head, "-" * len(head)]
    for mode in ("separate_store", "authorized"):
        data = modes.get(mode)
        if data is None:
            continue
        runs = [*data["scenarios"].items(), *data.get("more_clients", {}).items()]
        for name, r in runs:
            for queue, q in r.get("group_commit", {}).items():
                lines.append(
                    f"{mode:<16}{name:<20}{r['clients']:>8}{r['throughput']:>8.0f}  "
                    f"{queue:<8}{q['batches']:>8}{q['mean_batch']:>11.1f}"
                    f"{q['mean_commit_ms']:>10.2f}{q['busy_pct']:>6.0f}%")
    return "\n".join(lines)


def format_where_time_goes(profiles: dict[str, Any]) -> str:
    """Per profiled scenario: who held the GIL, and the top components and functions."""
    lines: list[str] = []
    for name, prof in profiles.items():
        gil = prof.get("gil")
        if not gil or not gil.get("samples"):
            lines.append(f"  {name}: see {prof.get('file')}")
            continue
        lines.append(f"  {name} ({prof['throughput']:.0f} req/s under py-spy): GIL held "
                     f"{gil.get('gil_held_pct_of_wall', '?')}% of wall time; by "
                     + ", ".join(f"{k} {v}%" for k, v in gil["thread_groups"].items()))
        lines.append("    components: " + ", ".join(
            f"{k} {v}%" for k, v in list(gil["components"].items())[:5]))
        lines.append("    self time: " + ", ".join(
            f"{k} {v}%" for k, v in list(gil["self"].items())[:5]))
    if not lines:
        return ""
    py_spy = any((p.get("gil") or {}).get("samples") for p in profiles.values())
    head = ("where the time goes (py-spy --gil: % of GIL-holding samples; details in "
            "bench/results/profile-*.txt):" if py_spy else
            "where the time goes (pyinstrument, main thread only, whole server lifetime "
            "including seeding; install py-spy for the GIL view):")
    return "\n".join([head, *lines])


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
        bars = ax_t.bar(offs, [r["throughput"] if r else 0 for r in rows], width, label=mode)
        mode_ceiling = data.get("ceiling_rps") or ceiling
        ax_t.bar_label(bars, labels=[
            "" if r is None else f"{r['throughput']:.0f}" + (
                f"\n{_pct(r['throughput'] / mode_ceiling)}" if mode_ceiling else "")
            for r in rows], fontsize=7)
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
        ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper right")
    ax_l.set_yscale("log")
    ax_t.set_yscale("log")  # search pages and the ceiling differ by orders of magnitude
    ax_t.set_ylim(top=ax_t.get_ylim()[1] * 4)  # room for the bar labels
    ax_t.set_title("Throughput (bar labels: req/s and % of the same server's ceiling)",
                   fontsize=10)
    fig.suptitle(f"fhirserver core benchmark (clients={_clients(modes)}, {os.cpu_count()} CPUs, "
                 "red: targets)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(ratio: float) -> str:
    return f"{ratio:.0%}" if ratio >= 0.01 else f"{ratio:.1%}"


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
