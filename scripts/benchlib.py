"""What the benchmarks share (`make bench`, `make bench-kernel`): a container that runs the stack, the
collection's load engine run inside it, and a ramp that finds the highest constant rate holding a
service objective.

A step holds the objective when p99 latency (from the intended start) <= the lab's limit over all
requests and over the 2xx answers alone, no request failed, none was dropped, and the generator kept
its schedule (sent rate >= 99% of the target). The engine counts a dropped request in the
all-requests latency at the timeout, so a step that drops more than 1% shows it in its p99.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
LOADGEN_PY = "/opt/cynic-loadgen/venv/bin/python"
ENGINE_DIR = "/opt/cynic-loadgen/bench"  # tools/cynic-stress + plugins/module_utils + the corpus
ENGINE_FILES = ("tools/cynic-stress", "plugins/module_utils/cynic_load.py", "plugins/module_utils/cynic_workload.py",
                "roles/stress/files/stress_corpus.jsonl")
MIN_RATE_RATIO = 0.99
SATURATION_LAG_MS = 20.0  # the engine's saturation_lag_ms default


@dataclass
class Target:
    key: str
    title: str
    url: str
    path: str
    start: int  # first rate of the ramp, req/s
    body: str | None = None  # a body template; None: the args say what to send (--corpus ...)
    args: list[str] = field(default_factory=list)  # more cynic-stress arguments
    parse_body: bool = True
    steps: list[dict[str, Any]] = field(default_factory=list)
    best: int | None = None
    first_fail: int | None = None


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], timeout: float, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, timeout=timeout, check=check, **kw)


def fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(ROOT / ".cache" / "collections"))
    env.setdefault("ANSIBLE_INJECT_FACT_VARS", "false")
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    return env


def playbook(inventory: Path, path: Path, *extra: str) -> None:
    cmd = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(path), *extra]
    log("$ " + " ".join(shlex.quote(c) for c in cmd[1:]))
    started = time.monotonic()
    result = run(cmd, timeout=1800, check=False, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:])
        raise SystemExit(f"bench: ansible-playbook {path.name} failed (rc {result.returncode})")
    log(f"  done in {time.monotonic() - started:.0f} s")


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


@dataclass
class Lab:
    """The container that runs the stack and the load generator, and the objective a step must hold."""

    container: str
    p99_limit_ms: float
    rate_unit: int = 10  # ramp rates are multiples of this
    timeout_s: float = 5.0
    # Called before and after each step; what it returns is kept in the step's record (CPU counters).
    probe: Callable[[], dict[str, Any]] | None = None
    # With a mix that asks an LLM: the largest share of degraded answers a step may have (None: not checked).
    max_degraded_share: float | None = None

    def dexec(self, *args: str, timeout: float = 60, check: bool = True) -> str:
        return run(["docker", "exec", self.container, *args], timeout=timeout, check=check,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE).stdout

    def running(self) -> bool:
        return run(["docker", "inspect", "-f", "{{.State.Running}}", self.container], timeout=30, check=False,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE).stdout.strip() == "true"

    def has_loadgen(self) -> bool:
        return run(["docker", "exec", self.container, LOADGEN_PY, "-c", "import aiohttp"], timeout=30, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0

    def copy_engine(self) -> None:
        """The collection's load engine and corpus, from this checkout, into ENGINE_DIR."""
        for name in ENGINE_FILES:
            self.dexec("mkdir", "-p", os.path.dirname(f"{ENGINE_DIR}/{name}"))
            run(["docker", "cp", str(ROOT / name), f"{self.container}:{ENGINE_DIR}/{name}"], timeout=60)

    def http_status(self, url: str, method: str = "GET", body: str = "") -> str:
        code = (
            "import sys, urllib.request, urllib.error\n"
            "req = urllib.request.Request(sys.argv[1], method=sys.argv[2], data=sys.argv[3].encode() or None,\n"
            "                             headers={'Content-Type': 'application/json'})\n"
            "try:\n    print(urllib.request.urlopen(req, timeout=5).status)\n"
            "except urllib.error.HTTPError as e:\n    print(e.code)\n"
        )
        return self.dexec("python3", "-c", code, url, method, body, check=False).strip() or "no answer"

    def machine(self) -> dict[str, Any]:
        inside = self.dexec("sh", "-c", "nproc; grep -m1 'model name' /proc/cpuinfo | cut -d: -f2; "
                            "grep MemTotal /proc/meminfo | awk '{print int($2/1024)}'").split("\n")
        return {
            "host_nproc": os.cpu_count(),
            "container_nproc": int(inside[0]),
            "cpu": inside[1].strip(),
            "mem_mib": int(inside[2]),
            "kernel": platform.release(),
            "python_controller": platform.python_version(),
            "python_generator": self.dexec(LOADGEN_PY, "-c", "import platform; print(platform.python_version())").strip(),
            "aiohttp": self.dexec(LOADGEN_PY, "-c", "import aiohttp; print(aiohttp.__version__)").strip(),
        }

    def settle(self) -> tuple[float, float]:
        """Wait until the previous step's backlog has drained (the stack is idle again)."""
        waited, busy = self.dexec("python3", "-c", SETTLE, timeout=SETTLE_MAX_S + 30).split()
        return float(waited), float(busy)

    def stress(self, target: Target, rate: float, duration: float, warmup: float, *extra: str) -> dict[str, Any]:
        """One run of the engine inside the container: its facts (timeline included)."""
        cmd = [LOADGEN_PY, f"{ENGINE_DIR}/tools/cynic-stress", target.url, "--path", target.path,
               "--rate", str(rate), "--duration", str(duration), "--warmup", str(warmup), "--max-in-flight", "1024",
               "--timeout", str(self.timeout_s), "--json", "-q", "--no-judgment-ids", *target.args, *extra]
        if target.body is not None:
            cmd += ["--body", target.body]
        if not target.parse_body:
            cmd.append("--no-parse-body")
        result = run(["docker", "exec", self.container, *cmd], timeout=warmup + duration + self.timeout_s + 60,
                     check=False, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if result.returncode not in (0, 1):
            raise SystemExit(f"bench: cynic-stress failed (rc {result.returncode}): {result.stderr[-2000:]}")
        return json.loads(result.stdout)

    def step(self, target: Target, rate: int, duration: float, warmup: float) -> dict[str, Any]:
        waited, busy = self.settle()
        load_before = loadavg()
        probe_before = self.probe() if self.probe else None
        facts = self.stress(target, rate, duration, warmup)
        probe_after = self.probe() if self.probe else None
        facts.pop("timeline", None)
        p99 = facts["latency_ms"]["intended"]["p99"]  # all requests, dropped ones at the timeout
        p99_ok = facts["latency_ok_ms"]["intended"]["p99"]  # the 2xx answers alone
        limit = self.p99_limit_ms
        reasons = []
        if facts["errors"]:
            reasons.append(f"{facts['errors']} errors {facts['errors_by_class']}")
        if facts["dropped"]:
            reasons.append(f"{facts['dropped']} dropped")
        if p99 is None or p99 > limit:
            reasons.append(f"p99 {fmt(p99)} ms > {limit:g} ms")
        elif p99_ok is None or p99_ok > limit:
            reasons.append(f"p99 of the 2xx answers {fmt(p99_ok)} ms > {limit:g} ms")
        if facts["rate_ratio"] < MIN_RATE_RATIO:
            reasons.append(f"generator sent {facts['achieved_rate']:.0f} req/s, under {MIN_RATE_RATIO:.0%} of the target")
        share = facts.get("degraded_share") or 0.0
        if self.max_degraded_share is not None and share > self.max_degraded_share:
            reasons.append(f"degraded share {share:.1%} > {self.max_degraded_share:.1%} ({facts.get('degraded')} of "
                           f"{facts.get('llm_asked')} answers that asked an LLM)")
        lag = facts["scheduler_lag_ms"]["p99"]
        if reasons and lag is not None and lag > SATURATION_LAG_MS:
            reasons.append(f"the generator lagged too (scheduler lag p99 {lag:.0f} ms)")
        record = {"target": target.key, "rate": rate, "passed": not reasons, "reasons": reasons,
                  "load_before": load_before, "settle_s": waited, "stack_cpu_before": busy, "facts": facts,
                  "probe_before": probe_before, "probe_after": probe_after}
        target.steps.append(record)
        log(f"  {target.key:<14} {rate:>5} req/s: sent {facts['sent']}, errors {facts['errors']}, dropped "
            f"{facts['dropped']}, p50 {facts['latency_ms']['intended']['p50']} ms, p99 {p99} ms (2xx {p99_ok} ms), "
            f"lag p99 {facts['scheduler_lag_ms']['p99']} ms{degraded_note(facts)} -> "
            f"{'pass' if not reasons else 'FAIL: ' + '; '.join(reasons)}")
        return record

    def holds(self, target: Target, rate: int, duration: float, warmup: float) -> bool:
        """A rate holds when a step passes; a failed step is tried once more (the machine is shared)."""
        if self.step(target, rate, duration, warmup)["passed"]:
            return True
        again = self.step(target, rate, duration, warmup)
        again["retry"] = True
        return bool(again["passed"])

    def rounded(self, value: float) -> int:
        unit = self.rate_unit
        return max(unit, int(round(value / unit) * unit))

    def ramp(self, target: Target, factor: float, bisections: int, max_rate: int, duration: float,
             warmup: float) -> None:
        """Up by factor from target.start until a rate breaks (down by factor if the first one does), then bisect."""
        log(f"== {target.title}")
        rate = target.start
        if self.holds(target, rate, duration, warmup):
            target.best = rate
            while self.rounded(rate * factor) <= max_rate:
                rate = max(self.rounded(rate * factor), rate + self.rate_unit)
                if not self.holds(target, rate, duration, warmup):
                    target.first_fail = rate
                    break
                target.best = rate
        else:
            target.first_fail = rate
            while rate > self.rate_unit:
                rate = min(self.rounded(rate / factor), rate - self.rate_unit)
                if self.holds(target, rate, duration, warmup):
                    target.best = rate
                    break
                target.first_fail = rate
        if target.best is None or target.first_fail is None:
            return
        lo, hi = target.best, target.first_fail
        for _bisection in range(bisections):
            mid = self.rounded((lo + hi) / 2)
            if mid in (lo, hi):
                break
            if self.holds(target, mid, duration, warmup):
                lo = mid
            else:
                hi = mid
        target.best, target.first_fail = lo, hi


def degraded_note(facts: dict[str, Any]) -> str:
    """For the step's log line: the degraded share, when the step asked an LLM."""
    if not facts.get("llm_asked") and not facts.get("kinds"):
        return ""
    return f", degraded {facts.get('degraded', 0)}/{facts.get('llm_asked', 0)}"


def add_ramp_arguments(parser: argparse.ArgumentParser, duration: float, warmup: float, factor: float) -> None:
    """The ramp's options, with each bench's own defaults."""
    parser.add_argument("--duration", type=float, default=duration, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=warmup, help="warm-up seconds per step")
    parser.add_argument("--factor", type=float, default=factor, help="rate multiplier of the ramp")
    parser.add_argument("--bisections", type=int, default=2)


def write_raw(out: Path, targets: list[Target], info: dict[str, Any]) -> None:
    """Every figure of the run, beside the report: OUT with the suffix .json."""
    raw = {"info": info, "targets": [{"key": t.key, "title": t.title, "url": t.url + t.path, "best": t.best,
                                      "first_fail": t.first_fail, "steps": t.steps} for t in targets]}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")


def save_report(out: Path, lines: list[str], targets: list[Target], info: dict[str, Any]) -> None:
    """The markdown report, and beside it the raw JSON it was written from."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    write_raw(out, targets, info)


def read_raw(path: Path) -> tuple[list[Target], dict[str, Any]]:
    """The targets (with their steps) and the info of a run that write_raw saved."""
    raw = json.loads(path.read_text())
    targets = [Target(t["key"], t["title"], t["url"], "", 0, steps=t["steps"], best=t["best"],
                      first_fail=t["first_fail"]) for t in raw["targets"]]
    return targets, raw["info"]


def best_step(target: Target) -> dict[str, Any] | None:
    """The last passing step at the target's best rate."""
    held = [s for s in target.steps if s["rate"] == target.best and s["passed"]]
    return held[-1] if held else None


def capacity_table(targets: list[Target], unbroken: str) -> list[str]:
    """The markdown table of each target's highest rate holding the objective; `unbroken`: why for a ramp that never broke."""
    lines = [
        "| target | highest rate holding the objective | p99 there | first rate that broke it | why it broke |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for t in targets:
        broke = [s for s in t.steps if s["rate"] == t.first_fail and not s["passed"]]
        why = "; ".join(broke[-1]["reasons"]) if broke else (unbroken if t.best else "-")
        held = best_step(t)
        p99 = fmt(held["facts"]["latency_ms"]["intended"]["p99"]) + " ms" if held else "-"
        lines.append(f"| {t.title} | **{t.best if t.best is not None else '< ' + str(t.start)} req/s** | {p99} | "
                     f"{t.first_fail or '-'} | {why} |")
    return lines


def steps_table(targets: list[Target]) -> list[str]:
    """The markdown table of every step of the targets' ramps."""
    lines = [
        "p50/p99/max: every request of the step, errors included, a dropped request counted at the timeout; "
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
    return lines
