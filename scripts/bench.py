"""`make bench`: capacity of the lab cluster (container cynic-lab, `make lab`).

Ramps an open-loop constant rate until the service objective breaks, for three targets, all in
one run:

  1. one instance alone, POST /judge, directly on its port (127.0.0.1:8001);
  2. all three instances through nginx, POST /judge (127.0.0.1:80);
  3. the same stack through nginx, POST /_bench/empty (the node's no-work endpoint): the ceiling
     of nginx + uvicorn + the generator on this machine, without judging or storing.

A step holds the objective when p99 latency (from the intended start) <= 100 ms over all requests
and over the 2xx answers alone, no request failed, none was dropped, and the generator kept its
schedule (sent rate >= 99% of target). The engine counts a dropped request in the all-requests
latency at the timeout (5 s here), so a step that drops more than 1% shows it in its p99.

The load generator is the collection's own engine (tools/cynic-stress over
plugins/module_utils/cynic_load.py, the cynic_stress module's engine) run INSIDE the container
with the loadgen role's virtualenv, against 127.0.0.1: no traffic leaves the container.

Then, unless --skip-llm, the LLM tier (section "The LLM tier: one and two Ollama servers"): the
same level mix (--llm-mix, default 90% REFLEX / 10% MICRO) through nginx, ramped with one Ollama
(the lab's own) and then with two (the lab's and a second container, cynic-lab-llm2, converged with
the ollama role alone through a temporary inventory); both serve with the stand-in's cpu-2b profile.
The instances are pointed at one then both with rolling_update.yml -e cynic_ollama_urls=[...]. There
a step holds when no request failed, none was dropped, the generator kept its schedule and at most
--llm-max-degraded-share of the answers that asked an LLM were degraded; latency is reported, not
judged (a MICRO call takes seconds on a CPU).

The empty endpoint exists only when the node runs with CYNIC_BENCH_ROUTES=1: the script sets it
through the cynic role (playbooks/rolling_update.yml -e cynic_extra_env=...), which restarts the
instances one at a time, and restores the inventory's settings (another rolling update) at the
end, whatever happened (the Ollama servers too: the lab's Ollama gets its inventory's settings back
and the second container is removed). It writes reports/bench-cluster.md and reports/bench-cluster.json.

Usage: .venv/bin/python scripts/bench.py [--out reports/bench-cluster.md] [--duration S] [--factor F]
         [--skip-llm | --only-llm] [--llm-mix reflex=90:REFLEX,micro=10:MICRO] [--llm-max-degraded-share 0.01]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins" / "module_utils"))
from benchlib import (  # noqa: E402  (after the path it needs)
    ENGINE_DIR,
    LOADGEN_PY,
    MIN_RATE_RATIO,
    ROOT,
    SETTLE_CPU,
    SETTLE_MAX_S,
    Lab,
    Target,
    add_ramp_arguments,
    best_step,
    capacity_table,
    fmt,
    loadavg,
    log,
    playbook,
    read_raw,
    run,
    save_report,
    steps_table,
)
from cynic_workload import mix_from_specs  # noqa: E402  (standard library only, like the engine's CLI)

INVENTORY = ROOT / "inventories" / "lab"
LAB = Lab(container="cynic-lab", p99_limit_ms=100.0)
CONTAINER = LAB.container
P99_LIMIT_MS = LAB.p99_limit_ms
JUDGE_BODY = '{"content": "cynic bench {run} cell {i}", "reality": "CODE", "analysis": "JUDGE", "budget_usd": 0.01}'


def set_bench_routes(enabled: bool) -> None:
    """Roll the instances with CYNIC_BENCH_ROUTES=1 (enabled) or with the inventory's settings."""
    rolling = ROOT / "playbooks" / "rolling_update.yml"
    if not enabled:
        playbook(INVENTORY, rolling)
        return
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"cynic_extra_env": {"CYNIC_BENCH_ROUTES": "1"}}, handle)
    try:
        playbook(INVENTORY, rolling, "-e", f"@{handle.name}")
    finally:
        os.unlink(handle.name)


# --- the LLM tier: one and two Ollama servers ----------------------------------------------------

LLM2 = "cynic-lab-llm2"  # the second Ollama, on Docker's default bridge like the lab
LLM2_IMAGE = "cynic-lab/debian12:latest"
LLM_PLAYBOOK = ROOT / "scripts" / "bench-llm.yml"
LLM_WORKDIR = ROOT / ".cache" / "bench-llm"
SERVING = {"OLLAMA_STANDIN_SERVING": "cpu-2b"}  # the stand-in's CPU profile (tests/standins/ollama/README.md)
LAB_OLLAMA_URL = "http://127.0.0.1:11434"  # the lab's own Ollama, as the instances reach it
INSTANCE_PORTS = (8001, 8002, 8003)
LEVELS = ("REFLEX", "MICRO", "MACRO")
LLM_CALLS_PER_LEVEL = {"REFLEX": 0, "MICRO": 1, "MACRO": 3}  # cynic_node/judge.py: MICRO one dog, MACRO three
DEFAULT_LLM_MIX = "reflex=90:REFLEX,micro=10:MICRO"
GAUGES = ("cynic_llm_calls_in_flight", "cynic_llm_calls_waiting", "cynic_llm_server_in_flight")


def parse_llm_mix(text: str) -> list[tuple[str, float, str]]:
    """`NAME=WEIGHT:LEVEL,...` as (name, weight, level), checked; at least one kind must ask an LLM.
    The spec and its names and weights are the load engine's own (cynic_workload.mix_from_specs)."""
    kinds = [(k["name"], float(k["weight"]), k["body"]["level"].upper())
             for k in mix_from_specs([part.strip() for part in text.split(",")], {})]
    for name, _weight, level in kinds:
        if level not in LEVELS:
            raise ValueError(f"mix kind {name!r}: the level must be one of {', '.join(LEVELS)}, got {level!r}")
    if not any(LLM_CALLS_PER_LEVEL[level] for _n, _w, level in kinds):
        raise ValueError(f"the mix {text!r} asks no LLM: give a MICRO or MACRO kind")
    return kinds


def mix_label(kinds: list[tuple[str, float, str]]) -> str:
    total = sum(w for _n, w, _l in kinds)
    return " / ".join(f"{100 * w / total:g} % {level}" for _n, w, level in kinds)


def llm_calls_per_request(kinds: list[tuple[str, float, str]]) -> float:
    """LLM calls the mix asks per request, on average."""
    total = sum(w for _n, w, _l in kinds)
    return sum(w * LLM_CALLS_PER_LEVEL[level] for _n, w, level in kinds) / total


def expected_capacity(servers: int, parallel: int, seconds_per_call: float, calls_per_request: float) -> dict[str, float]:
    """What the servers can serve: servers x OLLAMA_NUM_PARALLEL calls at a time, each taking
    seconds_per_call with that many in flight (the stand-in's shared CPU: P times one call alone)."""
    calls = servers * parallel / seconds_per_call
    return {"llm_calls_per_s": round(calls, 3), "requests_per_s": round(calls / calls_per_request, 2)}


def parse_metrics(text: str, names: tuple[str, ...] | None = None, prefix: str = "cynic_llm_") -> dict[str, float]:
    """Prometheus text as {series: value}, summed over the `instance` label (all instances together);
    a series keeps its other labels (`server`, `outcome`, `reason`). Lines that do not parse are skipped."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        head, _sp, value = line.rpartition(" ")
        name, brace, labels = head.partition("{")
        if names is not None and name not in names:
            continue
        kept = []
        for pair in labels.rstrip("}").split('",') if brace else []:
            key, _eq, val = pair.partition("=")
            if key and key != "instance":
                kept.append(f'{key}="{val.strip(chr(34))}"')
        try:
            number = float(value)
        except ValueError:
            continue
        series = name + ("{" + ",".join(sorted(kept)) + "}" if kept else "")
        out[series] = out.get(series, 0.0) + number
    return out


def counter_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The counters' (…_total) increase over a step, zero increases left out."""
    return {k: round(v - before.get(k, 0.0), 3) for k, v in sorted(after.items())
            if "_total" in k and v - before.get(k, 0.0) > 0}


def gauge_summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    """Mean and max over the samples of each gauge series (a missing series counts as 0)."""
    series = sorted({k for sample in samples for k in sample})
    return {"samples": len(samples),
            **{k: {"mean": round(sum(s.get(k, 0.0) for s in samples) / len(samples), 2),
                   "max": max(s.get(k, 0.0) for s in samples)} for k in series}} if samples else {"samples": 0}


# Run inside the lab: every instance's /metrics, one JSON list of texts per line. With arguments
# WARMUP DURATION: wait WARMUP s, then sample once a second for DURATION s; without: once.
METRICS_SAMPLER = """
import json, sys, time, urllib.request
ports = %r
def read():
    texts = []
    for port in ports:
        try:
            texts.append(urllib.request.urlopen('http://127.0.0.1:%%d/metrics' %% port, timeout=2).read().decode())
        except Exception:
            texts.append('')
    return texts
if len(sys.argv) > 2:
    time.sleep(float(sys.argv[1]))
    end = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        tick = time.monotonic()
        print(json.dumps(read()), flush=True)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
else:
    print(json.dumps(read()))
""" % (INSTANCE_PORTS,)


@dataclass
class LlmLab(Lab):
    """The lab for the LLM steps: /metrics is sampled during the measured window (calls in flight and
    waiting), and read before and after each step (counters), once the previous step's calls are done."""

    def rounded(self, value: float) -> int:
        """Rates in tenths of a request per second: one server holds a few req/s of a 10 % MICRO mix."""
        unit = self.rate_unit
        return max(unit, round(round(value / unit) * unit, 2))  # type: ignore[return-value]

    def metrics(self) -> dict[str, float]:
        texts = json.loads(self.dexec("python3", "-c", METRICS_SAMPLER))
        out: dict[str, float] = {}
        for text in texts:
            for k, v in parse_metrics(text).items():
                out[k] = out.get(k, 0.0) + v
        return out

    def drained_metrics(self, wait_s: float = 60.0) -> dict[str, Any]:
        """The counters once no LLM call is in flight or waiting (at most wait_s): the last step's
        MICRO requests hold their calls for up to the deadline after the generator stopped."""
        deadline = time.monotonic() + wait_s
        while True:
            series = self.metrics()
            busy = series.get("cynic_llm_calls_in_flight", 0.0) + series.get("cynic_llm_calls_waiting", 0.0)
            if not busy or time.monotonic() > deadline:
                return {"t": time.monotonic(), "busy_left": busy, "series": series}
            time.sleep(1)

    def stress(self, target: Target, rate: float, duration: float, warmup: float, *extra: str) -> dict[str, Any]:
        sampler = subprocess.Popen(["docker", "exec", self.container, "python3", "-c", METRICS_SAMPLER, str(warmup),
                                    str(duration)], text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            facts = super().stress(target, rate, duration, warmup, *extra)
        finally:
            out, _err = sampler.communicate(timeout=warmup + duration + 60)
        samples = []
        for line in out.splitlines():
            total: dict[str, float] = {}
            for text in json.loads(line):
                for k, v in parse_metrics(text, GAUGES).items():
                    total[k] = total.get(k, 0.0) + v
            samples.append(total)
        facts["llm_gauges"] = gauge_summary(samples)
        return facts


def lab_ollama_env(lab: Lab) -> dict[str, str]:
    """The Environment= of the lab's ollama unit now."""
    text = lab.dexec("systemctl", "show", "ollama", "-p", "Environment", "--value")
    return dict(item.partition("=")[::2] for item in text.split())


def with_json_vars(inventory: Path, path: Path, variables: dict[str, Any]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(variables, handle)
    try:
        playbook(inventory, path, "-e", f"@{handle.name}")
    finally:
        os.unlink(handle.name)


def start_llm2() -> str:
    """The second Ollama: a systemd container on the default bridge, converged with the ollama role
    alone through a temporary inventory; its URL as the lab's instances reach it."""
    run(["docker", "rm", "-f", LLM2], timeout=60, check=False, capture_output=True)
    log(f"starting container {LLM2} (the second Ollama)")
    run(["docker", "run", "-d", "--name", LLM2, "--hostname", LLM2,
         "--cap-add", "SYS_ADMIN", "--cgroupns", "host", "--security-opt", "seccomp=unconfined",
         "--tmpfs", "/run", "--tmpfs", "/run/lock", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
         LLM2_IMAGE, "/lib/systemd/systemd"], timeout=120, capture_output=True)
    address = run(["docker", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", LLM2], timeout=30,
                  capture_output=True).stdout.strip()
    if not address:
        raise SystemExit(f"bench: {LLM2} has no address on Docker's default bridge")
    run(["docker", "exec", LLM2, "systemctl", "is-system-running", "--wait"], timeout=180, check=False,
        capture_output=True)
    inventory = {"all": {
        "hosts": {LLM2: {"ansible_connection": "community.docker.docker"}},
        "vars": {"ollama_archive_dir": str(ROOT / ".cache" / "standins"),  # as inventories/lab/group_vars does
                 "ollama_host": f"{address}:11434", "ollama_models": ["gemma2:2b"], "ollama_extra_env": SERVING},
        "children": {"cynic_llm": {"hosts": {LLM2: {}}}}}}
    LLM_WORKDIR.mkdir(parents=True, exist_ok=True)
    path = LLM_WORKDIR / "inventory.json"  # JSON is YAML: the yaml inventory plugin reads it
    path.write_text(json.dumps(inventory, indent=2))
    playbook(path, LLM_PLAYBOOK)
    return f"http://{address}:11434"


def remove_llm2() -> None:
    run(["docker", "rm", "-f", LLM2], timeout=120, check=False, capture_output=True)


def set_ollama_urls(urls: list[str] | None) -> None:
    """Roll the instances onto these Ollama servers (None: the inventory's settings)."""
    rolling = ROOT / "playbooks" / "rolling_update.yml"
    if urls is None:
        playbook(INVENTORY, rolling)
    else:
        with_json_vars(INVENTORY, rolling, {"cynic_ollama_urls": urls})


def health_servers(lab: Lab) -> list[dict[str, Any]]:
    code = ("import json, urllib.request\n"
            "print(json.dumps(json.load(urllib.request.urlopen('http://127.0.0.1:8001/health', timeout=5))"
            ".get('llm', {}).get('servers', [])))")
    return list(json.loads(lab.dexec("python3", "-c", code, check=False) or "[]"))


# Run inside the lab: N MICRO judgments one after another through nginx (one call at a time: nothing
# shares the server's CPU), after one that loads the model; each one's seconds and what it reached.
CALIBRATE = """
import json, sys, time, urllib.request
body = json.loads(sys.argv[1])
out = []
for i in range(int(sys.argv[2]) + 1):
    body['content'] = 'cynic bench calibration %s %d' % (sys.argv[3], i)
    req = urllib.request.Request('http://127.0.0.1:80/judge', data=json.dumps(body).encode(), method='POST',
                                 headers={'Content-Type': 'application/json'})
    t = time.monotonic()
    answer = json.load(urllib.request.urlopen(req, timeout=60))
    out.append({'s': round(time.monotonic() - t, 3), 'level_used': answer.get('level_used'),
                'degraded': answer.get('degraded'), 'llm_calls': answer.get('llm_calls')})
print(json.dumps(out[1:]))
"""


def calibrate(lab: Lab, calls: int = 5) -> dict[str, Any]:
    """Seconds per MICRO call alone (the median of `calls` in a row), with the stand-in's serving profile."""
    body = json.loads(JUDGE_BODY.replace("{run}", "x").replace("{i}", "0"))
    body["level"] = "MICRO"
    runs = json.loads(lab.dexec("python3", "-c", CALIBRATE, json.dumps(body), str(calls), str(int(time.time())),
                                timeout=60 * (calls + 2)))
    good = sorted(r["s"] for r in runs if r["level_used"] == "MICRO" and not r["degraded"])
    if not good:
        raise SystemExit(f"bench: no MICRO judgment reached MICRO alone (the LLM tier is not serving): {runs}")
    return {"runs": runs, "seconds_alone": good[len(good) // 2]}


def llm_targets(kinds: list[tuple[str, float, str]], max_share: float) -> list[Target]:
    args = ["--mix-file", f"{ENGINE_DIR}/llm-mix.json", "--max-degraded-share", str(max_share)]
    label = mix_label(kinds)
    return [Target(f"llm-{n}", f"{word} Ollama server{'s' if n > 1 else ''}, {label}", "http://127.0.0.1:80",
                   "/judge", start=0, body=None, args=args) for n, word in ((1, "one"), (2, "two"))]


def copy_mix(lab: Lab, kinds: list[tuple[str, float, str]]) -> None:
    """The mix as the engine's --mix-file: JUDGE_BODY (a new cell per request and step) with each kind's level."""
    base = json.loads(JUDGE_BODY)
    entries = [{"name": name, "weight": weight, "body": {**base, "level": level}} for name, weight, level in kinds]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(entries, handle)
    try:
        run(["docker", "cp", handle.name, f"{lab.container}:{ENGINE_DIR}/llm-mix.json"], timeout=60)
    finally:
        os.unlink(handle.name)


def llm_tier(lab: Lab, args: argparse.Namespace, kinds: list[tuple[str, float, str]], info: dict[str, Any]) -> list[Target]:
    """Ramp the mix with one Ollama, then two. Restores the lab's Ollama and instances and removes the
    second container, whatever happens."""
    llm = LlmLab(container=lab.container, p99_limit_ms=math.inf, rate_unit=0.1, timeout_s=30.0,  # type: ignore[arg-type]
                 max_degraded_share=args.llm_max_degraded_share)
    llm.probe = llm.drained_metrics
    targets = llm_targets(kinds, args.llm_max_degraded_share)
    copy_mix(lab, kinds)
    env = lab_ollama_env(lab)
    lab_profile_set = all(env.get(k) == v for k, v in SERVING.items())
    section: dict[str, Any] = {"mix": [list(k) for k in kinds], "mix_label": mix_label(kinds),
                               "calls_per_request": llm_calls_per_request(kinds), "serving": SERVING,
                               "lab_inventory_serves_profile": lab_profile_set,
                               "max_degraded_share": args.llm_max_degraded_share,
                               "duration": args.llm_duration, "warmup": args.llm_warmup,
                               "factor": args.llm_factor, "bisections": args.llm_bisections}
    info["llm"] = section
    try:
        if not lab_profile_set:
            log(f"the lab's Ollama serves with {env}: setting {SERVING} for the bench")
            with_json_vars(INVENTORY, LLM_PLAYBOOK, {"ollama_extra_env": {**SERVING}})
        env = lab_ollama_env(lab)
        section["lab_ollama_env"] = env
        parallel = int(env.get("OLLAMA_NUM_PARALLEL", "1"))
        section["num_parallel"] = parallel
        url2 = start_llm2()
        section["servers"] = {"1": [LAB_OLLAMA_URL], "2": [LAB_OLLAMA_URL, url2]}
        for target, n in zip(targets, (1, 2), strict=True):
            urls = section["servers"][str(n)]
            log(f"== LLM tier: the instances on {n} Ollama server(s): {', '.join(urls)}")
            set_ollama_urls(urls)
            section.setdefault("health", {})[str(n)] = health_servers(lab)
            if n == 1:
                section["calibration"] = calibrate(lab)
                log(f"  a MICRO call alone takes {section['calibration']['seconds_alone']} s")
            alone = section["calibration"]["seconds_alone"]
            # The stand-in's slots share one CPU: with P calls in flight each takes P times as long.
            expected = expected_capacity(n, parallel, parallel * alone, section["calls_per_request"])
            section.setdefault("expected", {})[str(n)] = expected
            target.start = llm.rounded(0.6 * expected["requests_per_s"])
            llm.ramp(target, args.llm_factor, args.llm_bisections, max(20, round(4 * expected["requests_per_s"])),
                     args.llm_duration, args.llm_warmup)
    finally:
        log("restoring the inventory's Ollama servers and settings, removing " + LLM2)
        try:
            set_ollama_urls(None)
            if not lab_profile_set:
                playbook(INVENTORY, LLM_PLAYBOOK)
        finally:
            remove_llm2()
    section["restored_servers"] = health_servers(lab)
    section["restored_ollama_env"] = lab_ollama_env(lab)
    return targets


def llm_row(t: Target, section: dict[str, Any], n: int) -> dict[str, Any]:
    """The figures of the step that held the target's highest rate."""
    held = best_step(t)
    row: dict[str, Any] = {"servers": n, "capacity": t.best, "first_fail": t.first_fail}
    if not held:
        return row
    f = held["facts"]
    kinds = f.get("kinds") or {}
    llm_kinds = [name for name, _w, level in section["mix"] if level != "REFLEX"]
    reflex = [name for name, _w, level in section["mix"] if level == "REFLEX"]
    span = f["actual_duration_s"]
    row.update({
        # answered at their level (a degraded answer is a 200 too)
        "llm_req_per_s": round(sum(kinds.get(k, {}).get("ok", 0) - kinds.get(k, {}).get("degraded", 0)
                                   for k in llm_kinds) / span, 2) if span else None,
        "degraded": f.get("degraded"), "llm_asked": f.get("llm_asked"), "degraded_share": f.get("degraded_share"),
        "llm_p50": [kinds.get(k, {}).get("latency_ms", {}).get("p50") for k in llm_kinds],
        "llm_p99": [kinds.get(k, {}).get("latency_ms", {}).get("p99") for k in llm_kinds],
        "reflex_p99": [kinds.get(k, {}).get("latency_ms", {}).get("p99") for k in reflex],
        "gauges": f.get("llm_gauges", {}),
    })
    if held.get("probe_before") and held.get("probe_after"):
        row["counters"] = counter_deltas(held["probe_before"]["series"], held["probe_after"]["series"])
    return row


def ms_list(values: list[Any]) -> str:
    return " / ".join(fmt(v / 1000.0, ".2f") + " s" if v is not None else "-" for v in values) or "-"


def gauge(row: dict[str, Any], name: str) -> str:
    g = row.get("gauges", {}).get(name)
    return f"{g['mean']:g} (max {g['max']:g})" if g else "-"


def llm_report(targets: list[Target], info: dict[str, Any]) -> list[str]:
    """The section "The LLM tier: one and two Ollama servers"."""
    section = info["llm"]
    rows = [llm_row(t, section, n) for t, n in zip(targets, (1, 2), strict=True)]
    cal = section.get("calibration", {})
    alone = cal.get("seconds_alone")
    parallel = section.get("num_parallel")
    lines = [
        "## The LLM tier: one and two Ollama servers",
        "",
        f"The same level mix, **{section['mix_label']}** (new cells: every MICRO asks the LLM), through nginx to the "
        "three instances, with one Ollama server (the lab's own) and then two (the lab's and the container "
        f"`{LLM2}`). A step holds when no request failed, none was dropped, the generator kept >= "
        f"{MIN_RATE_RATIO:.0%} of the rate and at most {section['max_degraded_share']:.0%} of the answers that asked an "
        "LLM were degraded (answered REFLEX past the MICRO deadline or without a server). Latency is reported, not "
        "part of this objective.",
        "",
        "| servers | mix | capacity req/s | MICRO req/s at capacity | degraded share there | MICRO p50 / p99 | "
        "REFLEX p99 | LLM calls in flight, mean (max) | LLM calls waiting, mean (max) | first rate that broke it |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for t, row in zip(targets, rows, strict=True):
        broke = [s for s in t.steps if s["rate"] == t.first_fail and not s["passed"]]
        why = f"{t.first_fail}: " + "; ".join(broke[-1]["reasons"]) if broke else "-"
        share = row.get("degraded_share")
        share_text = "-" if share is None else f"{share:.1%} ({row.get('degraded')} of {row.get('llm_asked')})"
        lines.append(
            f"| {row['servers']} | {section['mix_label']} | **{t.best if t.best is not None else '-'}** | "
            f"{fmt(row.get('llm_req_per_s'), '.2f')} | "
            f"{share_text} | "
            f"{ms_list(row.get('llm_p50', []))} / {ms_list(row.get('llm_p99', []))} | "
            f"{' / '.join(fmt(v) + ' ms' for v in row.get('reflex_p99', [])) or '-'} | "
            f"{gauge(row, 'cynic_llm_calls_in_flight')} | {gauge(row, 'cynic_llm_calls_waiting')} | {why} |")
    one, two = targets
    if one.best and two.best:
        lines += ["", f"**Two servers / one: {two.best / one.best:.2f}x** the capacity of the same mix."]
    lines += ["", "### The serving profile and the arithmetic", ""]
    how_served = ("the lab inventory sets the profile" if section["lab_inventory_serves_profile"]
                  else "set for the bench through the ollama role, restored after")
    if alone and parallel:
        lines += [
            f"- Both servers are the Ollama **stand-in** (tests/standins/ollama), not a real model: profile "
            f"`OLLAMA_STANDIN_SERVING=cpu-2b` (2.5 s load, 14 ms per prompt token, 56 ms per generated token, the "
            "parallel slots sharing one CPU; figures of a published llama.cpp run of a 2B Q4_0 model on a laptop "
            f"i7-10750H, see its README), `OLLAMA_NUM_PARALLEL={parallel}`. The lab's Ollama unit ran with "
            f"{' '.join(f'{k}={v}' for k, v in sorted(section.get('lab_ollama_env', {}).items()) if k.startswith('OLLAMA_'))}"
            f" ({how_served}).",
            f"- Seconds per MICRO call alone: **{alone:g} s** (median of {len(cal['runs'])} MICRO judgments in a row "
            f"through nginx, one at a time: {', '.join(str(r['s']) for r in cal['runs'])} s). With the {parallel} slots "
            f"busy a call takes {parallel} x as long ({parallel * alone:.2f} s): the slots share the CPU.",
        ]
        for t, row, n in zip(targets, rows, (1, 2), strict=True):
            exp = section["expected"][str(n)]
            measured = t.best * section["calls_per_request"] if t.best else None  # LLM calls/s the mix asked
            ratio = f", {measured / exp['llm_calls_per_s']:.0%} of the expected" if measured else ""
            lines.append(
                f"- {n} server{'s' if n > 1 else ''}: expected LLM capacity = {n} x {parallel} / {parallel * alone:.2f} s "
                f"= **{exp['llm_calls_per_s']:.2f} calls/s**, so {exp['requests_per_s']:.1f} req/s of this mix "
                f"({section['calls_per_request']:.2f} calls per request); measured: {t.best if t.best is not None else '-'} req/s "
                f"of the mix = **{fmt(measured, '.2f')} LLM calls/s** asked at capacity{ratio} (answered at MICRO: "
                f"{fmt(row.get('llm_req_per_s'), '.2f')}/s).")
        lines += [
            "- Past the ceiling the objective breaks at once: the calls in flight share the CPU, so each one is "
            "slower the more there are, and MICROs pass their deadline (10 s, `CYNIC_LLM_DEADLINE_MICRO_S`, the wait "
            "for a slot included) together. The ramp's resolution is 0.1 req/s and one bisection.",
        ]
    lines += [
        f"- Steps: {section['warmup']:g} s warm-up then {section['duration']:g} s measured (a MICRO holds its call for "
        "up to its 10 s deadline: the warm-up lets the servers' queues fill to their level at that rate before "
        "anything is counted, and 30 s gives each step at least tens of MICRO answers). Ramp from 0.6x the expected "
        f"rate, x{section['factor']:g} per step, {section['bisections']} bisection(s), a failed step tried once more; "
        "before each step the bench waits until no LLM call is in flight. Counters and gauges from each instance's "
        "/metrics (`cynic_llm_calls_in_flight`, `cynic_llm_calls_waiting`: sampled once a second over the measured "
        "window, summed over the instances).",
        f"- The instances were pointed at the servers with `playbooks/rolling_update.yml -e "
        f"'{{\"cynic_ollama_urls\": {json.dumps(section.get('servers', {}).get('2', []))}}}'` (and the first alone), and "
        "given the inventory's settings back with a plain `rolling_update.yml`; /health then listed "
        f"{', '.join(s.get('url', '?') for s in section.get('restored_servers', [])) or 'no server'}. The second "
        f"server: container `{LLM2}` ({LLM2_IMAGE}, systemd) on Docker's default bridge, converged with "
        "`scripts/bench-llm.yml` (the ollama role alone, the stand-in archive) through a temporary inventory, and "
        "removed at the end.",
        "- Not measured: the CPU a real model takes. The stand-in sleeps for its tokens, so the instances, nginx "
        "and the generator do not compete with the model for the cores as they would beside a real Ollama on the "
        "same host; a real 2B model on these CPUs would also tokenize the five-axiom JSON denser (slower).",
        "",
        "Counters over the step that held each capacity (all instances):",
        "",
    ]
    for row in rows:
        counters = row.get("counters") or {}
        text = ", ".join(f"`{k}` {v:g}" for k, v in counters.items() if not k.startswith("cynic_llm_slot_wait_seconds"))
        waits = counters.get("cynic_llm_slot_waits_total")
        mean_wait = counters.get("cynic_llm_slot_wait_seconds_total", 0.0) / waits if waits else None
        lines.append(f"- {row['servers']} server(s): {text or '-'}; mean wait for a slot {fmt(mean_wait, '.2f')} s.")
    return lines


def write_report(out: Path, targets: list[Target], info: dict[str, Any], llm: list[Target] | None = None) -> None:
    lines = cluster_report(targets, info) if targets else [
        "# CYNIC cluster capacity benchmark (lab)", "",
        f"Generated by `scripts/bench.py --only-llm` on {info['finished']} in {info['wall_s']:.0f} s: the LLM tier "
        "alone (the REFLEX capacity targets were not run).", ""]
    if llm:
        lines += ["", *llm_report(llm, info), "", "## Steps of the LLM tier", "", *steps_table(llm), ""]
    save_report(out, lines, targets + (llm or []), info)


def cluster_report(targets: list[Target], info: dict[str, Any]) -> list[str]:
    t1, t3, empty = targets
    lines = [
        "# CYNIC cluster capacity benchmark (lab)",
        "",
        f"Generated by `make bench` (`scripts/bench.py`) on {info['finished']} in {info['wall_s']:.0f} s. "
        f"Service objective: p99 latency <= {P99_LIMIT_MS:g} ms from the intended start (over all requests and over "
        "the 2xx answers alone), no error, nothing "
        f"dropped, the generator on schedule (>= {MIN_RATE_RATIO:.0%} of the target rate).",
        "",
        "## Result",
        "",
    ]
    lines += capacity_table(targets, "not reached (ramp capped)")
    if t1.best and t3.best:
        lines += ["", f"Three instances through nginx hold {t3.best / t1.best:.2f}x the rate of one instance alone."]
    if t3.best and empty.best:
        # A ramp that never broke found a floor under the ceiling, not the ceiling.
        bound = "" if empty.first_fail else "at most "
        lines.append(f"Judging and storing through nginx holds {bound}{t3.best / empty.best:.0%} of the "
                     "empty-endpoint ceiling of the same stack.")
    lines += [
        "",
        "All three figures come from this one run, on this one machine, where the load generator, nginx, the three",
        "instances and the SurrealDB stand-in share the same CPUs: they measure the lab, not a production layout,",
        "and they move with whatever else the machine runs (load averages are in the step table).",
        "",
        "## Machine and layout",
        "",
        f"- CPUs: {info['machine']['host_nproc']} on the host, {info['machine']['container_nproc']} seen in the "
        f"container ({info['machine']['cpu']}), {info['machine']['mem_mib']} MiB; kernel {info['machine']['kernel']}.",
        f"- Load average (1/5/15 min) at the start: {info['load_start']}; at the end: {info['load_end']}.",
        f"- Everything runs in the one lab container `{CONTAINER}` (`make lab`): nginx (worker_processes auto, "
        "least_conn, upstream keepalive), three CYNIC instances `cynic@1..3` (uvicorn, one process each, ports "
        "8001-8003), the SurrealDB stand-in (the real SurrealDB engine from the surrealdb-embedded wheel behind "
        "/rpc), the Ollama stand-in (unused: these judgments are REFLEX), and the load generator.",
        f"- Load generator: `tools/cynic-stress` (the `cynic.cluster.cynic_stress` module's engine), copied to "
        f"`{ENGINE_DIR}` and run with the loadgen role's virtualenv (`{LOADGEN_PY}`, Python "
        f"{info['machine']['python_generator']}, aiohttp {info['machine']['aiohttp']}, uvloop), one process, "
        "inside the container against 127.0.0.1.",
        "- Open loop: request i is due at t0 + i/rate whatever happened before; latency counts from that due "
        "time (coordinated omission corrected). At most 1024 requests in flight (a request due beyond that is "
        "dropped, counted, and put in the all-requests latency at the timeout), timeout 5 s.",
        f"- Each step: {info['warmup']:g} s warm-up (not measured) then {info['duration']:g} s measured at a constant "
        f"rate. Before each step the bench waits until the stack in the container is idle again (under "
        f"{SETTLE_CPU:g} CPU over 1 s, at most {SETTLE_MAX_S} s: the previous step's backlog has drained). "
        f"The ramp starts at the rate in the table below and multiplies it by "
        f"{info['factor']:g} until a step breaks the objective (divides it when the first rate already breaks it), "
        f"then bisects {info['bisections']} times between the "
        "last rate that held and the first that broke. A step that breaks the objective is run once more "
        "(marked *retry*): a rate holds when one of the two tries passes, since a stall of another job on "
        "this shared machine can break a short step.",
        "- /judge body: `" + JUDGE_BODY + "` (`{run}` is new for every step, so every request judges and "
        "stores a new cell, at REFLEX). /_bench/empty gets `{}` and answers `{}`.",
        "- The empty endpoint exists only with `CYNIC_BENCH_ROUTES=1`: the bench set it with "
        "`ansible-playbook -i inventories/lab playbooks/rolling_update.yml -e '{\"cynic_extra_env\": "
        "{\"CYNIC_BENCH_ROUTES\": \"1\"}}'` (a rolling restart through the cynic role), and restored the "
        "inventory's settings afterwards with a plain `rolling_update.yml`"
        f" (after the restore, POST /_bench/empty answered {info['empty_after_restore']}).",
        "",
        "## Steps",
        "",
        *steps_table(targets),
    ]
    lines += ["", "Targets:", ""]
    for t in targets:
        lines.append(f"- `{t.key}`: {t.title}: `POST {t.url}{t.path}`, ramp from {t.start} req/s.")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench-cluster.md")
    add_ramp_arguments(parser, duration=6.0, warmup=2.0, factor=1.5)
    parser.add_argument("--max-rate", type=int, default=20000)
    llm_args = parser.add_argument_group("the LLM tier: one and two Ollama servers")
    which = llm_args.add_mutually_exclusive_group()
    which.add_argument("--skip-llm", action="store_true", help="leave the LLM tier out")
    which.add_argument("--only-llm", action="store_true", help="the LLM tier alone (not the REFLEX capacities)")
    llm_args.add_argument("--llm-mix", default=DEFAULT_LLM_MIX, metavar="NAME=WEIGHT:LEVEL,...",
                          help=f"the level mix (default {DEFAULT_LLM_MIX})")
    llm_args.add_argument("--llm-max-degraded-share", type=float, default=0.01,
                          help="largest share of degraded answers among those that asked an LLM (default 0.01)")
    # A MICRO holds its call up to its 10 s deadline: a warm-up longer than that lets the queues reach
    # their level at the step's rate before measuring; 30 s measured gives tens of MICRO answers per step.
    llm_args.add_argument("--llm-duration", type=float, default=30.0, help="measured seconds per LLM step")
    llm_args.add_argument("--llm-warmup", type=float, default=15.0, help="warm-up seconds per LLM step")
    llm_args.add_argument("--llm-factor", type=float, default=1.25)
    llm_args.add_argument("--llm-bisections", type=int, default=1)
    parser.add_argument("--report-from", type=Path, help="write the report again from a run's .json, run nothing")
    args = parser.parse_args()
    try:
        kinds = parse_llm_mix(args.llm_mix)
    except ValueError as exc:
        parser.error(f"--llm-mix: {exc}")
    if not 0.0 <= args.llm_max_degraded_share <= 1.0:
        parser.error("--llm-max-degraded-share must be between 0 and 1")
    if args.report_from:
        saved, info = read_raw(args.report_from)
        cluster = [t for t in saved if not t.key.startswith("llm-")]
        write_report(args.out, cluster, info, [t for t in saved if t.key.startswith("llm-")] or None)
        return 0

    # A stopped bench still restores the lab (the finally clauses): SIGTERM as an exit, not a kill.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    started = time.monotonic()
    if not LAB.running():
        raise SystemExit(f"bench: the lab container {CONTAINER} is not running: run `make lab` first")
    load_start = loadavg()

    # The generator's virtualenv (the loadgen role), unless it is already there.
    if not LAB.has_loadgen():
        playbook(INVENTORY, ROOT / "playbooks" / "stress.yml", "--tags", "loadgen")
    LAB.copy_engine()

    targets = [] if args.only_llm else [
        Target("one-judge", "one instance, POST /judge", "http://127.0.0.1:8001", "/judge", start=150,
               body=JUDGE_BODY),
        Target("three-judge", "three instances through nginx, POST /judge", "http://127.0.0.1:80", "/judge",
               start=150, body=JUDGE_BODY),
        Target("three-empty", "three instances through nginx, POST /_bench/empty (no work)", "http://127.0.0.1:80",
               "/_bench/empty", start=600, body="{}", parse_body=False),
    ]
    info: dict[str, Any] = {"duration": args.duration, "warmup": args.warmup, "factor": args.factor,
                            "bisections": args.bisections, "load_start": load_start, "machine": LAB.machine()}
    if targets:
        set_bench_routes(True)
        try:
            status = LAB.http_status("http://127.0.0.1:80/_bench/empty", "POST", "{}")
            if status != "200":
                raise SystemExit(f"bench: POST /_bench/empty answered {status} after enabling CYNIC_BENCH_ROUTES")
            for target in targets:
                LAB.ramp(target, args.factor, args.bisections, args.max_rate, args.duration, args.warmup)
        finally:
            log("restoring the inventory's settings (CYNIC_BENCH_ROUTES off)")
            set_bench_routes(False)
        info["empty_after_restore"] = LAB.http_status("http://127.0.0.1:80/_bench/empty", "POST", "{}")
        info["cluster_s"] = time.monotonic() - started
    llm = None if args.skip_llm else llm_tier(LAB, args, kinds, info)
    info["load_end"] = loadavg()
    info["wall_s"] = time.monotonic() - started
    info["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    write_report(args.out, targets, info, llm)
    log(f"wrote {args.out} and {args.out.with_suffix('.json')} ({info['wall_s'] / 60:.1f} min)")
    for t in targets + (llm or []):
        log(f"  {t.title}: {t.best} req/s (broke at {t.first_fail})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
