"""A flood of large and compressed WebSocket frames against a real node process (uvicorn, as
`cynic-node` starts it) does not delay /health or /judge on that instance.

Latency is measured in the same run without and with the flood, and compared as a ratio of
medians; the flood runs in its own process (tests/ws_flood.py) so that it does not share this
process's interpreter lock with the measuring client.
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nodetest_helpers import NodeProcess

FLOOD = Path(__file__).with_name("ws_flood.py")
SAMPLES = 120
FLOOD_CONNECTIONS = 6


def latencies(port: int, samples: int, tag: str) -> dict[str, list[float]]:
    """Alternate GET /health and POST /judge (REFLEX, a new cell each) on one keep-alive
    connection; seconds per request, every answer checked."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out: dict[str, list[float]] = {"health": [], "judge": []}
    try:
        for n in range(samples):
            started = time.perf_counter_ns()
            conn.request("GET", "/health")
            resp = conn.getresponse()
            body = resp.read()
            out["health"].append((time.perf_counter_ns() - started) / 1e9)
            assert resp.status == 200, body

            payload = json.dumps({"content": f"flood {tag} {n}", "level": "REFLEX"})
            started = time.perf_counter_ns()
            conn.request("POST", "/judge", payload, {"content-type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
            out["judge"].append((time.perf_counter_ns() - started) / 1e9)
            assert resp.status == 200, body
    finally:
        conn.close()
    return out


@pytest.mark.parametrize(
    ("compression", "bomb_mib"),
    [
        # the default: no compression; the bomb (8 KiB on the wire) is over the limit as it is
        (False, 8),
        # compression configured on: a bomb under the limit on the wire (3 KiB for 3 MiB) is
        # inflated only up to the limit
        (True, 3),
    ],
)
def test_a_flood_of_large_or_compressed_frames_does_not_delay_the_instance(
    start_node: Callable[..., NodeProcess], tmp_path: Path, compression: bool, bomb_mib: int
) -> None:
    env = {"SURREAL_USER": "", "CYNIC_WS_COMPRESSION": "true" if compression else ""}
    # mem://: the embedded engine, no user to sign in as
    node = start_node("flooded", "mem://", tmp_path / "home", env)
    latencies(node.port, 20, "warm-up")
    quiet = latencies(node.port, SAMPLES, "quiet")

    flood = subprocess.Popen(
        [sys.executable, str(FLOOD), str(node.port), "60", str(FLOOD_CONNECTIONS), str(bomb_mib)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert flood.stdout is not None
        assert flood.stdout.readline().strip() == "flooding"
        flooded = latencies(node.port, SAMPLES, "flooded")
    finally:
        flood.terminate()
        out, _ = flood.communicate(timeout=30)
    counts: dict[str, Any] = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}

    ratios = {
        route: statistics.median(flooded[route]) / statistics.median(quiet[route])
        for route in ("health", "judge")
    }
    report = {
        "median_ms": {
            route: (
                round(statistics.median(quiet[route]) * 1000, 3),
                round(statistics.median(flooded[route]) * 1000, 3),
            )
            for route in ratios
        },
        "ratios": ratios,
        "flood": counts,
    }
    print(json.dumps(report))
    (tmp_path / "flood-report.json").write_text(json.dumps(report))

    # Every flood connection was let in (this is not the connection cap at work) ...
    assert counts.get("accepted", 0) >= FLOOD_CONNECTIONS, report
    # ... compression only when configured, and the server closed them on their first frame ...
    assert counts["deflate_agreed"] == (counts["accepted"] if compression else 0), report
    assert counts["bomb_frame_bytes"] < 4096 if compression else counts["bomb_frame_bytes"] > 4096
    assert counts["closed_by_server"] >= counts["accepted"] - FLOOD_CONNECTIONS, report
    # ... so that the instance answered as fast, to within a small factor, as without them.
    assert ratios["health"] < 3, report
    assert ratios["judge"] < 3, report
