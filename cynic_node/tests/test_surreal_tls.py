"""SURREAL_CA_FILE: a wss:// SurrealDB whose certificate is verified against a given CA.

A real TLS WebSocket server in a thread (websockets, with a CA and a server certificate made
here with scripts/test_ca.py, for the IP address 127.0.0.1) that answers the few RPC calls a
connection makes (use, the DEFINE TABLE and the health check's query); the SurrealDB stand-in
with its own TLS serves a whole round trip when it supports --web-crt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cbor2
import pytest
from fastapi.testclient import TestClient
from websockets import Subprotocol
from websockets.asyncio.server import ServerConnection, serve

from cynic_node.api import create_app
from cynic_node.config import ConfigError, Settings, surreal_ssl_context
from cynic_node.store import JudgmentStore, StoreUnavailable, _Slot
from nodetest_helpers import REPO, ROOT_PASS, STANDIN, free_port, node_env, stop_process, wait_until


@dataclasses.dataclass(frozen=True)
class Pki:
    ca: Path  # the CA that signed the server certificates
    other_ca: Path  # an unrelated CA
    server: tuple[Path, Path]  # certificate and key for IP 127.0.0.1 and DNS localhost
    elsewhere: tuple[Path, Path]  # signed by `ca`, for IP 127.0.0.2 only


def _test_ca(outdir: Path, *certs: str) -> None:
    """scripts/test_ca.py, the test CA of the collection's tests and lab, run as the lab runs it."""
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "test_ca.py"), str(outdir), *certs],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d, other = tmp_path_factory.mktemp("pki"), tmp_path_factory.mktemp("other-pki")
    _test_ca(d, "server=127.0.0.1,localhost", "elsewhere=127.0.0.2")
    _test_ca(other)
    return Pki(
        ca=d / "ca.crt",
        other_ca=other / "ca.crt",
        server=(d / "server.crt", d / "server.key"),
        elsewhere=(d / "elsewhere.crt", d / "elsewhere.key"),
    )


@contextmanager
def rpc_server(cert: tuple[Path, Path] | None) -> Iterator[tuple[str, list[str]]]:
    """(URL, methods called) of a WebSocket RPC server in its own thread; TLS with cert."""
    context = None
    if cert is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*cert)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()
    calls: list[str] = []
    port = free_port()

    async def rpc(ws: ServerConnection) -> None:
        """Just enough SurrealDB RPC (CBOR) for a connection: every call succeeds."""
        async for message in ws:
            assert isinstance(message, bytes)  # the cbor subprotocol: binary frames
            request = cbor2.loads(message)
            calls.append(request["method"])
            ok = [{"status": "OK", "result": 1, "time": "1us"}]
            result = ok if request["method"] == "query" else None
            await ws.send(cbor2.dumps({"id": request["id"], "result": result}))

    async def main() -> None:
        async with serve(rpc, "127.0.0.1", port, ssl=context, subprotocols=[Subprotocol("cbor")]):
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield f"{'wss' if context else 'ws'}://127.0.0.1:{port}/rpc", calls
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def _settings(tmp_path: Path, url: str, ca_file: Path | str) -> Settings:
    return Settings(
        instance_id="tls",
        cynic_home=tmp_path / "home",
        surreal_url=url,
        surreal_ca_file=str(ca_file),
        ollama_url=f"http://127.0.0.1:{free_port()}",
        store_timeout_s=2.0,
    )


async def _connect_once(settings: Settings) -> None:
    slot = _Slot(settings, 0, surreal_ssl_context(settings.surreal_ca_file))
    try:
        await slot.get()
    finally:
        await slot.close()


def test_right_ca_connects(pki: Pki, tmp_path: Path) -> None:
    with rpc_server(pki.server) as (url, calls):
        settings = _settings(tmp_path, url, pki.ca)
        with TestClient(create_app(settings)) as client:
            health = client.get("/health")
        assert health.status_code == 200  # "degraded": no Ollama here
        assert health.json()["storage"]["surreal"] == "connected"
    assert "use" in calls
    assert "query" in calls


@pytest.mark.parametrize(
    ("which", "reason"),
    [
        ("other_ca", "unable to get local issuer certificate"),  # not signed by that CA
        ("system", "unable to get local issuer certificate"),  # empty: the system's store
        ("elsewhere", "IP address mismatch"),  # the right CA, for another address
    ],
)
def test_unverified_certificate_is_store_unavailable(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture, which: str, reason: str
) -> None:
    cert = pki.elsewhere if which == "elsewhere" else pki.server
    ca_files: dict[str, Path | str] = {"other_ca": pki.other_ca, "system": "", "elsewhere": pki.ca}
    ca_file = ca_files[which]
    caplog.set_level(logging.ERROR, logger="cynic_node.store")
    with rpc_server(cert) as (url, calls):
        settings = _settings(tmp_path, url, ca_file)
        with pytest.raises(StoreUnavailable, match="certificate verification failed") as err:
            asyncio.run(_connect_once(settings))
        assert reason in str(err.value)
        # Through the API: the same answers as an unreachable SurrealDB, never a 500.
        with TestClient(create_app(settings)) as client:
            health = client.get("/health")
            judge = client.post("/judge", json={"content": "over TLS"})
    assert calls == []  # no RPC call ever crossed the unverified connection
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"
    assert health.json()["storage"]["surreal"] == "disconnected"
    assert judge.status_code == 503
    assert int(judge.headers["retry-after"]) > 0
    failures = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert failures
    assert all("TLS certificate verification failed" in m and reason in m for m in failures)


def test_ca_file_is_not_used_for_ws(pki: Pki, tmp_path: Path) -> None:
    with rpc_server(None) as (url, calls):
        asyncio.run(_connect_once(_settings(tmp_path, url, pki.ca)))
    assert "use" in calls


@pytest.mark.parametrize("content", [None, b"", b"not a certificate\n", "dir"])
def test_unusable_ca_file_is_a_config_error(tmp_path: Path, content: bytes | str | None) -> None:
    path = tmp_path / "ca.pem"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    env = {"SURREAL_URL": "wss://127.0.0.1:8000/rpc", "SURREAL_CA_FILE": str(path)}
    with pytest.raises(ConfigError, match=f"SURREAL_CA_FILE '{path}' is not a readable PEM"):
        Settings.from_env(env)


def test_ca_file_is_read(pki: Pki) -> None:
    assert Settings.from_env({"SURREAL_CA_FILE": f" {pki.ca} "}).surreal_ca_file == str(pki.ca)
    assert Settings.from_env({}).surreal_ca_file == ""


def test_a_missing_ca_file_stops_the_node_at_start(tmp_path: Path) -> None:
    env = {"SURREAL_URL": "wss://127.0.0.1:8000/rpc", "SURREAL_CA_FILE": str(tmp_path / "nope")}
    done = subprocess.run(
        [sys.executable, "-m", "cynic_node"],
        env=node_env("tls", tmp_path, "mem://", env),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert b"SURREAL_CA_FILE" in done.stderr
    assert b"No such file" in done.stderr


def _standin_has_tls() -> bool:
    if not STANDIN.exists():
        return False
    done = subprocess.run(
        [sys.executable, str(STANDIN), "start", "--help"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return b"--web-crt" in done.stdout + done.stderr


def test_standin_over_tls_round_trip(pki: Pki, tmp_path: Path) -> None:
    """The stand-in's real engine behind TLS: sign in, use, write and read a judgment."""
    if not _standin_has_tls():
        pytest.skip("the SurrealDB stand-in has no --web-crt yet")
    port = free_port()
    log = (tmp_path / "surreal.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(STANDIN),
            "start",
            "--bind",
            f"127.0.0.1:{port}",
            "--user",
            "root",
            "--web-crt",
            str(pki.server[0]),
            "--web-key",
            str(pki.server[1]),
            "--log",
            "warn",
            "memory",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=node_env("surreal", tmp_path, "mem://"),  # SURREAL_PASS: the root password
    )
    log.close()
    try:
        wait_until(lambda: _https_health(port, pki.ca), 30, "the stand-in over TLS")
        settings = dataclasses.replace(
            _settings(tmp_path, f"wss://127.0.0.1:{port}/rpc", pki.ca),
            surreal_user="root",
            surreal_pass=ROOT_PASS,
        )

        async def round_trip() -> tuple[bool, dict[str, Any] | None]:
            store = JudgmentStore(settings)
            await store.start()
            try:
                _, created = await store.create_or_get("c0ffee", {"judgment_id": "j1"})
                return created, await store.get("c0ffee")
            finally:
                await store.close()

        created, stored = asyncio.run(round_trip())
        assert created is True
        assert stored is not None
        assert stored["judgment_id"] == "j1"
        # The wrong CA is refused by the same server.
        wrong = dataclasses.replace(settings, surreal_ca_file=str(pki.other_ca))
        with pytest.raises(StoreUnavailable, match="certificate verification failed"):
            asyncio.run(_connect_once(wrong))
    finally:
        stop_process(proc)


def _https_health(port: int, ca: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca))
    url = f"https://127.0.0.1:{port}/health"
    with urllib.request.urlopen(url, timeout=2, context=context) as resp:
        return bool(resp.status == 200)
