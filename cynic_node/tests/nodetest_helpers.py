"""Helpers for the node's tests: processes on free ports, waiting, reading the journal.

In-process tests use the SDK's embedded engine (mem://): the same AsyncSurreal API and the same
SurrealDB engine as a server, without a socket. Integration tests start the SurrealDB stand-in
(tests/standins/surreal/surreal, the real engine behind the server's /rpc WebSocket) and node
processes through the `cynic-node` entry point, on free loopback ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"
REPO = Path(__file__).resolve().parents[2]
STANDIN = Path(os.environ.get("CYNIC_SURREAL_STANDIN", REPO / "tests/standins/surreal/surreal"))
ROOT_PASS = "cynic-test-pass"  # a throwaway password for a throwaway database


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback)
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if check():
                return
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@dataclass
class SurrealServer:
    """The SurrealDB stand-in on a free port, with a data directory that survives restarts."""

    data_dir: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/rpc"

    def start(self) -> None:
        log = self.log_path.open("ab")
        env = {**os.environ, "SURREAL_PASS": ROOT_PASS}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(STANDIN),
                "start",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--user",
                "root",
                "--log",
                "warn",
                f"surrealkv://{self.data_dir}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        wait_until(self._healthy, 30, f"SurrealDB stand-in on port {self.port}")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"stand-in exited: {self.log_path.read_text()[-2000:]}")
        return http_get(f"http://127.0.0.1:{self.port}/health")[0] == 200

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@dataclass
class NodeProcess:
    instance_id: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def node_env(
    instance_id: str, home: Path, surreal_url: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "INSTANCE_ID": instance_id,
        "CYNIC_HOME": str(home),
        "SURREAL_URL": surreal_url,
        "SURREAL_USER": "root",
        "SURREAL_PASS": ROOT_PASS,
        "SURREAL_NS": "cynic",
        "SURREAL_DB": "cynic",
        "OLLAMA_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
    }
    env.update(extra or {})
    return env


def read_journal(home: Path) -> list[dict[str, Any]]:
    path = home / "judgments.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]
