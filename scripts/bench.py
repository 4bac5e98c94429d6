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

The empty endpoint exists only when the node runs with CYNIC_BENCH_ROUTES=1: the script sets it
through the cynic role (playbooks/rolling_update.yml -e cynic_extra_env=...), which restarts the
instances one at a time, and restores the inventory's settings (another rolling update) at the
end, whatever happened. It writes reports/bench-cluster.md and reports/bench-cluster.json.

Usage: .venv/bin/python scripts/bench.py [--out reports/bench-cluster.md] [--duration S] [--factor F]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
CONTAINER = "cynic-lab"
INVENTORY = ROOT / "inventories" / "lab"
LOADGEN_PY = "/opt/cynic-loadgen/venv/bin/python"
ENGINE_DIR = "/opt/cynic-loadgen/bench"  # tools/cynic-stress + plugins/module_utils/cynic_load.py
P99_LIMIT_MS = 100.0
MIN_RATE_RATIO = 0.99
SATURATION_LAG_MS = 20.0  # the engine's saturation_lag_ms default
JUDGE_BODY = '{"content": "cynic bench {run} cell {i}", "reality": "CODE", "analysis": "JUDGE", "budget_usd": 0.01}'


@dataclass
class Target:
    key: str
    title: str
    url: str
    path: str
    body: str
    start: int  # first rate of the ramp, req/s
    parse_body: bool = True
    steps: list[dict[str, Any]] = field(default_factory=list)
    best: int | None = None
    first_fail: int | None = None


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], timeout: float, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, timeout=timeout, check=check, **kw)


def dexec(*args: str, timeout: float = 60, check: bool = True) -> str:
    return run(["docker", "exec", CONTAINER, *args], timeout=timeout, check=check,
               stdout=subprocess.PIPE, stderr=subprocess.PIPE).stdout


def ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(ROOT / ".cache" / "collections"))
    env.setdefault("ANSIBLE_INJECT_FACT_VARS", "false")
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    return env


def playbook(name: str, *extra: str) -> None:
    cmd = [str(BIN / "ansible-playbook"), "-i", str(INVENTORY), str(ROOT / "playbooks" / name), *extra]
    log("$ " + " ".join(shlex.quote(c) for c in cmd[1:]))
    started = time.monotonic()
    result = run(cmd, timeout=900, check=False, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:])
        raise SystemExit(f"bench: ansible-playbook {name} failed (rc {result.returncode})")
    log(f"  done in {time.monotonic() - started:.0f} s")


def set_bench_routes(enabled: bool) -> None:
    """Roll the instances with CYNIC_BENCH_ROUTES=1 (enabled) or with the inventory's settings."""
    if not enabled:
        playbook("rolling_update.yml")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"cynic_extra_env": {"CYNIC_BENCH_ROUTES": "1"}}, handle)
    try:
        playbook("rolling_update.yml", "-e", f"@{handle.name}")
    finally:
        os.unlink(handle.name)


def http_status(url: str, method: str = "GET", body: str = "") -> str:
    code = (
        "import sys, urllib.request, urllib.error\n"
        "req = urllib.request.Request(sys.argv[1], method=sys.argv[2], data=sys.argv[3].encode() or None,\n"
        "                             headers={'Content-Type': 'application/json'})\n"
        "try:\n    print(urllib.request.urlopen(req, timeout=5).status)\n"
        "except urllib.error.HTTPError as e:\n    print(e.code)\n"
    )
    return dexec("python3", "-c", code, url, method, body, check=False).strip() or "no answer"


def machine() -> dict[str, Any]:
    inside = dexec("sh", "-c", "nproc; grep -m1 'model name' /proc/cpuinfo | cut -d: -f2; "
                   "grep MemTotal /proc/meminfo | awk '{print int($2/1024)}'").split("\n")
    return {
        "host_nproc": os.cpu_count(),
        "container_nproc": int(inside[0]),
        "cpu": inside[1].strip(),
        "mem_mib": int(inside[2]),
        "kernel": platform.release(),
        "python_controller": platform.python_version(),
        "python_generator": dexec(LOADGEN_PY, "-c", "import platform; print(platform.python_version())").strip(),
        "aiohttp": dexec(LOADGEN_PY, "-c", "import aiohttp; print(aiohttp.__version__)").strip(),
    }


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# Run inside the container: wait until its processes (the instances, nginx, the SurrealDB stand-in)
# use less than SETTLE_CPU of a CPU over one second, at most SETTLE_MAX_S; print the wait and the use.
SETTLE_CPU = 0.2
SETTLE_MAX_S = 15
SETTLE = f"""
import os, time
def ticks():
    total = 0
    for pid in os.listdir('/proc'):
        if pid.isdigit():
            try:
                with open('/proc/%s/stat' % pid) as f:
                    fields = f.read().rsplit(')', 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
    return total
hz = os.sysconf('SC_CLK_TCK')
start = time.monotonic()
while True:
    a = ticks(); time.sleep(1); busy = max(ticks() - a, 0) / hz
    if busy < {SETTLE_CPU} or time.monotonic() - start > {SETTLE_MAX_S}:
        break
print('%.1f %.2f' % (time.monotonic() - start, busy))
"""


def settle() -> tuple[float, float]:
    """Wait until the previous step's backlog has drained (the stack is idle again)."""
    waited, busy = dexec("python3", "-c", SETTLE, timeout=SETTLE_MAX_S + 30).split()
    return float(waited), float(busy)


def step(target: Target, rate: int, duration: float, warmup: float) -> dict[str, Any]:
    cmd = [LOADGEN_PY, f"{ENGINE_DIR}/tools/cynic-stress", target.url, "--path", target.path, "--body", target.body,
           "--rate", str(rate), "--duration", str(duration), "--warmup", str(warmup), "--max-in-flight", "1024",
           "--timeout", "5", "--json", "-q", "--no-judgment-ids"]
    if not target.parse_body:
        cmd.append("--no-parse-body")
    waited, busy = settle()
    load_before = loadavg()
    result = run(["docker", "exec", CONTAINER, *cmd], timeout=warmup + duration + 60, check=False,
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if result.returncode not in (0, 1):
        raise SystemExit(f"bench: cynic-stress failed (rc {result.returncode}): {result.stderr[-2000:]}")
    facts = json.loads(result.stdout)
    facts.pop("timeline", None)
    p99 = facts["latency_ms"]["intended"]["p99"]  # all requests, dropped ones at the timeout
    p99_ok = facts["latency_ok_ms"]["intended"]["p99"]  # the 2xx answers alone
    reasons = []
    if facts["errors"]:
        reasons.append(f"{facts['errors']} errors {facts['errors_by_class']}")
    if facts["dropped"]:
        reasons.append(f"{facts['dropped']} dropped")
    if p99 is None or p99 > P99_LIMIT_MS:
        reasons.append(f"p99 {fmt(p99)} ms > {P99_LIMIT_MS:g} ms")
    elif p99_ok is None or p99_ok > P99_LIMIT_MS:
        reasons.append(f"p99 of the 2xx answers {fmt(p99_ok)} ms > {P99_LIMIT_MS:g} ms")
    if facts["rate_ratio"] < MIN_RATE_RATIO:
        reasons.append(f"generator sent {facts['achieved_rate']:.0f} req/s, under {MIN_RATE_RATIO:.0%} of the target")
    lag = facts["scheduler_lag_ms"]["p99"]
    if reasons and lag is not None and lag > SATURATION_LAG_MS:
        reasons.append(f"the generator lagged too (scheduler lag p99 {lag:.0f} ms)")
    record = {"target": target.key, "rate": rate, "passed": not reasons, "reasons": reasons,
              "load_before": load_before, "settle_s": waited, "stack_cpu_before": busy, "facts": facts}
    target.steps.append(record)
    log(f"  {target.key:<14} {rate:>5} req/s: sent {facts['sent']}, errors {facts['errors']}, dropped "
        f"{facts['dropped']}, p50 {facts['latency_ms']['intended']['p50']} ms, p99 {p99} ms (2xx {p99_ok} ms), lag p99 "
        f"{facts['scheduler_lag_ms']['p99']} ms -> {'pass' if not reasons else 'FAIL: ' + '; '.join(reasons)}")
    return record


def holds(target: Target, rate: int, duration: float, warmup: float) -> bool:
    """A rate holds when a step passes; a failed step is tried once more (the machine is shared)."""
    if step(target, rate, duration, warmup)["passed"]:
        return True
    again = step(target, rate, duration, warmup)
    again["retry"] = True
    return bool(again["passed"])


def round10(value: float) -> int:
    return max(10, int(round(value / 10.0) * 10))


def ramp(target: Target, factor: float, bisections: int, max_rate: int, duration: float, warmup: float) -> None:
    """Up by factor from target.start until a rate breaks (down by factor if the first one does), then bisect."""
    log(f"== {target.title}")
    rate = target.start
    if holds(target, rate, duration, warmup):
        target.best = rate
        while round10(rate * factor) <= max_rate:
            rate = round10(rate * factor)
            if not holds(target, rate, duration, warmup):
                target.first_fail = rate
                break
            target.best = rate
    else:
        target.first_fail = rate
        while rate > 10:
            rate = round10(rate / factor)
            if holds(target, rate, duration, warmup):
                target.best = rate
                break
            target.first_fail = rate
    if target.best is None or target.first_fail is None:
        return
    lo, hi = target.best, target.first_fail
    for _bisection in range(bisections):
        mid = round10((lo + hi) / 2)
        if mid in (lo, hi):
            break
        if holds(target, mid, duration, warmup):
            lo = mid
        else:
            hi = mid
    target.best, target.first_fail = lo, hi


def fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def write_report(out: Path, targets: list[Target], info: dict[str, Any]) -> None:
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
        "| target | highest rate holding the objective | p99 there | first rate that broke it | why it broke |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for t in targets:
        broke = [s for s in t.steps if s["rate"] == t.first_fail and not s["passed"]]
        why = "; ".join(broke[-1]["reasons"]) if broke else ("not reached (ramp capped)" if t.best else "-")
        held = [s for s in t.steps if s["rate"] == t.best and s["passed"]]
        p99 = fmt(held[-1]["facts"]["latency_ms"]["intended"]["p99"]) + " ms" if held else "-"
        lines.append(f"| {t.title} | **{t.best if t.best is not None else '< ' + str(t.start)} req/s** | {p99} | "
                     f"{t.first_fail or '-'} | {why} |")
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
        "p50/p99/max: every request of the step, errors included, a dropped request counted at the 5 s timeout; "
        "p99 ms 2xx: the successful answers alone. Sent rate counts every request sent, whatever its answer; "
        "instances: how many gave 2xx answers.",
        "",
        "| target | rate | sent | ok | errors | dropped | sent rate | p50 ms | p99 ms | max ms | p99 ms 2xx | "
        "lag p99 ms | instances (2xx) | load avg before | settle | result |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for t in targets:
        for s in t.steps:
            f = s["facts"]
            lat = f["latency_ms"]["intended"]
            lat_ok = f["latency_ok_ms"]["intended"]
            result = "pass" if s["passed"] else "FAIL: " + "; ".join(s["reasons"])
            if s.get("retry"):
                result += " (retry)"
            lines.append(
                f"| {t.key} | {s['rate']} | {f['sent']} | {f['ok']} | {f['errors']} | {f['dropped']} | "
                f"{fmt(f['achieved_rate'])} | {fmt(lat['p50'])} | {fmt(lat['p99'])} | {fmt(lat['max'])} | "
                f"{fmt(lat_ok['p99'])} | {fmt(f['scheduler_lag_ms']['p99'])} | {f['instances_distinct']} | "
                f"{s['load_before']} | {s['settle_s']:.0f} s | {result} |")
    lines += ["", "Targets:", ""]
    for t in targets:
        lines.append(f"- `{t.key}`: {t.title}: `POST {t.url}{t.path}`, ramp from {t.start} req/s.")
    lines.append("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    raw = {"info": info, "targets": [{"key": t.key, "title": t.title, "url": t.url + t.path, "best": t.best,
                                      "first_fail": t.first_fail, "steps": t.steps} for t in targets]}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench-cluster.md")
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per step")
    parser.add_argument("--factor", type=float, default=1.5, help="rate multiplier of the ramp")
    parser.add_argument("--bisections", type=int, default=2)
    parser.add_argument("--max-rate", type=int, default=20000)
    args = parser.parse_args()

    started = time.monotonic()
    if run(["docker", "inspect", "-f", "{{.State.Running}}", CONTAINER], timeout=30, check=False,
           stdout=subprocess.PIPE, stderr=subprocess.PIPE).stdout.strip() != "true":
        raise SystemExit(f"bench: the lab container {CONTAINER} is not running: run `make lab` first")
    load_start = loadavg()

    # The generator's virtualenv (the loadgen role), unless it is already there.
    have_loadgen = run(["docker", "exec", CONTAINER, LOADGEN_PY, "-c", "import aiohttp"], timeout=30, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    if not have_loadgen:
        playbook("stress.yml", "--tags", "loadgen")
    dexec("mkdir", "-p", f"{ENGINE_DIR}/tools", f"{ENGINE_DIR}/plugins/module_utils")
    run(["docker", "cp", str(ROOT / "tools" / "cynic-stress"), f"{CONTAINER}:{ENGINE_DIR}/tools/cynic-stress"], timeout=60)
    run(["docker", "cp", str(ROOT / "plugins" / "module_utils" / "cynic_load.py"),
         f"{CONTAINER}:{ENGINE_DIR}/plugins/module_utils/cynic_load.py"], timeout=60)

    targets = [
        Target("one-judge", "one instance, POST /judge", "http://127.0.0.1:8001", "/judge", JUDGE_BODY, start=150),
        Target("three-judge", "three instances through nginx, POST /judge", "http://127.0.0.1:80", "/judge",
               JUDGE_BODY, start=150),
        Target("three-empty", "three instances through nginx, POST /_bench/empty (no work)", "http://127.0.0.1:80",
               "/_bench/empty", "{}", start=600, parse_body=False),
    ]
    info: dict[str, Any] = {"duration": args.duration, "warmup": args.warmup, "factor": args.factor,
                            "bisections": args.bisections, "load_start": load_start}
    set_bench_routes(True)
    try:
        status = http_status("http://127.0.0.1:80/_bench/empty", "POST", "{}")
        if status != "200":
            raise SystemExit(f"bench: POST /_bench/empty answered {status} after enabling CYNIC_BENCH_ROUTES")
        info["machine"] = machine()
        for target in targets:
            ramp(target, args.factor, args.bisections, args.max_rate, args.duration, args.warmup)
    finally:
        log("restoring the inventory's settings (CYNIC_BENCH_ROUTES off)")
        set_bench_routes(False)
    info["empty_after_restore"] = http_status("http://127.0.0.1:80/_bench/empty", "POST", "{}")
    info["load_end"] = loadavg()
    info["wall_s"] = time.monotonic() - started
    info["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    write_report(args.out, targets, info)
    log(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    for t in targets:
        log(f"  {t.title}: {t.best} req/s (broke at {t.first_fail})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
