"""Tests of the TEST STAND-IN `surreal` (tests/standins/surreal/surreal).

Each server runs as a real subprocess on a free port with a temporary surrealkv path, the way
the roles run the official binary. Run: .venv/bin/python -m pytest tests/standins/surreal
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from surrealdb import AlreadyExistsError, AsyncSurreal, RecordID

HERE = Path(__file__).resolve().parent
SURREAL = HERE / "surreal"
PASSWORD = (
    "Pw-9f3c'\"unique-secret"  # distinctive, with quotes, so leaks and escaping show up
)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> int:
        """SIGTERM, as systemd stops the service; returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=15)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    tmp: Path,
    path: str,
    password: str | None = PASSWORD,
    *,
    python_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Server:
    port = free_port()
    log = tmp / f"server-{port}.log"
    environ = {**os.environ, **(env or {})}
    if (
        password is not None
    ):  # as the role's EnvironmentFile does: never on the command line
        environ.update(SURREAL_USER="root", SURREAL_PASS=password)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                *python_args,
                str(SURREAL),
                "start",
                "--bind",
                f"127.0.0.1:{port}",
                "--log",
                "info",
                path,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environ,
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"server exited with {proc.returncode}:\n{server.output()}"
            )
        try:
            if http(server.url + "/health")[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"server not healthy in time:\n{server.output()}")


def http(
    url: str, body: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=None if body is None else body.encode(), headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def sql(server: Server, query: str, password: str | None = PASSWORD) -> tuple[int, Any]:
    headers = {
        "Accept": "application/json",
        "Surreal-NS": "cynic",
        "Surreal-DB": "cynic",
    }
    if password is not None:
        headers["Authorization"] = (
            "Basic " + base64.b64encode(f"root:{password}".encode()).decode()
        )
    status, text = http(server.url + "/sql", query, headers)
    return status, json.loads(text) if text.startswith(("[", "{")) else text


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("surreal")
    srv = start(tmp, f"surrealkv://{tmp}/data")
    yield srv
    assert srv.stop() == 0, srv.output()
    assert PASSWORD not in srv.output()


def test_status_health_version(server: Server) -> None:
    assert http(server.url + "/status")[0] == 200
    assert http(server.url + "/health")[0] == 200
    status, text = http(server.url + "/version")
    assert status == 200 and text.startswith("surrealdb-")


def test_is_ready(server: Server) -> None:
    for command in ("is-ready", "isready"):
        ready = subprocess.run(
            [sys.executable, str(SURREAL), command, "--endpoint", server.url],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
        assert (ready.returncode, ready.stdout.strip()) == (0, "OK")
    down = subprocess.run(
        [
            sys.executable,
            str(SURREAL),
            "is-ready",
            "--conn",
            f"http://127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    assert down.returncode == 1 and "OK" not in down.stdout


def test_version_cli() -> None:
    out = subprocess.run(
        [str(SURREAL), "version"],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    assert out.returncode == 0 and " for linux on " in out.stdout
    helptext = subprocess.run(
        [str(SURREAL), "--help"],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    ).stdout
    assert "TEST STAND-IN" in helptext


def test_sql_needs_the_root_password(server: Server) -> None:
    status, results = sql(server, "CREATE sqltest:one SET n = 1; SELECT * FROM sqltest")
    assert status == 200
    assert [r["status"] for r in results] == ["OK", "OK"]
    assert results[1]["result"] == [{"id": "sqltest:one", "n": 1}]
    assert sql(server, "SELECT * FROM sqltest", password="wrong")[0] == 401
    status, body = sql(
        server, "SELECT * FROM sqltest", password=None
    )  # anonymous: no rights
    assert status == 403, body


def test_unique_index_rejects_duplicate(server: Server) -> None:
    status, results = sql(
        server,
        "DEFINE INDEX uniq_hash ON uq FIELDS hash UNIQUE; "
        "CREATE uq SET hash = 'h1'; CREATE uq SET hash = 'h1'; SELECT * FROM uq",
    )
    assert status == 200
    assert [r["status"] for r in results] == ["OK", "OK", "ERR", "OK"]
    assert len(results[3]["result"]) == 1


@pytest.mark.parametrize("scheme", ["ws", "http"])
def test_official_sdk(server: Server, scheme: str) -> None:
    url = server.url.replace("http", scheme, 1) + ("/rpc" if scheme == "ws" else "")
    table = f"judgment_{scheme}"

    async def scenario() -> None:
        async with AsyncSurreal(url) as db:
            with pytest.raises(Exception, match="authentication"):
                await db.signin({"username": "root", "password": "wrong"})
            await db.signin({"username": "root", "password": PASSWORD})
            await db.use("cynic", "cynic")
            created = await db.create(RecordID(table, "abc"), {"verdict": "ok"})
            assert isinstance(created, dict) and created["verdict"] == "ok"
            with pytest.raises(AlreadyExistsError):
                await db.create(RecordID(table, "abc"), {"verdict": "again"})
            assert await db.select(RecordID(table, "abc")) == [
                {"id": RecordID(table, "abc"), "verdict": "ok"}
            ]
            assert await db.query(f"SELECT count() FROM {table} GROUP ALL") == [
                {"count": 1}
            ]

    asyncio.run(scenario())


def test_connections_keep_their_own_namespace_and_auth(server: Server) -> None:
    """Two WebSocket connections in JSON mode: one signed in, one anonymous, different ns/db."""

    async def scenario() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(server.url + "/rpc", protocols=("json",)) as a,
            session.ws_connect(server.url + "/rpc", protocols=("json",)) as b,
        ):

            async def call(
                ws: aiohttp.ClientWebSocketResponse, method: str, *params: Any
            ) -> Any:
                await ws.send_str(
                    json.dumps({"id": 1, "method": method, "params": list(params)})
                )
                return json.loads((await ws.receive()).data)

            assert "result" in await call(
                a, "signin", {"user": "root", "pass": PASSWORD}
            )
            await call(a, "use", "ns_a", "db_a")
            await call(b, "use", "ns_b", "db_b")
            assert (await call(a, "create", "conn:one", {"v": 1}))["result"] == {
                "id": "conn:one",
                "v": 1,
            }
            assert (await call(b, "select", "conn:one"))["error"][
                "kind"
            ] == "NotAllowed"
            assert (await call(a, "query", "RETURN session::ns()", {}))["result"][0][
                "result"
            ] == "ns_a"

    asyncio.run(scenario())


def test_restart_keeps_data_and_root_user(tmp_path: Path) -> None:
    path = f"surrealkv://{tmp_path}/data"
    first = start(tmp_path, path)
    assert sql(first, "CREATE keep:one SET v = 42")[0] == 200
    assert first.stop() == 0, first.output()
    # A second start with other credentials must not replace the existing root user.
    second = start(tmp_path, path, password="another-password")
    try:
        status, results = sql(second, "SELECT * FROM keep:one")
        assert status == 200 and results[0]["result"] == [{"id": "keep:one", "v": 42}]
        assert sql(second, "RETURN 1", password="another-password")[0] == 401
    finally:
        assert second.stop() == 0, second.output()
    for srv in (first, second):
        assert "TEST STAND-IN" in srv.output()
        assert PASSWORD not in srv.output() and "another-password" not in srv.output()


def load_script() -> Any:
    """The stand-in script as a module (it has no .py suffix), for its pure functions."""
    loader = importlib.machinery.SourceFileLoader("surreal_standin", str(SURREAL))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("path", "sync_data", "url"),
    [
        ("surrealkv:///d/data", None, "surrealkv:///d/data?sync=never"),
        ("surrealkv:///d/data", "false", "surrealkv:///d/data?sync=never"),
        ("surrealkv:///d/data", "true", "surrealkv:///d/data?sync=every"),
        ("rocksdb:///d/data", "1", "surrealkv:///d/data?sync=every"),
        ("surrealkv:///d/data?versioned=true", None, "surrealkv:///d/data?versioned=true&sync=never"),
        ("surrealkv:///d/data?sync=5s", "true", "surrealkv:///d/data?sync=5s"),
        ("memory", "true", "mem://"),
    ],
)
def test_disk_sync_follows_surreal_sync_data(
    monkeypatch: pytest.MonkeyPatch, path: str, sync_data: str | None, url: str
) -> None:
    """As `surreal start` 2.x: no fsync per commit unless SURREAL_SYNC_DATA is true. The
    engine's own default (fsync at every commit) put every disk stall on every write."""
    if sync_data is None:
        monkeypatch.delenv("SURREAL_SYNC_DATA", raising=False)
    else:
        monkeypatch.setenv("SURREAL_SYNC_DATA", sync_data)
    assert load_script().engine_url(path) == url


def test_reexecs_with_cynic_standin_python(tmp_path: Path) -> None:
    """`python -S` cannot import the engine (no site-packages): the script must re-exec."""
    srv = start(
        tmp_path,
        "memory",
        python_args=("-S",),
        env={"CYNIC_STANDIN_PYTHON": sys.executable},
    )
    assert srv.stop() == 0
    if not os.path.exists("/opt/cynic-standins/venv/bin/python3"):
        env = {k: v for k, v in os.environ.items() if k != "CYNIC_STANDIN_PYTHON"}
        failed = subprocess.run(
            [sys.executable, "-S", str(SURREAL), "start", "memory"],
            env=env,
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
        assert failed.returncode != 0 and "CYNIC_STANDIN_PYTHON" in failed.stderr


def test_package_is_deterministic(tmp_path: Path) -> None:
    digests = []
    for run in ("a", "b"):
        subprocess.run(
            ["bash", str(HERE / "package.sh"), str(tmp_path / run), "2.3.7"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        tgz = tmp_path / run / "surreal-v2.3.7.linux-amd64.tgz"
        txt = tmp_path / run / "surreal-v2.3.7.linux-amd64.txt"
        digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
        assert txt.read_text() == digest + "\n"
        digests.append(digest)
    assert digests[0] == digests[1]
    with tarfile.open(tmp_path / "a" / "surreal-v2.3.7.linux-amd64.tgz") as archive:
        [member] = archive.getmembers()
        assert (member.name, member.mode, member.uid, member.gid) == (
            "surreal",
            0o755,
            0,
            0,
        )
        # Extraction filters (PEP 706) came in 3.11.4; Debian 12's stock Python 3.11.2 has none.
        safe = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
        archive.extract(member, tmp_path / "x", **safe)
    out = subprocess.run(
        [str(tmp_path / "x" / "surreal"), "version"],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    assert out.stdout.startswith("2.3.7 for linux on ")
