"""Fixtures: in-process apps on an embedded store, and real processes for integration.

In-process tests use the SDK's embedded engine (mem://): the same AsyncSurreal API and the same
SurrealDB engine as a server, without a socket. Integration tests start the SurrealDB stand-in
(tests/standins/surreal/surreal, the real engine behind the server's /rpc WebSocket) and node
processes through the `cynic-node` entry point, on free loopback ports.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

# The source tree, for runs whose rootdir is not cynic_node/ (pyproject's pythonpath unused).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cynic_node.api import create_app
from cynic_node.config import Settings
from nodetest_helpers import (
    STANDIN,
    NodeProcess,
    SurrealServer,
    free_port,
    http_get,
    node_env,
    stop_process,
    wait_until,
)


@pytest.fixture
def surreal(tmp_path: Path) -> Iterator[SurrealServer]:
    if not STANDIN.exists():
        pytest.skip(f"SurrealDB stand-in not found at {STANDIN}")
    server = SurrealServer(data_dir=tmp_path / "surreal-data", log_path=tmp_path / "surreal.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """Start `python -m cynic_node` (the console entry point) processes; stop them at the end."""
    started: list[NodeProcess] = []

    def start(
        instance_id: str,
        surreal_url: str,
        home: Path,
        extra_env: dict[str, str] | None = None,
        wait_healthy: bool = True,
    ) -> NodeProcess:
        port = free_port()
        log_path = tmp_path / f"{instance_id}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cynic_node", "--port", str(port), "--log-level", "info"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=node_env(instance_id, home, surreal_url, extra_env),
            )
        node = NodeProcess(instance_id, port, proc, log_path)
        started.append(node)

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"node exited: {log_path.read_text()[-3000:]}")
            code = http_get(f"{node.url}/health")[0]
            return code == 200 if wait_healthy else code in (200, 503)

        wait_until(up, 30, f"node {instance_id}")
        return node

    yield start
    for node in started:
        stop_process(node.proc)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        instance_id="node-test",
        cynic_home=tmp_path / "home",
        surreal_url="mem://",
        ollama_url=f"http://127.0.0.1:{free_port()}",
        max_body_bytes=64 * 1024,
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    # A loopback peer (TestClient's default, "testclient", is no address): CYNIC_METRICS_ALLOW's
    # default lets it read /metrics, as it lets a scraper on the node's host.
    with TestClient(app, raise_server_exceptions=False, client=("127.0.0.1", 50000)) as c:
        yield c
