"""Helpers for the node's tests: processes on free ports, waiting, reading the journal.

In-process tests use the SDK's embedded engine (mem://): the same AsyncSurreal API and the same
SurrealDB engine as a server, without a socket. Integration tests start the SurrealDB stand-in
(tests/standins/surreal/surreal, the real engine behind the server's /rpc WebSocket) and node
processes through the `cynic-node` entry point, on free loopback ports.
"""

from __future__ import annotations

import asyncio
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

    def kill(self) -> None:
        """SIGKILL: no flush, no close frames; the kernel resets its sockets."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


async def root_query(server: SurrealServer, sql: str, params: dict[str, Any] | None = None) -> Any:
    """sql as root on cynic/cynic, on a connection of its own (straight to the stand-in)."""
    from surrealdb import AsyncSurreal

    db = AsyncSurreal(server.ws_url)
    await db.connect(server.ws_url)
    try:
        await db.signin({"username": "root", "password": ROOT_PASS})
        await db.use("cynic", "cynic")
        return await db.query(sql, params or {})
    finally:
        await db.close()


class HoldingProxy:
    """A TCP relay on a free loopback port in front of `upstream_port`, in the test's event loop.

    hold_answers drops what the server sends (its answers never arrive), hold_requests drops
    what clients send (their calls never reach the server): a client then has calls in flight
    whose outcome it cannot know. When the server side closes, the client side is closed too,
    as a dying server's would be.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.hold_answers = False
        self.hold_requests = False
        self.dropped_requests = 0  # chunks dropped while holding requests
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_w}

        async def pump(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, requests: bool
        ) -> None:
            try:
                while data := await src.read(65536):
                    if requests and self.hold_requests:
                        self.dropped_requests += 1
                        continue
                    if not requests and self.hold_answers:
                        continue
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                writer.close()
                up_w.close()
                self._writers.discard(writer)
                self._writers.discard(up_w)

        await asyncio.gather(pump(reader, up_w, True), pump(up_r, writer, False))


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


OLLAMA_STANDIN = REPO / "tests/standins/ollama/bin/ollama"


@dataclass
class OllamaStandin:
    """The Ollama stand-in (`ollama serve`) on a free port, models kept in models_dir so that
    a restart on the same port serves the model pulled before."""

    models_dir: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    model: str = "gemma2:2b"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "OLLAMA_HOST": f"127.0.0.1:{self.port}",
            "OLLAMA_MODELS": str(self.models_dir),
            **self.env,
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(OLLAMA_STANDIN), "serve"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_until(lambda: http_get(f"{self.url}/api/tags")[0] == 200, 30, "ollama stand-in")
        pull = urllib.request.Request(  # noqa: S310 (loopback)
            f"{self.url}/api/pull",
            data=json.dumps({"model": self.model, "stream": False}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(pull, timeout=30) as resp:  # noqa: S310 (loopback)
            assert json.loads(resp.read())["status"] == "success"

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")
