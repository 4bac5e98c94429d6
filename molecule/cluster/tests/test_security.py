"""Hardening, users, secrets, SurrealDB authentication, nginx's body limit and rate limiting."""
from __future__ import annotations

import json
import re

import pytest
from conftest import APP1, APP2, APPS, DATA, INSTANCES, LB, record, run_playbook, run_py, surreal_sql

testinfra_hosts = [f"ansible://{LB}"]

# unit -> (host, user of its main process)
UNITS = {
    "surrealdb.service": (DATA, "surrealdb"),
    "ollama.service": (DATA, "ollama"),
    **{f"cynic@{i}.service": (APP1, "cynic") for i in INSTANCES[APP1]},
    **{f"cynic@{i}.service@app2": (APP2, "cynic") for i in INSTANCES[APP2]},
    "nginx.service": (LB, "root"),  # the master: root by design, bounded (see below); workers www-data
}
# CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_SETGID, CAP_SETUID, CAP_NET_BIND_SERVICE
NGINX_MASTER_CAPS = (1 << 0) | (1 << 1) | (1 << 6) | (1 << 7) | (1 << 10)


def main_pid(host, unit: str) -> int:
    pid = int(host.check_output(f"systemctl show -p MainPID --value {unit}"))
    assert pid > 0, unit
    return pid


@pytest.mark.parametrize("key", sorted(UNITS))
def test_unit_exposure_is_ok_or_better(cluster, key):
    name = UNITS[key][0]
    unit = key.split("@app2")[0]
    out = cluster[name].check_output(f"systemd-analyze security --no-pager {unit}")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\S+)", out)
    assert match, out
    record(f"systemd-analyze {name} {unit}", f"{match.group(1)} {match.group(2)}")
    assert float(match.group(1)) <= 5.0, out


@pytest.mark.parametrize("key", sorted(UNITS))
def test_unit_runs_as_its_own_user(cluster, key):
    name, user = UNITS[key]
    unit = key.split("@app2")[0]
    host = cluster[name]
    pid = main_pid(host, unit)
    assert host.check_output(f"ps -o user= -p {pid}").strip() == user
    if unit == "nginx.service":
        workers = host.check_output(f"ps -o user= --ppid {pid}").split()
        assert workers and set(workers) == {"www-data"}, workers
        status = host.file(f"/proc/{pid}/status").content_string
        bounding = int(re.search(r"^CapBnd:\s+([0-9a-f]+)$", status, re.MULTILINE).group(1), 16)
        assert bounding == NGINX_MASTER_CAPS, hex(bounding)
        for worker in host.check_output(f"pgrep -P {pid}").split():
            worker_status = host.file(f"/proc/{worker}/status").content_string
            assert re.search(r"^CapEff:\s+0+$", worker_status, re.MULTILINE), worker_status


# unit -> (MemoryMax, TasksMax) of the roles' defaults: a size in bytes, or a share of the host's memory.
BOUNDS = {
    "surrealdb.service": ("50%", 1024),
    "ollama.service": ("75%", 512),
    "cynic@": (1 << 30, 256),
    "nginx.service": (512 << 20, 512),
}


@pytest.mark.parametrize("key", sorted(UNITS))
def test_unit_memory_and_tasks_are_bounded(cluster, key):
    name = UNITS[key][0]
    unit = key.split("@app2")[0]
    memory, tasks = BOUNDS["cynic@" if unit.startswith("cynic@") else unit]
    host = cluster[name]
    shown = dict(
        line.split("=", 1)
        for line in host.check_output(f"systemctl show -p MemoryMax -p TasksMax {unit}").splitlines()
    )
    record(f"bounds {name} {unit}", shown)
    assert int(shown["TasksMax"]) == tasks, shown
    if isinstance(memory, int):
        assert int(shown["MemoryMax"]) == memory, shown
    else:  # systemd turns N% into bytes of the host's physical memory
        total = int(re.search(r"^MemTotal:\s+(\d+) kB", host.file("/proc/meminfo").content_string, re.MULTILINE)
                    .group(1)) * 1024
        expected = total * int(memory.rstrip("%")) // 100
        assert abs(int(shown["MemoryMax"]) - expected) <= total // 100, (shown, expected)


def test_secret_is_in_no_process_list_journal_or_unit(cluster, secret):
    for name, host in cluster.items():
        assert secret not in host.check_output("ps -eo args"), name
        assert secret not in host.check_output("journalctl -o cat --no-pager"), name
        assert secret not in host.check_output("cat /etc/systemd/system/*.service"), name
    for name, path in ((DATA, "/etc/surrealdb/surrealdb.env"), (APP1, "/etc/cynic/cynic.env"), (APP2, "/etc/cynic/cynic.env")):
        env = cluster[name].file(path)
        assert (env.user, env.group, env.mode) == ("root", "root", 0o600), (name, path)
    assert secret not in cluster[DATA].check_output("systemctl show surrealdb.service")


def test_surrealdb_refuses_anonymous_and_wrong_password(cluster, secret):
    data = cluster[DATA]
    statement = "SELECT * FROM judgment LIMIT 1;"
    anonymous = surreal_sql(data, DATA, statement)[0]
    wrong = surreal_sql(data, DATA, statement, auth=("root", "not-the-password"))[0]
    right = surreal_sql(data, DATA, statement, auth=("root", secret))[0]
    record("surrealdb auth", {"anonymous": anonymous, "wrong_password": wrong, "right_password": right})
    assert anonymous in ("401", "403")
    assert wrong == "401"
    assert right == "200"
    # The RPC endpoint the instances use refuses an anonymous query too.
    status, body = surreal_sql(cluster[APP1], APP1, json.dumps(
        {"id": 1, "method": "query", "params": ["SELECT * FROM judgment LIMIT 1"]}), path="/rpc")
    assert "error" in body.lower() and "judgment_id" not in body, (status, body)


def test_the_instances_user_holds_only_the_cynic_database(cluster, app_secret):
    app = cluster[APP1]
    app_user = ("cynic", app_secret)
    status, body = surreal_sql(app, APP1, "SELECT count() FROM judgment GROUP ALL;", auth=app_user, database_user=True)
    assert status == "200" and json.loads(body)[-1]["status"] == "OK", body
    assert json.loads(body)[-1]["result"][0]["count"] > 0, body
    assert surreal_sql(app, APP1, "RETURN 1;", auth=("cynic", "not-the-password"), database_user=True)[0] == "401"
    refused = {}
    for statement in ("INFO FOR ROOT;", "INFO FOR NS;", "DEFINE USER intruder ON DATABASE PASSWORD 'x1' ROLES OWNER;",
                      "DEFINE USER intruder ON ROOT PASSWORD 'x1' ROLES OWNER;"):
        status, body = surreal_sql(app, APP1, statement, auth=app_user, database_user=True)
        refused[statement] = status if status != "200" else json.loads(body)[-1]["status"]
    record("surrealdb instances' user", refused)
    assert all(outcome != "OK" for outcome in refused.values()), refused


def test_the_root_password_reaches_no_app_host(cluster, secret, app_secret):
    """Files, process environments and journals of the app hosts (and the load balancer): the root password is in
    none of them; the instances' own password, searched the same way, is found where it belongs."""
    places = "/etc /opt /var /root /home /tmp /run /srv /usr/local"
    for name in (APP1, APP2, LB):
        host = cluster[name]
        files = host.run("grep -rlsF -e %s " + places, secret)
        assert files.rc == 1 and not files.stdout.strip(), (name, files.stdout)
        environ = host.run("cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -cF -e %s", secret)
        assert environ.stdout.strip() == "0", name
        assert secret not in host.check_output("journalctl -o cat --no-pager"), name
    for name in APPS:
        found = cluster[name].check_output("grep -rlsF -e %s " + places + " || true", app_secret).split()
        assert found == ["/etc/cynic/cynic.env"], (name, found)


def test_nginx_rejects_a_body_over_the_limit(host):
    answer = run_py(host, """
        import json, urllib.request, urllib.error
        body = json.dumps({"content": "x" * (2 * 1024 * 1024)}).encode()
        req = urllib.request.Request("http://127.0.0.1/judge", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                print(json.dumps({"status": r.status, "instance": r.headers.get("X-Instance-ID")}))
        except urllib.error.HTTPError as e:
            print(json.dumps({"status": e.code, "instance": e.headers.get("X-Instance-ID")}))
    """)
    assert answer == {"status": 413, "instance": None}, answer  # refused by nginx, no instance saw it


BURST = """
import json, threading, urllib.request, urllib.error
statuses = {}
lock = threading.Lock()
def one(n):
    req = urllib.request.Request("http://127.0.0.1/judge", method="POST",
        data=json.dumps({"content": "burst %d" % n}).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            code = r.status
    except urllib.error.HTTPError as e:
        code = e.code
    with lock:
        statuses[str(code)] = statuses.get(str(code), 0) + 1
threads = [threading.Thread(target=one, args=(n,)) for n in range(80)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(statuses))
"""


def test_rate_limit_answers_429_beyond_the_burst_and_switches_off(host):
    on = run_playbook("nginx_lb.yml", "-e", "nginx_lb_rate_limit=10r/s", "-e", "nginx_lb_rate_limit_burst=5")
    try:
        assert on.returncode == 0, on.stdout[-3000:]
        limited = run_py(host, BURST)
    finally:
        off = run_playbook("nginx_lb.yml")
    assert off.returncode == 0, off.stdout[-3000:]
    unlimited = run_py(host, BURST)
    record("rate limit burst of 80", {"on (10r/s burst 5)": limited, "off": unlimited})
    assert set(limited) == {"200", "429"} and limited["429"] >= 40, limited
    assert unlimited == {"200": 80}, unlimited
    assert "limit_req" not in host.file("/etc/nginx/nginx.conf").content_string


def test_rotating_both_passwords_from_the_inventory(host, cluster, secret, app_secret):
    """A new root password and a new instances' password in the inventory (extra vars here), converged: the new
    ones are in force, the old ones refused, judgments still stored; then back to the scenario's own (a second
    rotation, which leaves the cluster as the other tests expect it).

    Both converges run with -v and change the very tasks that handle the passwords: neither the old nor the new
    ones may show in their output. (Molecule's idempotence step proves a converge of the same inventory changes
    nothing; a third converge here only for its output cost 2.3 min of CI.)"""
    new_root, new_app = "rotated-root-" + secret[::-1], "rotated-app-" + app_secret[::-1]
    passwords = (secret, app_secret, new_root, new_app)
    rotated = run_playbook("playbooks/site.yml", "-v", "-e", json.dumps(
        {"surrealdb_root_password": new_root, "surrealdb_app_password": new_app}))
    try:
        assert rotated.returncode == 0, rotated.stdout[-4000:]
        assert [p for p in passwords if p in rotated.stdout] == []
        assert re.search(rf"^{APP1}\s+: ok=\d+\s+changed=[1-9]", rotated.stdout, re.MULTILINE), \
            rotated.stdout[-2000:]
        data, app = cluster[DATA], cluster[APP1]
        assert surreal_sql(data, DATA, "INFO FOR ROOT;", auth=("root", new_root))[0] == "200"
        assert surreal_sql(data, DATA, "INFO FOR ROOT;", auth=("root", secret))[0] == "401"
        assert surreal_sql(app, APP1, "RETURN 1;", auth=("cynic", new_app), database_user=True)[0] == "200"
        assert surreal_sql(app, APP1, "RETURN 1;", auth=("cynic", app_secret), database_user=True)[0] == "401"
        # The instances were restarted with the new password: judgments are stored again on every host.
        answers = run_py(host, """
            import json, urllib.request, uuid
            out = []
            for i in range(12):
                req = urllib.request.Request("http://127.0.0.1/judge", method="POST",
                    data=json.dumps({"content": "after rotation %d %s" % (i, uuid.uuid4().hex)}).encode(),
                    headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=10) as r:
                    out.append(json.loads(r.read())["judgment_id"])
            print(json.dumps(out))
        """)
        ids = ", ".join(f"'{i}'" for i in answers)
        status, body = surreal_sql(data, DATA, f"SELECT count() FROM judgment WHERE judgment_id IN [{ids}] GROUP ALL;",
                                   auth=("root", new_root))
        assert status == "200" and json.loads(body)[-1]["result"][0]["count"] == len(answers), body
    finally:
        back = run_playbook("playbooks/site.yml", "-v")
    assert back.returncode == 0, back.stdout[-4000:]
    assert [p for p in passwords if p in back.stdout] == []
    assert surreal_sql(cluster[DATA], DATA, "INFO FOR ROOT;", auth=("root", secret))[0] == "200"
    assert surreal_sql(cluster[APP1], APP1, "RETURN 1;", auth=("cynic", app_secret), database_user=True)[0] == "200"
