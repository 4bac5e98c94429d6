"""`make bench-kernel`: capacity and duplicate work of the public CYNIC kernel, deployed by the collection.

One run, on one Debian 13 container (`cynic-kernel-bench`) converged exactly like the molecule
scenario `kernel` (its molecule.yml variables and converge.yml: SurrealDB and Ollama stand-ins,
nginx, three kernel instances on 8001/8003/8005, built from ../shared/cynic-kernel/):

1. Capacity (benchlib's ramp: the highest constant rate holding p99 <= --p99-ms, no error, no drop):
   one instance direct on its port, then one, two and three instances through nginx; the instances
   not under test are stopped. Every request judges a new cell of the corpus
   (roles/stress/files/stress_corpus.jsonl). Each instance's CPU seconds (its unit's processes, from
   /proc) per judgment, and nginx's, from the step that held the highest rate.
2. Duplicates: the same workload (the corpus, a quarter of the requests repeating a cell, half of
   those right behind the cell's first request; the same run id, so the same cells in the same
   order) through nginx to the three instances, under least_conn and then under cell affinity
   (nginx_lb_strategy cell_affinity), and the corpus judged once at rest before, to compare the
   Q-Scores.

It writes reports/bench-kernel.md and .json, and removes the container unless --keep.
Usage: .venv/bin/python scripts/bench_kernel.py [--out reports/bench-kernel.md] [--keep] [--p99-ms 500]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins" / "module_utils"))
import cynic_workload  # noqa: E402  (after the paths it needs)
from benchlib import (  # noqa: E402
    ENGINE_DIR,
    ROOT,
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

CONTAINER = "cynic-kernel-bench"
SCENARIO = ROOT / "molecule" / "kernel"
WORKDIR = ROOT / ".cache" / "bench-kernel"
INSTANCES = {"1": 8001, "2": 8003, "3": 8005}  # molecule/kernel/molecule.yml's cynic_instances
CORPUS = f"{ENGINE_DIR}/roles/stress/files/stress_corpus.jsonl"
TARGET_RATE = 150  # what the mission asks of a cluster


def inventory() -> Path:
    """The kernel scenario's inventory (its molecule.yml variables) for the bench container."""
    text = (SCENARIO / "molecule.yml").read_text()
    for name, value in (("MOLECULE_PROJECT_DIRECTORY", ROOT), ("MOLECULE_SCENARIO_DIRECTORY", SCENARIO),
                        ("MOLECULE_EPHEMERAL_DIRECTORY", WORKDIR)):
        text = text.replace("${%s}" % name, str(value))
    spec = yaml.safe_load(text)
    groups = spec["platforms"][0]["groups"]
    inv = {"all": {"hosts": {CONTAINER: {"ansible_connection": "community.docker.docker"}},
                   "vars": spec["provisioner"]["inventory"]["group_vars"]["all"],
                   "children": {group: {"hosts": {CONTAINER: {}}} for group in groups}}}
    WORKDIR.mkdir(parents=True, exist_ok=True)
    path = WORKDIR / "inventory.yml"
    path.write_text(yaml.safe_dump(inv, sort_keys=False))
    return path


def start_container() -> None:
    run(["docker", "rm", "-f", CONTAINER], timeout=60, check=False, capture_output=True)
    log(f"starting container {CONTAINER}")
    run(["docker", "run", "-d", "--name", CONTAINER, "--hostname", CONTAINER,
         "--cap-add", "SYS_ADMIN", "--cgroupns", "host", "--security-opt", "seccomp=unconfined",
         "--tmpfs", "/run", "--tmpfs", "/run/lock", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
         "-v", f"{ROOT}/.cache/wheelhouse-py313:/opt/wheelhouse:ro",
         "cynic-lab/debian13:latest", "/lib/systemd/systemd"], timeout=120, capture_output=True)


def units() -> list[str]:
    return [f"cynic@{i}" for i in INSTANCES] + ["nginx"]


# Run inside the container: CPU seconds used so far by the processes of each unit given (utime + stime
# of /proc/PID/stat, their reaped children's too), found through the unit's cgroup. Not systemd's
# CPUUsageNSec: these hosts mount cgroup v1 for cpu, and systemd in the container accounts nothing there.
UNIT_CPU = """
import os, subprocess, sys
hz = os.sysconf('SC_CLK_TCK')
for unit in sys.argv[1:]:
    group = subprocess.run(['systemctl', 'show', '-p', 'ControlGroup', '--value', unit],
                           capture_output=True, text=True).stdout.strip()
    ticks = 0
    for root in ('/sys/fs/cgroup/pids', '/sys/fs/cgroup/systemd', '/sys/fs/cgroup'):
        path = root + group + '/cgroup.procs'
        if group and os.path.exists(path):
            for pid in open(path).read().split():
                try:
                    fields = open('/proc/%s/stat' % pid).read().rsplit(')', 1)[1].split()
                    ticks += sum(int(value) for value in fields[11:15])
                except (OSError, ValueError):
                    pass
            break
    print(unit, ticks / hz if group else -1)
"""


def cpu_probe(lab: Lab) -> dict[str, Any]:
    """CPU seconds used so far by each instance's unit and by nginx."""
    out: dict[str, Any] = {"t": time.monotonic()}
    for line in lab.dexec("python3", "-c", UNIT_CPU, *units()).splitlines():
        unit, value = line.split()
        out[unit] = float(value) if float(value) >= 0 else None
    return out


def set_instances(lab: Lab, inv: Path, ids: list[str], strategy: str = "least_conn") -> None:
    """Run exactly the instances `ids`, nginx balancing over them with `strategy`."""
    stop = [f"cynic@{i}" for i in INSTANCES if i not in ids]
    if stop:
        lab.dexec("systemctl", "stop", *stop)
    lab.dexec("systemctl", "start", *[f"cynic@{i}" for i in ids])
    for i in ids:
        deadline = time.monotonic() + 180
        while lab.http_status(f"http://127.0.0.1:{INSTANCES[i]}/health") != "200":
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: cynic@{i} is not healthy 180 s after its start")
            time.sleep(2)
    servers = [f"127.0.0.1:{INSTANCES[i]}" for i in ids]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"nginx_lb_upstream_servers": servers, "nginx_lb_strategy": strategy}, handle)
    try:
        playbook(inv, ROOT / "scripts" / "bench-kernel-lb.yml", "-e", f"@{handle.name}")
    finally:
        os.unlink(handle.name)


def cpu_per_judgment(step: dict[str, Any]) -> dict[str, Any]:
    """Each unit's CPU seconds per judgment it served in this step (warm-up included on both sides)."""
    before, after, facts = step["probe_before"], step["probe_after"], step["facts"]
    judgments = facts["judgment_ids_count"]  # every 200 answer of the kernel has its own id
    ok = max(facts["ok"], 1)
    out: dict[str, Any] = {"judgments": judgments, "wall_s": round(after["t"] - before["t"], 1)}
    for i, port in INSTANCES.items():
        unit = f"cynic@{i}"
        if before.get(unit) is None or after.get(unit) is None:
            continue
        cpu_s = after[unit] - before[unit]
        served = facts["instances"].get(f"127.0.0.1:{port}", 0)
        if not facts["instances"]:  # direct to one instance: nginx adds no header
            served = facts["ok"] if port == INSTANCES["1"] else 0
        share = judgments * served / ok
        out[unit] = {"cpu_s": round(cpu_s, 2), "judgments": round(share),
                     "cpu_ms_per_judgment": round(1000 * cpu_s / share, 2) if share else None}
    if before.get("nginx") is not None and after.get("nginx") is not None:
        cpu_s = after["nginx"] - before["nginx"]
        out["nginx"] = {"cpu_s": round(cpu_s, 2),
                        "cpu_ms_per_request": round(1000 * cpu_s / max(judgments, 1), 3)}
    return out


def idle_cpu(lab: Lab, seconds: float = 10.0) -> dict[str, float]:
    """CPU used per second by each idle unit (the kernel's background workers)."""
    before = cpu_probe(lab)
    time.sleep(seconds)
    after = cpu_probe(lab)
    span = after["t"] - before["t"]
    return {unit: round((after[unit] - before[unit]) / span, 3) for unit in units()
            if before.get(unit) is not None and after.get(unit) is not None}


def duplicates_run(lab: Lab, title: str, rate: float, duration: float, run_id: str, q_at_rest: dict) -> dict[str, Any]:
    lb = Target("dup", title, "http://127.0.0.1:80", "/judge", start=0,
                args=["--corpus", CORPUS, "--repeat-share", "0.25", "--concurrent-share", "0.5", "--run-id", run_id])
    lab.settle()
    facts = lab.stress(lb, rate, duration, 0)
    facts.pop("timeline", None)
    facts["q_vs_rest"] = cynic_workload.compare_q_scores(q_at_rest, facts["q_by_text"])
    dup = facts["duplicates"]
    log(f"  {title}: {facts['ok']} ok, {facts['errors']} errors, p99 {facts['latency_ms']['intended']['p99']} ms; "
        f"{dup['judgments']} judgments of {dup['cells_answered']} cells, {dup['cells_on_several_instances']} cells on "
        f"several instances, Q moved {facts['q_vs_rest']['mean_abs_difference']} on average")
    return facts


def plan_for(rate_one: int | None, cpu_ms: float | None, nginx_ms: float | None, nproc: int) -> dict[str, Any]:
    """Cores, instances and app hosts for TARGET_RATE, from the measured figures."""
    if not rate_one or not cpu_ms:
        return {}
    cores = TARGET_RATE * cpu_ms / 1000.0
    instances = math.ceil(TARGET_RATE / rate_one)
    return {
        "cores_busy": round(cores, 2),
        "cores_with_headroom": round(cores / 0.7, 2),
        "nginx_cores": round(TARGET_RATE * (nginx_ms or 0) / 1000.0, 3),
        "instances": instances,
        "app_hosts": math.ceil(max(instances, cores / 0.7) / nproc),
    }


def write_report(out: Path, targets: list[Target], info: dict[str, Any]) -> None:
    one, nginx1, nginx2, nginx3 = targets
    lines = [
        "# The public CYNIC kernel on the collection: capacity and duplicate work",
        "",
        f"Generated by `make bench-kernel` (`scripts/bench_kernel.py`) on {info['finished']} in {info['wall_s']:.0f} s, "
        f"kernel `cynic-kernel-e448af12` (../shared/cynic-kernel/), deployed by `playbooks/site.yml` with the "
        "molecule scenario `kernel`'s variables on one Debian 13 container. Service objective of a step: "
        f"p99 latency <= {info['p99_ms']:g} ms from the intended start (over all requests and over the 2xx answers), "
        "no error, nothing dropped, the generator on schedule (>= 99% of the target rate). Every request judges a "
        "new cell of the corpus `roles/stress/files/stress_corpus.jsonl` (120 texts, 7 realities, 34 to 5,364 "
        "characters), in heuristic mode (Ollama has no model: with one the kernel answers 500, its bug).",
        "",
        "## Capacity",
        "",
    ]
    lines += capacity_table(targets, "not reached")
    base = one.best
    lines += ["", "Scaling efficiency (rate with N instances / (N x the rate of one instance direct)):", ""]
    for n, t in ((1, nginx1), (2, nginx2), (3, nginx3)):
        if base and t.best:
            lines.append(f"- {n} through nginx: {t.best} req/s = {t.best / (n * base):.2f}")
    lines += ["", f"On these {info['machine']['container_nproc']} cores, {info['machine']['container_nproc']} instances "
              "use all of them: more instances than cores (with nginx and the generator beside them) hold less, not "
              "more. An efficiency above 1 is within the ramp's resolution (the rate of one instance is the last "
              "step that held, below the first that broke) and the step-to-step noise of a shared machine."]
    lines += ["", "CPU per judgment, at the highest rate that held (user + system CPU of each unit's processes "
              "over the step, from /proc, warm-up included, divided by the judgments the unit served):", "",
              "| target | rate | unit | CPU s | judgments | CPU ms per judgment |", "| --- | ---: | --- | ---: | ---: | ---: |"]
    for t in targets:
        held = best_step(t)
        if not held:
            continue
        cpu = cpu_per_judgment(held)
        for unit, value in cpu.items():
            if unit == "nginx" and t.key == "one-direct":
                continue  # nginx carries nothing there
            if isinstance(value, dict) and "cpu_ms_per_judgment" in value:
                lines.append(f"| {t.key} | {t.best} | {unit} | {value['cpu_s']} | {value['judgments']} | "
                             f"{fmt(value['cpu_ms_per_judgment'], '.2f')} |")
            elif isinstance(value, dict):
                lines.append(f"| {t.key} | {t.best} | nginx | {value['cpu_s']} | {cpu['judgments']} requests | "
                             f"{value['cpu_ms_per_request']} per request |")
    idle = ", ".join(f"{unit} {value:.3f}" for unit, value in info["idle_cpu"].items())
    lines += ["", f"Idle, before the ramps, each unit used (CPU s per s, over 10 s): {idle}.", ""]
    plan = info.get("plan") or {}
    if plan:
        lines += [
            f"## What {TARGET_RATE} req/s of the kernel needs",
            "",
            f"- CPU: {TARGET_RATE} x {info['cpu_ms_per_judgment']:.1f} ms per judgment = **{plan['cores_busy']} cores busy "
            f"judging**, {plan['cores_with_headroom']} with 30% headroom, plus about {plan['nginx_cores']} cores of nginx "
            "(the load generator, the stand-ins and the kernel's idle work not counted).",
            f"- Instances: one instance holds {base} req/s within the objective when it has a core to itself (the "
            f"kernel is one Python process: it uses at most one core), so {TARGET_RATE} req/s needs **{plan['instances']} "
            "instances**, one core each.",
            f"- App hosts like this machine ({info['machine']['container_nproc']} cores, shared here with nginx, the "
            f"stand-ins and the generator): **{plan['app_hosts']}**, plus the load balancer and the data hosts.",
            f"- On this machine the cores set the ceiling: three instances through nginx hold {nginx3.best} req/s, "
            f"against {3 * base if base else '-'} for three cores' worth of single instances.",
            "",
        ]
    dup = info["duplicates"]
    rest = dup["at_rest"]
    lines += [
        "## Duplicate work: least_conn against cell affinity",
        "",
        f"The same workload twice, through nginx to the three instances, {dup['rate']:g} req/s for "
        f"{dup['duration']:g} s (about 60% of the three instances' capacity): the corpus, a quarter of the requests "
        "repeating a cell of the run (half of those right behind the cell's first request, in flight together), the "
        f"same run id `{dup['run_id']}` (the same cells in the same order). The kernel has no consensus across "
        "instances and no memory of cells, so every request is a judgment: what balancing can change is where the "
        "repeats of a cell are judged.",
        "",
        "| | least_conn | cell_affinity |",
        "| --- | ---: | ---: |",
    ]
    lc, ca = dup["least_conn"], dup["cell_affinity"]
    rows = [
        ("requests (2xx)", lambda f: f"{f['sent']} ({f['ok']})"),
        ("errors, dropped", lambda f: f"{f['errors']}, {f['dropped']}"),
        ("p99 ms (all)", lambda f: fmt(f["latency_ms"]["intended"]["p99"])),
        ("distinct cells answered", lambda f: f["duplicates"]["cells_answered"]),
        ("cells answered more than once", lambda f: f["duplicates"]["cells_answered_more_than_once"]),
        ("judgments", lambda f: f["duplicates"]["judgments"]),
        ("judgments per cell", lambda f: f["duplicates"]["judgments_per_cell"]),
        ("duplicate judgments", lambda f: f["duplicates"]["duplicate_judgments"]),
        ("**cells judged on several instances**", lambda f: f"**{f['duplicates']['cells_on_several_instances']}**"),
        ("Q spread of a repeated cell, mean / max", lambda f: "%s / %s" % (
            f["duplicates"]["q_score_spread_of_repeated_cells"]["mean"],
            f["duplicates"]["q_score_spread_of_repeated_cells"]["max"])),
        ("instances (2xx)", lambda f: ", ".join(f"{k}: {v}" for k, v in sorted(f["instances"].items()))),
        ("Q moved from rest, mean / max per text", lambda f: "%s / %s" % (
            f["q_vs_rest"]["mean_abs_difference"], f["q_vs_rest"]["max_abs_difference"])),
    ]
    for label, get in rows:
        lines.append(f"| {label} | {get(lc)} | {get(ca)} |")
    lines += [
        "",
        f"Counted from the answers ({lc['duplicates']['counted_from']}); the kernel stores nothing here (no "
        "SURREAL_URL: with it its start fails on SurrealDB 3).",
        "",
        f"Q-Scores of the corpus (each text's mean): at rest (the corpus once, {rest['rate']:g} req/s, run "
        f"`{rest['run_id']}`) against under load:",
        "",
        "| | texts | mean | min | p10 | p50 | p90 | max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, d in (("at rest", lc["q_vs_rest"]["at_rest"]), ("least_conn", lc["q_vs_rest"]["under_load"]),
                     ("cell_affinity", ca["q_vs_rest"]["under_load"])):
        if d:
            lines.append(f"| {label} | {d['count']} | {d['mean']} | {d['min']} | {d['p10']} | {d['p50']} | "
                         f"{d['p90']} | {d['max']} |")
    lines += [
        "",
        "## Machine and method",
        "",
        f"- CPUs: {info['machine']['host_nproc']} on the host, {info['machine']['container_nproc']} in the container "
        f"({info['machine']['cpu']}), {info['machine']['mem_mib']} MiB; kernel {info['machine']['kernel']}. Load "
        f"average at the start {info['load_start']}, at the end {info['load_end']}.",
        "- Everything in the one container: nginx, the kernel instances (uvicorn, one process each), the SurrealDB "
        "and Ollama stand-ins, and the load generator (`tools/cynic-stress`, the `cynic_stress` module's engine, "
        "in the loadgen role's virtualenv, against 127.0.0.1). The generator and nginx take CPU from the same cores.",
        f"- Ramp (scripts/benchlib.py): {info['warmup']:g} s warm-up then {info['duration']:g} s measured per step; "
        f"up by x{info['factor']:g} until a step breaks the objective, then {info['bisections']} bisections; a step "
        f"that breaks it is run once more. Timeout {info['timeout']:g} s per request. Before each step the bench "
        "waits until the container is idle again. The instances not under test are stopped (systemctl stop), nginx "
        "is pointed at the ones under test by the nginx_lb role (nginx_lb_upstream_servers).",
        "",
        "## Steps",
        "",
        *steps_table(targets),
        "",
    ]
    save_report(out, lines, targets, info)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench-kernel.md")
    parser.add_argument("--p99-ms", type=float, default=500.0, help="the objective's p99 limit")
    add_ramp_arguments(parser, duration=12.0, warmup=3.0, factor=1.3)
    parser.add_argument("--dup-duration", type=float, default=40.0, help="seconds of each duplicates run")
    parser.add_argument("--keep", action="store_true", help="leave the container running")
    parser.add_argument("--no-converge", action="store_true", help="the container is already converged")
    parser.add_argument("--report-from", type=Path, help="write the report again from a run's .json, run nothing")
    args = parser.parse_args()
    if args.report_from:
        targets, info = read_raw(args.report_from)
        write_report(args.out, targets, info)
        return 0

    started = time.monotonic()
    load_start = loadavg()
    lab = Lab(container=CONTAINER, p99_limit_ms=args.p99_ms, rate_unit=1, timeout_s=5.0)
    inv = inventory()
    if not (args.no_converge and lab.running()):
        start_container()
        playbook(inv, ROOT / "tests" / "standins" / "prepare.yml")
        playbook(inv, SCENARIO / "converge.yml")
    if not lab.has_loadgen():
        playbook(inv, ROOT / "playbooks" / "stress.yml", "--tags", "loadgen")
    lab.copy_engine()
    lab.probe = lambda: cpu_probe(lab)
    info: dict[str, Any] = {"duration": args.duration, "warmup": args.warmup, "factor": args.factor,
                            "bisections": args.bisections, "p99_ms": args.p99_ms, "timeout": lab.timeout_s,
                            "load_start": load_start, "machine": lab.machine()}
    try:
        info["idle_cpu"] = idle_cpu(lab)
        corpus = ["--corpus", CORPUS]
        targets = [
            Target("one-direct", "one instance, direct on its port", "http://127.0.0.1:8001", "/judge", 4, args=corpus),
            Target("one-nginx", "one instance through nginx", "http://127.0.0.1:80", "/judge", 4, args=corpus),
            Target("two-nginx", "two instances through nginx", "http://127.0.0.1:80", "/judge", 6, args=corpus),
            Target("three-nginx", "three instances through nginx", "http://127.0.0.1:80", "/judge", 8, args=corpus),
        ]
        for target, ids in zip(targets, (["1"], ["1"], ["1", "2"], ["1", "2", "3"]), strict=True):
            set_instances(lab, inv, ids)
            lab.ramp(target, args.factor, args.bisections, 500, args.duration, args.warmup)

        three = best_step(targets[3])
        cpu = cpu_per_judgment(three) if three else {}
        per_judgment = [v["cpu_ms_per_judgment"] for k, v in cpu.items()
                        if k.startswith("cynic@") and v.get("cpu_ms_per_judgment")]
        info["cpu_ms_per_judgment"] = sum(per_judgment) / len(per_judgment) if per_judgment else None
        info["plan"] = plan_for(targets[0].best, info["cpu_ms_per_judgment"],
                                (cpu.get("nginx") or {}).get("cpu_ms_per_request"), info["machine"]["container_nproc"])

        run_id = "dup%d" % int(time.time())
        dup_rate = max(2, round(0.6 * (targets[3].best or 5)))
        rest_rate = 4
        log(f"== duplicates: the corpus at rest at {rest_rate} req/s, then {dup_rate} req/s under each strategy")
        rest_target = Target("rest", "at rest", "http://127.0.0.1:80", "/judge", 0,
                             args=["--corpus", CORPUS, "--run-id", run_id + "r"])
        lab.settle()
        rest = lab.stress(rest_target, rest_rate, 120 / rest_rate, 0)
        info["duplicates"] = {"rate": dup_rate, "duration": args.dup_duration, "run_id": run_id,
                              "at_rest": {"rate": rest_rate, "run_id": rest["run_id"], "ok": rest["ok"],
                                          "errors": rest["errors"]}}
        info["duplicates"]["least_conn"] = duplicates_run(lab, "least_conn", dup_rate, args.dup_duration, run_id,
                                                          rest["q_by_text"])
        set_instances(lab, inv, list(INSTANCES), strategy="cell_affinity")
        info["duplicates"]["cell_affinity"] = duplicates_run(lab, "cell_affinity", dup_rate, args.dup_duration, run_id,
                                                             rest["q_by_text"])
    finally:
        if lab.running():
            log("restoring the scenario's layout (three instances, least_conn)")
            set_instances(lab, inv, list(INSTANCES))
    info["load_end"] = loadavg()
    info["wall_s"] = time.monotonic() - started
    info["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    write_report(args.out, targets, info)
    log(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    if not args.keep:
        run(["docker", "rm", "-f", CONTAINER], timeout=120, check=False, capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
