#!/usr/bin/env python3
"""What the disk syncs before an acknowledgement cost one CYNIC node at fixed rates.

Six combinations: the journal's fsync policy (CYNIC_JOURNAL_FSYNC = none | batch | line) times
SurrealDB's sync before acknowledge (SURREAL_SYNC_DATA = false | true, which the stand-in
passes to its engine as `?sync=never` / `?sync=every`). Each combination gets a fresh
SurrealDB stand-in and a fresh node (bench_node.start_servers, data and CYNIC_HOME in a new
directory under --dir), a short warm-up, then POST /judge (every request a new cell: judged,
stored, journaled) open loop at each fixed rate, with latencies from each request's due time
(coordinated omission corrected: bench_node.open_loop). The combinations run in an order and
then in the reverse order (ABCDEF FEDCBA), so that a machine drifting over the minutes does
not look like the cost of a policy; each figure is reported for both repeats.

Per run: achieved rate, errors, p50/p99/p99.9, CPU ms per request of the node and of the
stand-in (utime + stime, /proc/PID/stat), the flush requests the disk under --dir completed
per request (/proc/diskstats, the whole machine's: an fsync on ext4 ends in one or more), and
the CPU share of other processes. Before it measures, it waits (up to --wait-s) until no
molecule command runs on the machine and its CPUs are quiet.

Usage: .venv/bin/python cynic_node/bench/bench_journal.py --out reports/bench-journal.md
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

if not __package__:  # run as a script (bench/ on sys.path): import bench_node as mypy sees it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.bench_node import (
    REPO,
    TIMEOUT_S,
    Ladder,
    Step,
    busy_jiffies,
    count_stored,
    machine,
    run,
    run_step,
    settle,
    start_servers,
    stop,
    unique_judge_bodies,
)

JOURNAL_POLICIES = ("none", "batch", "line")
SURREAL_SYNC = ("false", "true")
# A, B, C, D, E, F: journal policy fastest-changing, SurrealDB's sync off then on.
COMBOS = [(journal, sync) for sync in SURREAL_SYNC for journal in JOURNAL_POLICIES]
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    journal: str
    sync: str
    repeat: int
    step: Step
    flushes: int | None  # disk flush requests completed during the step (whole machine)
    others_pct: float  # CPU share of the machine used by other processes during the step
    stored: int = 0  # judgment records in SurrealDB after the combination (warm-up included)
    journaled: int = 0  # lines in judgments.jsonl after it
    answered: int = 0  # 200s of the combination, warm-up included
    molecule: bool = False  # a molecule command ran before or after the combination

    @property
    def cpu(self) -> tuple[float, ...]:
        """CPU ms per request: generator, stand-in, node."""
        return self.step.cpu_ms or (float("nan"),) * 3


def block_device(path: Path) -> str | None:
    """The name of the block device holding path (as in /proc/diskstats), None if none."""
    st = os.stat(path)
    link = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    if not link.exists():
        return None
    name = link.resolve().name
    if (link / "partition").exists():  # diskstats also lists partitions; flushes are the disk's
        name = link.resolve().parent.name
    return name


def flushes(device: str | None) -> int | None:
    """Flush requests completed by device so far (/proc/diskstats field 19, Linux >= 5.5)."""
    if device is None:
        return None
    with open("/proc/diskstats") as f:
        for line in f:
            fields = line.split()
            if fields[2] == device and len(fields) >= 20:
                return int(fields[18])
    return None


def fsync_probe(directory: Path, count: int = 200) -> tuple[float, float, float]:
    """p50, p99 and max ms of write(~600 bytes) + fsync on a new file in directory: the disk's
    own cost of one synced journal line, without the node."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times: list[float] = []
    try:
        line = b"x" * 599 + b"\n"
        for _ in range(count):
            t0 = time.perf_counter_ns()
            os.write(fd, line)
            os.fsync(fd)
            times.append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return times[count // 2], times[int(count * 0.99) - 1], times[-1]


# Any molecule command (test, converge, verify, destroy, ...): each drives containers on this
# machine. `molecule test` alone missed a `molecule converge` run beside the benchmark.
MOLECULE = r"bin/molecule (test|converge|create|prepare|verify|idempotence|side-effect|destroy)"
QUIET_PCT = 15.0  # of all CPUs: the machine counts as quiet below this


def molecule_pids() -> list[str] | None:
    """The pids of running molecule commands (pgrep -f), None without pgrep."""
    pgrep = shutil.which("pgrep")
    if pgrep is None:
        return None
    found = subprocess.run([pgrep, "-f", MOLECULE], capture_output=True, text=True, check=False)
    return found.stdout.split()


def busy_pct(window_s: float) -> float:
    """The machine's CPU use over window_s, percent of all its CPUs (this process sleeps)."""
    b0, t0 = busy_jiffies(), time.monotonic()
    time.sleep(window_s)
    ticks = CLK_TCK * (time.monotonic() - t0) * (os.cpu_count() or 1)
    return 100.0 * (busy_jiffies() - b0) / ticks


def wait_for_molecule(max_s: float, poll_s: float) -> str:
    """Wait until no molecule command runs and the CPUs are quiet (< QUIET_PCT over 5 s),
    checking every poll_s, at most max_s; what happened."""
    started = time.monotonic()
    while True:
        busy = molecule_pids()
        cpu = busy_pct(5.0)
        waited = time.monotonic() - started
        if not busy and cpu < QUIET_PCT:
            return (
                f"none running at the start (waited {waited:.0f} s; CPU {cpu:.0f}% busy "
                "over the 5 s before it)"
                + (" (pgrep missing: not checked)" if busy is None else "")
            )
        if waited >= max_s:
            return (
                f"**still running or CPU busy after {waited / 60:.0f} min of waiting (molecule "
                f"pids: {', '.join(busy or []) or 'none'}, CPU {cpu:.0f}% busy): measured "
                "anyway**"
            )
        print(
            f"  molecule pids: {', '.join(busy or []) or 'none'}, CPU {cpu:.0f}% busy; "
            f"waiting {poll_s:.0f} s",
            flush=True,
        )
        time.sleep(poll_s)


async def drive(
    base: str,
    server_pids: list[int],
    points: list[tuple[int, float]],
    warmup_s: float,
    device: str | None,
) -> tuple[list[tuple[Step, int | None, float]], int]:
    """Warm-up at the first rate, then each (rate, duration) in turn on one session; per step
    the flushes and the other processes' CPU share. Also returns the warm-up's 200s."""
    body = unique_judge_bodies()
    ncpu = os.cpu_count() or 1
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    out: list[tuple[Step, int | None, float]] = []
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=512), timeout=timeout
    ) as session:
        ladder = Ladder("judge", base + "/judge", [], body, session, [], server_pids)
        warm = await run_step(session, ladder.url, "warm", points[0][0], warmup_s, body)
        await settle(server_pids)
        for rate, duration in points:
            f0, b0, t0 = flushes(device), busy_jiffies(), time.monotonic()
            await ladder.step(rate, duration)  # includes the settle after it
            f1, b1, t1 = flushes(device), busy_jiffies(), time.monotonic()
            step = ladder.steps[-1]
            ours = sum(step.cpu_ms or ()) * step.planned * CLK_TCK / 1000
            others = 100.0 * max(0.0, b1 - b0 - ours) / (CLK_TCK * (t1 - t0) * ncpu)
            n = None if f0 is None or f1 is None else f1 - f0
            out.append((step, n, others))
    return out, warm.ok


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(1 for _ in f)


def run_combo(
    journal: str,
    sync: str,
    repeat: int,
    parent: Path,
    points: list[tuple[int, float]],
    warmup_s: float,
    device: str | None,
) -> list[Run]:
    work = Path(tempfile.mkdtemp(prefix="cynic-bench-journal-", dir=parent))
    procs: list[subprocess.Popen[bytes]] = []
    print(f"journal {journal}, SURREAL_SYNC_DATA={sync}, repeat {repeat}", flush=True)
    try:
        ws_url, base = start_servers(
            work,
            procs,
            node_env={"CYNIC_JOURNAL_FSYNC": journal},
            surreal_env={"SURREAL_SYNC_DATA": sync},
            surreal_log="info",  # its start line names the sync mode; no line per request
        )
        mode = "sync=every" if sync == "true" else "sync=never"
        if mode not in (work / "surreal.log").read_text(errors="replace"):
            raise SystemExit(f"the stand-in did not open its store with {mode}")
        steps, warm_ok = run(drive(base, [p.pid for p in procs], points, warmup_s, device))
        stored = run(count_stored(ws_url))
    finally:
        for proc in reversed(procs):
            stop(proc)
    journaled = count_lines(work / "home" / "judgments.jsonl")
    shutil.rmtree(work, ignore_errors=True)
    answered = warm_ok + sum(s.ok for s, _, _ in steps)
    return [Run(journal, sync, repeat, s, n, o, stored, journaled, answered) for s, n, o in steps]


def both(values: list[float], fmt: str = "{:.2f}") -> str:
    return " / ".join(fmt.format(v) for v in values)


def table(runs: list[Run], rates: list[int]) -> list[str]:
    lines = [
        "| rate (req/s) | journal | SurrealDB sync | achieved (req/s) | errors | p50 ms | p99 ms "
        "| p99.9 ms | node CPU ms/req | stand-in CPU ms/req | disk flushes/req | others' CPU % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rate in rates:
        for journal, sync in COMBOS:
            rs = sorted(
                (r for r in runs if (r.journal, r.sync, r.step.rate) == (journal, sync, rate)),
                key=lambda r: r.repeat,
            )
            if not rs:
                continue
            fl = [r.flushes / r.step.planned for r in rs if r.flushes is not None]
            lines.append(
                f"| {rate} | `{journal}` | `{sync}` "
                f"| {both([r.step.achieved for r in rs], '{:.0f}')} "
                f"| {both([r.step.errors for r in rs], '{:.0f}')} "
                f"| {both([r.step.pct(50) for r in rs])} "
                f"| {both([r.step.pct(99) for r in rs])} "
                f"| {both([r.step.pct(99.9) for r in rs])} "
                f"| {both([r.cpu[2] for r in rs], '{:.3f}')} "
                f"| {both([r.cpu[1] for r in rs], '{:.3f}')} "
                f"| {both(fl) if fl else 'n/a'} "
                f"| {both([r.others_pct for r in rs], '{:.0f}')} |"
            )
    return lines


def spread(runs: list[Run], rates: list[int]) -> list[str]:
    """Run-to-run noise: per rate, the median and the largest difference between the two
    repeats of one combination, against the spread of the combinations' means."""
    lines = [
        "| rate (req/s) | figure | repeat-to-repeat difference, median (max) over the 6 "
        "combinations | range of the 6 combinations' means |",
        "| --- | --- | --- | --- |",
    ]
    figures: dict[str, Callable[[Run], float]] = {
        "p50 ms": lambda r: r.step.pct(50),
        "p99 ms": lambda r: r.step.pct(99),
        "p99.9 ms": lambda r: r.step.pct(99.9),
        "node CPU ms/req": lambda r: r.cpu[2],
        "stand-in CPU ms/req": lambda r: r.cpu[1],
    }
    for rate in rates:
        for name, get in figures.items():
            diffs: list[float] = []
            means: list[float] = []
            for combo in COMBOS:
                vals = [get(r) for r in runs if (r.journal, r.sync, r.step.rate) == (*combo, rate)]
                if len(vals) >= 2:
                    diffs.append(max(vals) - min(vals))
                if vals:
                    means.append(statistics.fmean(vals))
            if not means:
                continue
            d = f"{statistics.median(diffs):.3f} ({max(diffs):.3f})" if diffs else "n/a"
            lines.append(f"| {rate} | {name} | {d} | {min(means):.3f} - {max(means):.3f} |")
    return lines


def sh(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError as exc:
        return f"({cmd[0]}: {exc})"


def write_report(
    out: Path,
    runs: list[Run],
    rates: list[int],
    args: argparse.Namespace,
    disk: dict[str, str],
    molecule: str,
    elapsed_s: float,
) -> None:
    info = machine()
    others = max((r.others_pct for r in runs), default=0.0)
    bad = [r for r in runs if r.stored < r.answered or r.journaled < r.answered]
    order = " ".join("".join("ABCDEF"[COMBOS.index(c)] for c in o) for o in orders(args.repeats))
    lines = [
        "# Cost of the disk syncs before an acknowledgement: journal fsync x SurrealDB sync",
        "",
        f"Generated by `cynic_node/bench/bench_journal.py` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC} ({elapsed_s:.0f} s).",
        "",
        f"Molecule commands: {molecule}"
        + (
            "; **one ran during "
            + ", ".join(
                sorted({f"{r.journal}/{r.sync} repeat {r.repeat}" for r in runs if r.molecule})
            )
            + "**: those figures include its load"
            if any(r.molecule for r in runs)
            else "; none ran during the measurement either"
        )
        + f". Other processes used at most {others:.0f}% of the "
        "machine's CPU during a step"
        + (
            "; **busy (10% or more) during "
            + ", ".join(
                f"{r.journal}/{r.sync} at {r.step.rate} req/s repeat {r.repeat}"
                for r in runs
                if r.others_pct >= 10.0
            )
            + "**: those figures include that contention."
            if others >= 10.0
            else "."
        ),
        "",
        "## Result",
        "",
        "POST /judge, every request a new cell (judged, stored in SurrealDB, one journal line), "
        "open loop at a fixed rate. Each cell: repeat 1 / repeat 2. CPU: utime + stime per "
        "request sent. Disk flushes: flush requests the disk under the data directory completed "
        "per request, over the step and its settling (whole machine: other processes' included).",
        "",
        *table(runs, rates),
        "",
        "Run-to-run noise (a difference between combinations smaller than the repeats' own is "
        "not a cost):",
        "",
        *spread(runs, rates),
        "",
        "Stored check: "
        + (
            "every combination stored and journaled at least as many judgments as it answered "
            "200 (warm-up included)."
            if not bad
            else "MISSING records or lines in "
            + ", ".join(f"{r.journal}/{r.sync}/{r.repeat}" for r in bad)
            + "."
        ),
        "",
        "## Machine and disk",
        "",
        *(f"- {k}: {v}" for k, v in info.items()),
        *(f"- {k}: {v}" for k, v in disk.items()),
        "",
        "## How it was measured",
        "",
        f"- `make bench-journal` (`cynic_node/bench/bench_journal.py --dir {args.dir}`): "
        "for each combination a fresh SurrealDB stand-in (`tests/standins/surreal/surreal`, "
        "the real engine, surrealkv on disk, `SURREAL_SYNC_DATA` as given; its start line "
        "checked for `sync=every` / `sync=never`) and a fresh node (`python -m cynic_node`, "
        "1 uvicorn worker, `CYNIC_JOURNAL_FSYNC` as given), both with their data in a new "
        f"directory under `{args.dir}`; stopped and removed after it.",
        f"- Order of the combinations: {order} (A-F: journal none, batch, line with "
        "SurrealDB sync false, then the same with true), each letter one fresh pair.",
        f"- Per combination: {args.warmup:g} s warm-up at {rates[0]} req/s (not reported), "
        "then "
        + ", then ".join(f"{r} req/s for {d:g} s" for r, d in points(args))
        + ", each followed by a wait until node and stand-in are idle. Load: bench_node's "
        "open-loop generator (aiohttp on uvloop, up to 512 keep-alive connections, GC off "
        "during a step); latency from each request's due time (t0 + i/rate), so a stalled "
        "server is charged for it (coordinated omission corrected). Timeout 5 s.",
        "- Percentiles are of one run each: "
        + ", ".join(
            f"at {r} req/s p99.9 of {int(r * d)} requests leaves out only their "
            f"{int(r * d) - math.ceil(0.999 * int(r * d))} worst"
            for r, d in points(args)
        )
        + ". Others' CPU %: the share of the machine's CPU time used by processes other than "
        "the generator, the node and the stand-in during the step (/proc/stat).",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def orders(repeats: int) -> list[list[tuple[str, str]]]:
    """ABCDEF, FEDCBA, ABCDEF, ... one list per repeat."""
    return [COMBOS if i % 2 == 0 else COMBOS[::-1] for i in range(repeats)]


def points(args: argparse.Namespace) -> list[tuple[int, float]]:
    rates = [int(r) for r in args.rates.split(",")]
    durations = [float(d) for d in args.durations.split(",")]
    if len(durations) != len(rates):
        raise SystemExit("--durations needs one value per rate")
    return list(zip(rates, durations, strict=True))


def disk_info(directory: Path, device: str | None) -> dict[str, str]:
    probe = fsync_probe(directory)
    info = {
        "data directory": str(directory),
        "df -T": " ".join(sh("df", "-T", str(directory)).splitlines()[-1].split()),
        "findmnt": " ".join(
            sh("findmnt", "-n", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS", "-T", str(directory)).split()
        ),
        "block device": device or "none (no flush count)",
    }
    if device is not None:
        cache = Path(f"/sys/block/{device}/queue/write_cache")
        if cache.exists():
            info["its write cache"] = cache.read_text().strip()
    info["write(600 B) + fsync on it, 200 times, before the runs"] = (
        f"p50 {probe[0]:.3f} ms, p99 {probe[1]:.3f} ms, max {probe[2]:.3f} ms"
    )
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "reports/bench-journal.md")
    # /var/tmp: on disk on every host (Debian 13's /tmp is a tmpfs), on the filesystem that
    # holds /var/lib/cynic and /var/lib/surrealdb on a host without separate mounts.
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--rates", default="150,400", help="fixed rates, req/s")
    # About the same number of requests at each rate (so p99.9 means the same).
    parser.add_argument("--durations", default="18,7", help="seconds at each rate")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=2, help="ABCDEF, FEDCBA, ...")
    parser.add_argument("--wait-s", type=float, default=45 * 60, help="for molecule, quiet CPUs")
    parser.add_argument("--poll-s", type=float, default=30.0)
    args = parser.parse_args()
    pts = points(args)
    args.dir.mkdir(parents=True, exist_ok=True)
    device = block_device(args.dir)

    molecule = wait_for_molecule(args.wait_s, args.poll_s)
    print(f"molecule commands: {molecule}", flush=True)
    started = time.monotonic()
    disk = disk_info(args.dir, device)
    runs: list[Run] = []
    for repeat, order in enumerate(orders(args.repeats), 1):
        for journal, sync in order:
            before = molecule_pids()
            combo = run_combo(journal, sync, repeat, args.dir, pts, args.warmup, device)
            if before or molecule_pids():  # one started (or still ran) meanwhile: say so
                for r in combo:
                    r.molecule = True
            runs += combo
    elapsed = time.monotonic() - started
    write_report(args.out, runs, [r for r, _ in pts], args, disk, molecule, elapsed)
    print(f"report {args.out}, {elapsed:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
