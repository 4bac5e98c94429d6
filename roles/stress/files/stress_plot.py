"""Plot the latency over time of a playbooks/stress.yml run.

Usage: stress_plot.py STRESS_FACTS_JSON OUT_PNG

Reads the per-second timeline that cynic.cluster.cynic_stress returns (``cluster_run.timeline``
and, when there was one, ``single_run.timeline`` of stress-facts.json) and draws two panels:
p50/p99 latency from the intended start, and requests sent/ok per second. Runs on the controller
with its virtualenv (matplotlib).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def series(timeline: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(s["second"], s[key]) for s in timeline if s.get(key) is not None]
    return [p[0] for p in points], [float(p[1]) for p in points]


def num(value: object) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else "?"


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.stderr.write(__doc__ or "")
        return 2
    facts = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        sys.stderr.write(f"stress_plot: matplotlib is not installed in {sys.executable}: {exc}\n")
        return 3

    runs = [("all instances", facts.get("cluster_run") or {}, "tab:blue")]
    if facts.get("single_run"):
        target = (facts.get("single_target") or {}).get("instance_id", "one instance")
        runs.append((f"one instance ({target})", facts["single_run"], "tab:orange"))

    fig, (lat, rate) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for label, run, colour in runs:
        timeline = run.get("timeline") or []
        x, y = series(timeline, "p99_ms")
        lat.plot(x, y, color=colour, linewidth=1.6, label=f"{label}: p99")
        x, y = series(timeline, "p50_ms")
        lat.plot(x, y, color=colour, linewidth=1.0, linestyle="--", label=f"{label}: p50")
        x, y = series(timeline, "sent")
        rate.plot(x, y, color=colour, linewidth=1.0, linestyle=":", label=f"{label}: sent")
        x, y = series(timeline, "ok")
        rate.plot(x, y, color=colour, linewidth=1.6, label=f"{label}: ok")
        failed = [(s["second"], s.get("errors", 0) + s.get("dropped", 0)) for s in timeline]
        if any(count for _second, count in failed):
            rate.plot([p[0] for p in failed], [p[1] for p in failed], color=colour, linewidth=1.0,
                      linestyle="-.", label=f"{label}: errors + dropped")
    target = (facts.get("cluster_run") or {}).get("target_rate")
    if target:
        rate.axhline(float(target), color="grey", linewidth=0.8, label=f"target {target:g} req/s")
    lat.set_ylabel("latency from intended start, ms")
    lat.set_yscale("log")
    lat.grid(True, which="both", alpha=0.3)
    lat.legend(fontsize=8, loc="upper right")
    rate.set_ylabel("requests per second")
    rate.set_xlabel("second of the measured window")
    rate.set_ylim(bottom=0)
    rate.grid(True, alpha=0.3)
    rate.legend(fontsize=8, loc="lower right")
    cluster = facts.get("cluster_run") or {}
    fig.suptitle(
        f"CYNIC stress: {num(cluster.get('target_rate'))} req/s for {num(cluster.get('duration_s'))} s "
        f"through the load balancer, run {cluster.get('run_id', '?')}",
    )
    fig.tight_layout()
    out = Path(argv[2])
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
