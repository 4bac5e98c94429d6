#!/usr/bin/env python3
"""Benchmark one CYNIC node: POST /judge (judged and stored) against an empty endpoint.

Starts a SurrealDB stand-in and one node (uvicorn, one worker, CYNIC_BENCH_ROUTES=1) on free
loopback ports, then drives open-loop constant-rate load with aiohttp at rising rates. Request
i is due at t0 + i/rate whether or not earlier ones have come back (open loop), and its latency
is measured from that due time, not from when it was actually sent: a stalled server or a
late generator shows up as latency (coordinated omission corrected). A rate holds when every
request answered 200 and p99 <= 50 ms; the ladder for a target stops at its first failing rate,
then bisects between the last pass and the first fail. The generator's cyclic garbage collector
is off while a step runs: its full collections stopped the generator for 20-150 ms, which the
due-time clock would have charged to the server.

Usage: .venv/bin/python cynic_node/bench/bench_node.py --out reports/bench-node.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
REPO = HERE.parent.parent
STANDIN = REPO / "tests/standins/surreal/surreal"
P99_LIMIT_MS = 50.0
TIMEOUT_S = 5.0
REFINED_ENOUGH = 1.1  # bisection stops when the first failure is within 10% of the last pass
BENCH_PASS = "bench-only-password"  # a throwaway database in a temporary directory


@dataclass
class Step:
    target: str
    rate: int
    planned: int
    ok: int
    errors: int
    duration_s: float
    latencies_ms: list[float]
    error_kinds: dict[str, int]
    # CPU time per planned request during the step, ms: generator, stand-in, node (/proc)
    cpu_ms: tuple[float, ...] | None = None

    def pct(self, p: float) -> float:
        if not self.latencies_ms:
            return math.inf
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, math.ceil(p / 100 * len(data)) - 1)]

    @property
    def passed(self) -> bool:
        return self.errors == 0 and self.ok == self.planned and self.pct(99) <= P99_LIMIT_MS

    @property
    def achieved(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 (loopback)
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {url}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def gc_paused() -> Any:
    """No cyclic GC in this process while requests are timed: a full collection of the
    generator's heap stops its loop for 20-150 ms (seen here), which would be charged to the
    server as latency. Reference counting frees the rest; the collector resumes after."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def open_loop(
    target: str, rate: int, duration: float, send: Callable[[int], Awaitable[str | None]]
) -> Step:
    """Calls send(i) at a constant rate for duration seconds, open loop: call i is due at
    t0 + i/rate whatever happened to the earlier ones, and its latency counts from that due
    time. send returns None on success, else the kind of error."""
    planned = int(rate * duration)
    latencies: list[float] = []
    error_kinds: dict[str, int] = {}
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int, due_ns: int) -> None:
        error = await send(i)
        if error is None:
            latencies.append((time.perf_counter_ns() - due_ns) / 1e6)
        else:
            error_kinds[error] = error_kinds.get(error, 0) + 1

    interval_ns = 1e9 / rate
    with gc_paused():
        start_ns = time.perf_counter_ns()
        i = 0
        while i < planned:
            now = time.perf_counter_ns()
            # Fire everything that is due (a late wake-up sends a burst: open loop).
            while i < planned and start_ns + i * interval_ns <= now:
                due = int(start_ns + i * interval_ns)
                tasks.append(asyncio.create_task(one(i, due)))
                i += 1
            if i < planned:
                wait_s = (start_ns + i * interval_ns - time.perf_counter_ns()) / 1e9
                await asyncio.sleep(max(0.0, wait_s))
        await asyncio.gather(*tasks)
        elapsed = (time.perf_counter_ns() - start_ns) / 1e9
    return Step(
        target,
        rate,
        planned,
        len(latencies),
        sum(error_kinds.values()),
        max(elapsed, duration),
        latencies,
        error_kinds,
    )


async def run_step(
    session: aiohttp.ClientSession,
    url: str,
    target: str,
    rate: int,
    duration: float,
    body_for: Any,
) -> Step:
    async def post(i: int) -> str | None:
        try:
            async with session.post(url, data=body_for(i), headers=HEADERS) as resp:
                await resp.read()
                return None if resp.status == 200 else f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return type(exc).__name__

    return await open_loop(target, rate, duration, post)


HEADERS = {"content-type": "application/json"}


@dataclass
class Ladder:
    """One endpoint's climb: its session, its body, its steps."""

    target: str
    url: str
    rates: list[int]
    body_for: Any
    session: aiohttp.ClientSession
    steps: list[Step]
    server_pids: list[int]
    last_pass: int = 0
    first_fail: int = 0

    @property
    def climbing(self) -> bool:
        return self.first_fail == 0

    async def step(self, rate: int, duration: float) -> None:
        pids = [os.getpid(), *self.server_pids]
        before = [process_jiffies(pid) for pid in pids]
        step = await run_step(self.session, self.url, self.target, rate, duration, self.body_for)
        ms_per_tick = 1000.0 / os.sysconf("SC_CLK_TCK")
        step.cpu_ms = tuple(
            (process_jiffies(pid) - b) * ms_per_tick / step.planned
            for pid, b in zip(pids, before, strict=True)
        )
        report_line(step)
        self.steps.append(step)
        if step.passed:
            self.last_pass = max(self.last_pass, rate)
        elif self.first_fail == 0 or rate < self.first_fail:
            self.first_fail = rate
        await settle(self.server_pids)


async def settle(pids: list[int], window_s: float = 0.25, max_s: float = 30.0) -> None:
    """Wait until the servers are idle (together under 5% of one CPU for window_s).

    A failed step leaves seconds of queued work behind it (requests the client gave up on,
    records still being written); the next step, often the other endpoint's, must not pay
    for it. At least one window, at most max_s.
    """
    quiet_ticks = 0.05 * os.sysconf("SC_CLK_TCK") * window_s
    deadline = time.monotonic() + max_s
    while True:
        before = sum(process_jiffies(pid) for pid in pids)
        await asyncio.sleep(window_s)
        if sum(process_jiffies(pid) for pid in pids) - before <= quiet_ticks:
            return
        if time.monotonic() > deadline:
            print(f"  servers still busy after {max_s:.0f} s; going on", flush=True)
            return


def unique_judge_bodies() -> Callable[[int], bytes]:
    """A body_for of /judge whose every call has new content, so every request is judged and
    stored (no cell is reused)."""
    counter = [0]

    def judge_body(_: int) -> bytes:
        counter[0] += 1
        return json.dumps(
            {
                "content": f"Test code {counter[0]}",
                "reality": "CODE",
                "analysis": "JUDGE",
                "budget_usd": 0.01,
            }
        ).encode()

    return judge_body


async def ladders(
    base: str,
    judge_rates: list[int],
    empty_rates: list[int],
    duration: float,
    deadline: float,
    refine: int,
    server_pids: list[int],
) -> tuple[list[Step], list[Step], int]:
    """Both ladders, interleaved rate by rate so that both see the same machine.

    On a machine shared with other work the load varies over minutes; running all of one
    ladder and then all of the other would compare two different moments. Each ladder stops
    at its first failing rate, then bisects (geometrically) between its last pass and its
    first failure, up to `refine` times or until they are less than 10% apart.
    Returns the /judge steps, the empty steps, and the warm-up answers of /judge.
    """
    judge_body = unique_judge_bodies()
    empty = json.dumps(
        {"content": "Test code 0", "reality": "CODE", "analysis": "JUDGE", "budget_usd": 0.01}
    ).encode()

    def empty_body(_: int) -> bytes:
        return empty

    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512), timeout=timeout) as js,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512), timeout=timeout) as es,
    ):
        judge = Ladder("judge", base + "/judge", judge_rates, judge_body, js, [], server_pids)
        empty_l = Ladder(
            "empty", base + "/_bench/empty", empty_rates, empty_body, es, [], server_pids
        )
        # Warm-up, not reported: connections, first calls.
        warm = await run_step(js, judge.url, "judge", 50, 2.0, judge_body)
        await run_step(es, empty_l.url, "empty", 50, 2.0, empty_body)
        for i in range(max(len(judge_rates), len(empty_rates))):
            for ladder in (judge, empty_l):
                if not ladder.climbing or i >= len(ladder.rates):
                    continue
                if time.monotonic() + duration > deadline:
                    print(f"  {ladder.target}: time budget reached", flush=True)
                    ladder.first_fail = -1
                    continue
                await ladder.step(ladder.rates[i], duration)
        for _ in range(refine):
            for ladder in (judge, empty_l):
                if not (ladder.last_pass and ladder.first_fail > 0):
                    continue
                if ladder.first_fail < ladder.last_pass * REFINED_ENOUGH:
                    continue
                if time.monotonic() + duration > deadline:
                    return judge.steps, empty_l.steps, warm.ok
                await ladder.step(int(math.sqrt(ladder.last_pass * ladder.first_fail)), duration)
    return judge.steps, empty_l.steps, warm.ok


def report_line(s: Step) -> None:
    print(
        f"  {s.target:5} {s.rate:5d}/s sent {s.planned:6d} ok {s.ok:6d} err {s.errors:4d} "
        f"p50 {s.pct(50):7.2f} p99 {s.pct(99):8.2f} max {s.pct(100):8.2f} ms "
        f"{'PASS' if s.passed else 'FAIL'}",
        flush=True,
    )


def best(steps: list[Step]) -> Step | None:
    passing = [s for s in steps if s.passed]
    return max(passing, key=lambda s: s.rate) if passing else None


async def store_floor(ws_url: str, rate: int, duration: float) -> Step:
    """Raw SDK CREATEs at a constant rate, no node in between: the store's own latency.

    Everything the node answers waits for one of these, so their p99 is a floor under the
    p99 of /judge on this machine at that moment.
    """
    from surrealdb import AsyncSurreal, RecordID

    db = AsyncSurreal(ws_url)
    await db.connect(ws_url)
    await db.signin({"username": "root", "password": BENCH_PASS})
    await db.use("cynic", "cynic")
    record: dict[str, Any] = {"q_score": 50.0, "verdict": "GROWL", "note": "floor probe", "n": 0}

    async def create(i: int) -> str | None:
        try:
            await db.query(
                "CREATE $r CONTENT $c RETURN NONE",
                {"r": RecordID("floor_probe", i), "c": {**record, "n": i}},
            )
        except Exception as exc:
            return type(exc).__name__
        return None

    try:
        return await open_loop("store", rate, duration, create)
    finally:
        await db.query("REMOVE TABLE floor_probe")
        await db.close()


async def count_stored(ws_url: str) -> int:
    from surrealdb import AsyncSurreal

    db = AsyncSurreal(ws_url)
    await db.connect(ws_url)
    try:
        await db.signin({"username": "root", "password": BENCH_PASS})
        await db.use("cynic", "cynic")
        rows: Any = await db.query("SELECT count() AS n FROM judgment GROUP ALL")
        return int(rows[0]["n"]) if rows else 0
    finally:
        await db.close()


def machine() -> dict[str, str]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def busy_jiffies() -> int:
    """CPU time used on the whole machine so far (all CPUs, not idle, not iowait), in ticks."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle


def process_jiffies(pid: int) -> int:
    """utime + stime of one process (all its threads), in ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class CpuShare:
    """How much of the machine's CPU went to processes other than the benchmark's own three
    (generator, node, stand-in) between start() and stop(): the measure of contention."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = [os.getpid(), *pids]
        self.busy0 = self.ours0 = 0
        self.others_pct = 0.0
        self.ours_pct = 0.0

    def _ours(self) -> int:
        return sum(process_jiffies(pid) for pid in self.pids)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.busy0, self.ours0 = busy_jiffies(), self._ours()

    def stop(self) -> None:
        ticks = os.sysconf("SC_CLK_TCK") * (time.monotonic() - self.t0) * (os.cpu_count() or 1)
        busy, ours = busy_jiffies() - self.busy0, self._ours() - self.ours0
        self.ours_pct = 100.0 * ours / ticks
        self.others_pct = 100.0 * max(0, busy - ours) / ticks


def busy_warning(others_pct: float) -> list[str]:
    """A warning when other work shared the CPUs: the figures then measure contention."""
    if others_pct < 10.0:
        return []
    return [
        f"**Warning: the machine was busy**: processes other than this benchmark used "
        f"{others_pct:.0f}% of its CPU time during the run. The rates below measure the "
        "node under that contention and vary from run to run; the ratio is not reliable. Rerun "
        "on a quiet machine for the node's own figures.",
        "",
    ]


def cpu_breakdown(judge: list[Step], empty: list[Step], cores: str) -> list[str]:
    """Where a request's CPU goes, per process: each endpoint at its highest passing rate,
    and the empty endpoint again at /judge's (costs per request fall as the rate rises)."""
    bj, be = best(judge), best(empty)
    if not (bj and be):
        return []
    rows = [("/judge", bj), ("/_bench/empty", be)]
    same_rate = next((s for s in empty if s.rate == bj.rate and s.passed), None)
    if same_rate is not None and same_rate is not be:
        rows.append(("/_bench/empty", same_rate))
    lines = [
        "CPU time per request, from each process's utime + stime over the step "
        "(/proc/PID/stat) divided by the requests sent; in brackets, the cores this keeps busy "
        f"at the step's rate (1.00 = one core). The three processes share the machine's {cores} "
        "cores.",
        "",
        "| endpoint | rate (req/s) | generator ms | SurrealDB stand-in ms | node ms "
        "| all three ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, step in rows:
        if step.cpu_ms is None:
            continue
        cells = [*step.cpu_ms, sum(step.cpu_ms)]
        lines.append(
            f"| {name} | {step.rate} | "
            + " | ".join(f"{ms:.3f} ({ms * step.rate / 1000:.2f})" for ms in cells)
            + " |"
        )
    return [*lines, ""]


def write_report(
    out: Path,
    judge: list[Step],
    empty: list[Step],
    floor: Step,
    info: dict[str, str],
    stored: int,
    ok_judged: int,
    duration: float,
    refine: int,
    share: CpuShare,
) -> None:
    bj, be = best(judge), best(empty)
    ratio = (bj.rate / be.rate) if bj and be else 0.0
    lines = [
        "# CYNIC node benchmark",
        "",
        f"Generated by `cynic_node/bench/bench_node.py` on {datetime.now(UTC):%Y-%m-%d %H:%M UTC}.",
        "",
        "## Result",
        "",
        "| endpoint | highest rate holding p99 <= 50 ms, no errors |",
        "| --- | --- |",
        f"| POST /judge (judged and stored) | {bj.rate if bj else 0} req/s |",
        f"| POST /_bench/empty (same app, no work) | {be.rate if be else 0} req/s |",
        "",
        f"Ratio judged-and-stored / empty: **{ratio:.0%}** (target >= 40%: "
        f"{'met' if ratio >= 0.4 else 'NOT met'}).",
        "",
        *busy_warning(share.others_pct),
        *cpu_breakdown(judge, empty, info["nproc"]),
        f"Stored check: {stored} judgment records in SurrealDB for {ok_judged} answers of 200 "
        "to unique cells, warm-up included"
        + (
            " (every answered judgment was stored; more records than answers are requests the"
            " client gave up on in a failed step, judged and stored after all)."
            if stored >= ok_judged
            else " (MISSING!)."
        ),
        "",
        f"Reference, SurrealDB alone: raw SDK, one `CREATE ... RETURN NONE` per request at "
        f"{floor.rate} req/s for 5 s, no node in between: p50 {floor.pct(50):.2f} ms, p99 "
        f"{floor.pct(99):.2f} ms, max {floor.pct(100):.2f} ms, {floor.errors} errors. Every "
        "/judge waits for the write of its record (alone when idle, in one INSERT with others "
        "under load), so this p99 is about the floor under /judge's at that moment.",
        "",
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in info.items()),
        "- everything on this one machine: load generator, node, SurrealDB stand-in, and "
        "whatever else runs there",
        f"- CPU time during the run, as a share of all {info['nproc']} cores: "
        f"{share.ours_pct:.0f}% for the benchmark's three processes, "
        f"{share.others_pct:.0f}% for everything else (from /proc/stat and /proc/PID/stat)",
        "",
        "## How it was measured",
        "",
        "- One SurrealDB stand-in (`tests/standins/surreal/surreal`: the real SurrealDB engine "
        "from the surrealdb-embedded wheel behind the server's /rpc WebSocket, surrealkv "
        "storage on disk) and one node (`python -m cynic_node`, uvicorn, 1 worker, "
        "`CYNIC_BENCH_ROUTES=1`), both on loopback, started fresh by the script.",
        "- Load: aiohttp 3 client on uvloop, one session per endpoint, up to 512 keep-alive "
        f"connections, open loop at a constant rate for {duration:g} s per step after a 2 s "
        "warm-up; rising rates, the two endpoints' steps interleaved rate by rate (so both see "
        "the machine in the same state); each ladder stops at its first failing rate and then "
        f"bisects geometrically between its last pass and that failure (up to {refine} more "
        "steps, until the two are within 10%). Before each step the script waits until the "
        "node and the stand-in are idle (under 5% of a CPU for 250 ms, at most 30 s): a failed "
        "step leaves seconds of queued work that the next step must not pay for.",
        "- Latency of each request is taken from its intended send time (t0 + i/rate), so a "
        "server or generator that falls behind is charged for it (coordinated omission "
        "corrected); clock `time.perf_counter_ns()`. The generator's cyclic garbage collector "
        "is off during a step (its full collections paused the generator for 20-150 ms).",
        '- /judge body: `{"content": "Test code {i}", "reality": "CODE", "analysis": '
        '"JUDGE", "budget_usd": 0.01}` with a unique i, so every request is judged (REFLEX) '
        "and written to SurrealDB. /_bench/empty gets the same body and answers `{}`.",
        "- A step passes when all its requests answered 200 within 5 s and p99 <= 50 ms.",
        "",
        "## Steps",
        "",
        "| endpoint | rate (req/s) | sent | ok | errors | achieved (req/s) | p50 ms | p90 ms "
        "| p99 ms | max ms | CPU ms/req: generator, stand-in, node | result |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in [*judge, *empty]:
        errs = (
            f"{s.errors} ({', '.join(f'{k}: {v}' for k, v in s.error_kinds.items())})"
            if s.errors
            else "0"
        )
        lines.append(
            f"| {s.target} | {s.rate} | {s.planned} | {s.ok} | {errs} | {s.achieved:.0f} "
            f"| {s.pct(50):.2f} | {s.pct(90):.2f} | {s.pct(99):.2f} | {s.pct(100):.2f} "
            f"| {', '.join(f'{ms:.3f}' for ms in s.cpu_ms or ())} "
            f"| {'pass' if s.passed else 'FAIL'} |"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def run(coro: Any) -> Any:
    """Run coro on uvloop when it is there (it halves the client's cost per request).

    Its clock ticks in milliseconds, which is why every time here is perf_counter_ns().
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def start_servers(
    work: Path,
    procs: list[subprocess.Popen[bytes]],
    node_env: dict[str, str] | None = None,
    surreal_env: dict[str, str] | None = None,
    surreal_log: str = "warn",
) -> tuple[str, str]:
    """A SurrealDB stand-in (data in work/db) and one node (CYNIC_HOME work/home) on free
    loopback ports, each appended to procs as soon as it runs (the caller stops them, also
    when a start fails); node_env and surreal_env are added to their environments. Returns
    the stand-in's /rpc URL and the node's base URL, once both answer /health."""
    surreal_port, node_port = free_port(), free_port()
    procs.append(
        subprocess.Popen(
            [
                sys.executable,
                str(STANDIN),
                "start",
                "--bind",
                f"127.0.0.1:{surreal_port}",
                "--user",
                "root",
                "--log",
                surreal_log,
                f"surrealkv://{work / 'db'}",
            ],
            stdout=(work / "surreal.log").open("wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "SURREAL_PASS": BENCH_PASS, **(surreal_env or {})},
        )
    )
    wait_http(f"http://127.0.0.1:{surreal_port}/health", 30)
    ws_url = f"ws://127.0.0.1:{surreal_port}/rpc"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "INSTANCE_ID": "bench-1",
        "CYNIC_HOME": str(work / "home"),
        "SURREAL_URL": ws_url,
        "SURREAL_USER": "root",
        "SURREAL_PASS": BENCH_PASS,
        "OLLAMA_URL": f"http://127.0.0.1:{free_port()}",
        "CYNIC_BENCH_ROUTES": "1",
        **(node_env or {}),
    }
    procs.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cynic_node",
                "--port",
                str(node_port),
                "--log-level",
                "warning",
            ],
            stdout=(work / "node.log").open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
        )
    )
    wait_http(f"http://127.0.0.1:{node_port}/health", 30)
    return ws_url, f"http://127.0.0.1:{node_port}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "reports/bench-node.md")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per rate")
    # The same ladder for both: a shorter one for /judge would cap its result below what it
    # holds (it did at 1600 once the store's batches became one INSERT).
    rates = "50,100,200,400,800,1600,3200,6400,12800"
    parser.add_argument("--judge-rates", default=rates)
    parser.add_argument("--empty-rates", default=rates)
    parser.add_argument("--refine", type=int, default=3, help="bisection steps after a failure")
    parser.add_argument("--budget-s", type=float, default=300.0, help="stop climbing after this")
    args = parser.parse_args()
    started = time.monotonic()
    deadline = started + args.budget_s
    info = machine()

    work = Path(tempfile.mkdtemp(prefix="cynic-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ws_url, base = start_servers(work, procs)
        judge_rates = [int(r) for r in args.judge_rates.split(",")]
        empty_rates = [int(r) for r in args.empty_rates.split(",")]
        print("POST /judge and POST /_bench/empty, interleaved", flush=True)
        server_pids = [proc.pid for proc in procs]
        share = CpuShare(server_pids)
        share.start()
        judge, empty, warm_ok = run(
            ladders(
                base,
                judge_rates,
                empty_rates,
                args.duration,
                deadline,
                args.refine,
                server_pids,
            )
        )
        stored = run(count_stored(ws_url))
        print("SurrealDB alone (reference)", flush=True)
        floor = run(store_floor(ws_url, 200, 5.0))
        report_line(floor)
        ok_judged = warm_ok + sum(s.ok for s in judge)
        share.stop()
        write_report(
            args.out,
            judge,
            empty,
            floor,
            info,
            stored,
            ok_judged,
            args.duration,
            args.refine,
            share,
        )
        bj, be = best(judge), best(empty)
        print(
            f"judge {bj.rate if bj else 0}/s, empty {be.rate if be else 0}/s, "
            f"stored {stored} for {ok_judged} answers, report {args.out}, "
            f"{time.monotonic() - started:.0f} s",
            flush=True,
        )
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
