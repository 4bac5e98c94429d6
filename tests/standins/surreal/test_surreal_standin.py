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
import ssl
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
TEST_CA = HERE.parents[2] / "scripts" / "test_ca.py"
PASSWORD = "Pw-9f3c'\"unique-secret"  # distinctive, with quotes, so leaks and escaping show up
APP_PASSWORD = "App-4d1b'\\secret"  # the database user's; a quote and a backslash to escape
DB_AUTH = {"Surreal-Auth-NS": "cynic", "Surreal-Auth-DB": "cynic"}


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    context: ssl.SSLContext | None = None  # https: trusts the test CA

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
    args: tuple[str, ...] = (),
    ca: Path | None = None,
) -> Server:
    """A stand-in on a free port; with `ca`, it was given a certificate (in env or args) and is
    reached over https, trusting that CA."""
    port = free_port()
    log = tmp / f"server-{port}.log"
    environ = {**os.environ, **(env or {})}
    if password is not None:  # as the role's EnvironmentFile does: never on the command line
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
                *args,
                path,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environ,
        )
    context = None if ca is None else ssl.create_default_context(cafile=str(ca))
    scheme = "http" if ca is None else "https"
    server = Server(f"{scheme}://127.0.0.1:{port}", proc, log, context)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{server.output()}")
        try:
            if http(server.url + "/health", context=context)[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"server not healthy in time:\n{server.output()}")


def http(
    url: str,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, str]:
    request = urllib.request.Request(url, data=None if body is None else body.encode(), headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def sql(
    server: Server,
    query: str,
    password: str | None = PASSWORD,
    *,
    user: str = "root",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """POST /sql with Basic auth (none if password is None), in namespace and database cynic
    unless `headers` say otherwise."""
    headers = {
        "Accept": "application/json",
        "Surreal-NS": "cynic",
        "Surreal-DB": "cynic",
        **(headers or {}),
    }
    if password is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    status, text = http(server.url + "/sql", query, headers, server.context)
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
    status, body = sql(server, "SELECT * FROM sqltest", password=None)  # anonymous: no rights
    assert status == 403, body


def test_unique_index_rejects_duplicate(server: Server) -> None:
    status, results = sql(
        server,
        "DEFINE INDEX uniq_hash ON uq FIELDS hash UNIQUE; CREATE uq SET hash = 'h1'; CREATE uq SET hash = 'h1'; SELECT * FROM uq",
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
            assert await db.select(RecordID(table, "abc")) == [{"id": RecordID(table, "abc"), "verdict": "ok"}]
            assert await db.query(f"SELECT count() FROM {table} GROUP ALL") == [{"count": 1}]

    asyncio.run(scenario())


def test_connections_keep_their_own_namespace_and_auth(server: Server) -> None:
    """Two WebSocket connections in JSON mode: one signed in, one anonymous, different ns/db."""

    async def scenario() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(server.url + "/rpc", protocols=("json",)) as a,
            session.ws_connect(server.url + "/rpc", protocols=("json",)) as b,
        ):

            async def call(ws: aiohttp.ClientWebSocketResponse, method: str, *params: Any) -> Any:
                await ws.send_str(json.dumps({"id": 1, "method": method, "params": list(params)}))
                return json.loads((await ws.receive()).data)

            assert "result" in await call(a, "signin", {"user": "root", "pass": PASSWORD})
            await call(a, "use", "ns_a", "db_a")
            await call(b, "use", "ns_b", "db_b")
            assert (await call(a, "create", "conn:one", {"v": 1}))["result"] == {
                "id": "conn:one",
                "v": 1,
            }
            assert (await call(b, "select", "conn:one"))["error"]["kind"] == "NotAllowed"
            assert (await call(a, "query", "RETURN session::ns()", {}))["result"][0]["result"] == "ns_a"

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
def test_disk_sync_follows_surreal_sync_data(monkeypatch: pytest.MonkeyPatch, path: str, sync_data: str | None, url: str) -> None:
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
        safe: dict[str, Any] = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
        archive.extract(member, tmp_path / "x", **safe)
    out = subprocess.run(
        [str(tmp_path / "x" / "surreal"), "version"],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    assert out.stdout.startswith("2.3.7 for linux on ")


# --------------------------------------------------------------------------- database users
def surql_string(text: str) -> str:
    """A SurrealQL string literal: the embedded engine refuses `PASSWORD $p`, so it is inlined."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def results_ok(status: int, results: Any) -> bool:
    return status == 200 and all(r["status"] == "OK" for r in results)


@pytest.fixture(scope="module")
def app_user(server: Server) -> str:
    """The app instances' user, defined by root the way the collection does it."""
    status, results = sql(
        server,
        f"USE NS cynic DB cynic; DEFINE USER OVERWRITE cynic ON DATABASE PASSWORD {surql_string(APP_PASSWORD)} ROLES EDITOR;",
    )
    assert results_ok(status, results), results
    return "cynic"


def test_database_user_basic_auth(server: Server, app_user: str) -> None:
    """As SurrealDB 2.x/3.x: Basic credentials are checked at the level that Surreal-Auth-NS and
    Surreal-Auth-DB name (none: root); Surreal-NS/Surreal-DB only select the database."""
    status, results = sql(
        server,
        "RETURN [session::ns(), session::db()]; CREATE judgment:basic SET v = 1; SELECT * FROM judgment:basic",
        APP_PASSWORD,
        user=app_user,
        headers=DB_AUTH,
    )
    assert results_ok(status, results), results
    assert results[0]["result"] == ["cynic", "cynic"]
    assert results[2]["result"] == [{"id": "judgment:basic", "v": 1}]
    # No fallback from root to namespace to database users (that was 1.x): each is 401.
    for user, password, headers in [
        (app_user, "wrong", DB_AUTH),
        (app_user, APP_PASSWORD, {}),  # Surreal-NS/DB alone: a root sign-in
        (app_user, APP_PASSWORD, {"Surreal-Auth-NS": "cynic"}),  # a namespace sign-in
        (app_user, APP_PASSWORD, {"Surreal-Auth-DB": "cynic"}),  # a database without namespace
        ("root", PASSWORD, DB_AUTH),  # root is no database user
    ]:
        status, body = sql(server, "RETURN 1", password, user=user, headers=headers)
        assert status == 401, (user, headers, body)


@pytest.mark.parametrize("scheme", ["ws", "http"])
def test_database_user_over_the_official_sdk(server: Server, app_user: str, scheme: str) -> None:
    url = server.url.replace("http", scheme, 1) + ("/rpc" if scheme == "ws" else "")
    credentials = {"namespace": "cynic", "database": "cynic", "username": app_user}

    async def scenario() -> None:
        async with AsyncSurreal(url) as db:
            with pytest.raises(Exception, match="authentication"):
                await db.signin({**credentials, "password": "wrong"})
            await db.signin({**credentials, "password": APP_PASSWORD})
            # The sign-in selects its namespace and database: no use() needed.
            assert await db.query("RETURN session::db()") == "cynic"
            await db.create(RecordID("judgment", f"sdk_{scheme}"), {"verdict": "ok"})
            assert await db.select(RecordID("judgment", f"sdk_{scheme}")) == [{"id": RecordID("judgment", f"sdk_{scheme}"), "verdict": "ok"}]

    asyncio.run(scenario())


def test_database_user_has_least_privilege(server: Server, app_user: str) -> None:
    status, results = sql(server, "CREATE secret:one SET v = 1", headers={"Surreal-DB": "other"})
    assert results_ok(status, results), results

    def as_app(query: str, **headers: str) -> list[dict[str, Any]]:
        status, results = sql(server, query, APP_PASSWORD, user=app_user, headers={**DB_AUTH, **headers})
        assert status == 200, results
        return list(results)

    for statement in (
        "DEFINE USER sneaky ON DATABASE PASSWORD 'x' ROLES OWNER",
        f"DEFINE USER OVERWRITE {app_user} ON DATABASE PASSWORD 'x' ROLES OWNER",
        "INFO FOR ROOT",
        "INFO FOR NS",
    ):
        [result] = as_app(statement)
        assert (result["status"], result["kind"]) == ("ERR", "NotAllowed"), statement
    # Another database of the namespace: nothing to see, nothing written.
    assert as_app("SELECT * FROM secret", **{"Surreal-DB": "other"})[0]["result"] == []
    moved = as_app("USE DB other; SELECT * FROM secret; CREATE secret:two SET v = 2")
    assert [r["result"] for r in moved[1:]] == [[], []]
    status, results = sql(server, "SELECT * FROM secret", headers={"Surreal-DB": "other"})
    assert results[0]["result"] == [{"id": "secret:one", "v": 1}]
    # (Not INFO FOR DB: the embedded engine fails it once a table's name starts with "sq".)
    status, results = sql(server, f"INFO FOR USER {app_user} ON DATABASE; INFO FOR USER sneaky ON DATABASE")
    assert status == 200 and "ROLES EDITOR" in results[0]["result"], results
    assert results[1]["status"] == "ERR" and "sneaky" in results[1]["result"], results


def test_root_password_rotation_survives_restarts(tmp_path: Path) -> None:
    """The root user comes from SURREAL_USER/SURREAL_PASS on the first start only: a rotated
    password stays, whichever SURREAL_PASS later starts carry."""
    path, new = f"surrealkv://{tmp_path}/data", "Rotated-77'e0c-secret"
    first = start(tmp_path, path)
    try:
        status, results = sql(
            first,
            f"DEFINE USER OVERWRITE root ON ROOT PASSWORD {surql_string(new)} ROLES OWNER;",
        )
        assert results_ok(status, results), results
        assert sql(first, "RETURN 1", new)[0] == 200
        assert sql(first, "RETURN 1")[0] == 401
    finally:
        assert first.stop() == 0, first.output()
    for env_password in (new, PASSWORD):  # the role's new EnvironmentFile, then the old one
        again = start(tmp_path, path, password=env_password)
        try:
            assert sql(again, "RETURN 1", new)[0] == 200
            assert sql(again, "RETURN 1", PASSWORD)[0] == 401
        finally:
            assert again.stop() == 0, again.output()
        assert "existing root users were found" in again.output()
        assert new not in again.output() and PASSWORD not in again.output()


# --------------------------------------------------------------------------- TLS
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA and a certificate for 127.0.0.1, ::1 and localhost, from scripts/test_ca.py."""
    out = tmp_path_factory.mktemp("pki")
    subprocess.run(
        [sys.executable, str(TEST_CA), str(out), "surreal=127.0.0.1,::1,localhost"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("surreal-tls")
    tls_env = {
        "SURREAL_WEB_CRT": str(pki / "surreal.crt"),
        "SURREAL_WEB_KEY": str(pki / "surreal.key"),
    }
    srv = start(tmp, f"surrealkv://{tmp}/data", env=tls_env, ca=pki / "ca.crt")
    yield srv
    assert srv.stop() == 0, srv.output()


def test_tls_serves_only_https(tls_server: Server, pki: Path) -> None:
    assert tls_server.url.startswith("https://")
    status, results = sql(tls_server, "RETURN 1")
    assert (status, results[0]["result"]) == (200, 1)
    by_name = tls_server.url.replace("127.0.0.1", "localhost")
    assert http(by_name + "/health", context=tls_server.context)[0] == 200
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        http(tls_server.url + "/health", context=ssl.create_default_context())
    with pytest.raises(OSError):  # plain HTTP on the same port: no answer
        http(tls_server.url.replace("https", "http", 1) + "/health")
    # TLS 1.2 is accepted (the minimum, as rustls).
    tls12 = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    port = int(tls_server.url.rsplit(":", 1)[1])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        tls12.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() == "TLSv1.2"


def test_tls_context_refuses_below_tls_1_2(pki: Path) -> None:
    context = load_script().tls_context(str(pki / "surreal.crt"), str(pki / "surreal.key"))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_official_sdk_over_wss(tls_server: Server, pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki / "ca.crt"))  # the SDK's default context
    url = tls_server.url.replace("https", "wss", 1) + "/rpc"

    async def scenario() -> None:
        async with AsyncSurreal(url) as db:
            await db.signin({"username": "root", "password": PASSWORD})
            await db.use("cynic", "cynic")
            await db.create(RecordID("judgment", "wss"), {"verdict": "ok"})
            assert await db.select(RecordID("judgment", "wss")) == [{"id": RecordID("judgment", "wss"), "verdict": "ok"}]

    asyncio.run(scenario())


def test_is_ready_over_tls_trusts_ssl_cert_file(tls_server: Server, pki: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    for endpoint in (tls_server.url, tls_server.url.replace("https", "wss", 1) + "/rpc"):
        for trust, expected in (({"SSL_CERT_FILE": str(pki / "ca.crt")}, 0), ({}, 1)):
            ready = subprocess.run(
                [sys.executable, str(SURREAL), "is-ready", "--endpoint", endpoint],
                capture_output=True,
                text=True,
                timeout=15,
                check=False,
                env={**env, **trust},
            )
            assert ready.returncode == expected, (endpoint, trust, ready.stderr)
            assert (ready.stdout.strip() == "OK") == (expected == 0)


def test_tls_flags_as_the_real_server(tmp_path: Path, pki: Path) -> None:
    crt, key = str(pki / "surreal.crt"), str(pki / "surreal.key")
    srv = start(tmp_path, "memory", args=("--web-crt", crt, "--web-key", key), ca=pki / "ca.crt")
    assert srv.stop() == 0, srv.output()
    for args, env, code, message in [
        (("--web-crt", crt), {}, 2, "--web-key <WEB_KEY>"),
        ((), {"SURREAL_WEB_KEY": key}, 2, "--web-crt <WEB_CRT>"),
        (("--web-crt", str(tmp_path / "nope.crt"), "--web-key", key), {}, 2, "Ensure the path exists"),
        (("--web-crt", crt, "--web-key", str(tmp_path)), {}, 2, "Ensure the path is a file"),
        (("--web-crt", crt, "--web-key", str(pki / "ca.key")), {}, 1, "cannot use --web-crt"),
    ]:
        failed = subprocess.run(
            [sys.executable, str(SURREAL), "start", "--bind", f"127.0.0.1:{free_port()}", *args, "memory"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, **env},
        )
        assert (failed.returncode, message in failed.stderr) == (code, True), failed.stderr
