"""SurrealDB as the surrealdb role leaves it (stand-in binary, real engine, real systemd)."""
from __future__ import annotations

import json
import uuid

import pytest

URL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def creds(hostvars):
    return hostvars.get("surrealdb_root_user", "root"), hostvars["surrealdb_root_password"]


def sql(host, query: str, user: str, password: str) -> tuple[int, object]:
    """POST /sql from inside the container; returns (http status, parsed body)."""
    cmd = host.run(
        "curl -s -o /tmp/sql.out -w '%%{http_code}' -u %s -H 'Accept: application/json' "
        "-H 'Surreal-NS: cynic' -H 'Surreal-DB: cynic' --data-binary %s %s/sql",
        f"{user}:{password}", query, URL,
    )
    body = host.file("/tmp/sql.out").content_string
    try:
        return int(cmd.stdout), json.loads(body)
    except ValueError:
        return int(cmd.stdout or 0), body


def test_unit_active_enabled_as_own_user(host):
    svc = host.service("surrealdb")
    assert svc.is_running
    assert svc.is_enabled
    pid = host.check_output("systemctl show -p MainPID --value surrealdb")
    assert host.check_output(f"ps -o user= -p {pid}").strip() == "surrealdb"


def test_listens_only_where_configured(host):
    assert host.socket("tcp://127.0.0.1:8000").is_listening
    assert not host.socket("tcp://0.0.0.0:8000").is_listening


def test_health(host):
    assert host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {URL}/health") == "200"


def test_secrets_kept_out_of_unit_and_command_line(host, creds):
    env = host.file("/etc/surrealdb/surrealdb.env")
    assert env.mode == 0o600 and env.user == "root"
    assert creds[1] not in host.file("/etc/systemd/system/surrealdb.service").content_string
    assert creds[1] not in host.check_output("ps -eo args")


def test_schema_exists(host, creds):
    status, body = sql(host, "INFO FOR TABLE judgment;", *creds)
    assert status == 200, body
    assert body[-1]["status"] == "OK", body
    assert "judgment_cell_id" in body[-1]["result"]["indexes"]


def test_one_record_per_cell(host, creds):
    cell = uuid.uuid4().hex
    q = f"CREATE judgment:`{cell}` SET cell_id = '{cell}';"
    assert sql(host, q, *creds)[1][-1]["status"] == "OK"
    assert sql(host, q, *creds)[1][-1]["status"] == "ERR"


def test_record_survives_restart(host, creds):
    cell = uuid.uuid4().hex
    status, body = sql(host, f"CREATE judgment:`{cell}` SET cell_id = '{cell}', q = 42;", *creds)
    assert status == 200 and body[-1]["status"] == "OK", body
    host.run_expect([0], "systemctl restart surrealdb")
    host.run_expect([0], f"surreal is-ready --endpoint {URL} || (sleep 2; surreal is-ready --endpoint {URL})")
    for _attempt in range(30):
        if host.run(f"curl -sf {URL}/health").rc == 0:
            break
        host.run("sleep 1")
    status, body = sql(host, f"SELECT * FROM judgment:`{cell}`;", *creds)
    assert status == 200 and body[-1]["result"][0]["q"] == 42, body


def test_wrong_password_refused(host, creds):
    status, body = sql(host, "INFO FOR TABLE judgment;", creds[0], creds[1] + "-wrong")
    assert status in (401, 403) or body[-1]["status"] == "ERR", body
