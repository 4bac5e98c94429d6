"""The cluster across four hosts: every unit where it belongs, cross-host traffic, private listeners."""
from __future__ import annotations

import json
import re

from conftest import (ADDRESS, APP1, APP2, APPS, DATA, INSTANCE_IDS, INSTANCES, LB, SURREAL, SURREAL_CA, record,
                      run_playbook, run_py, surreal_sql)

testinfra_hosts = [f"ansible://{LB}"]

UNITS = {
    DATA: ["surrealdb", "ollama"],
    APP1: [f"cynic@{i}" for i in INSTANCES[APP1]],
    APP2: [f"cynic@{i}" for i in INSTANCES[APP2]],
    LB: ["nginx", "ollama"],  # the second Ollama
}


# molecule.yml's images: Debian 13 for the lb and data hosts, Debian 12 for the app hosts.
RELEASES = {LB: "trixie", DATA: "trixie", APP1: "bookworm", APP2: "bookworm"}


def listeners(host, port: int) -> set[str]:
    """Local addresses with a TCP socket listening on port."""
    out = host.check_output(f"ss -ltnH 'sport = :{port}'")
    return {re.sub(r":\d+$", "", line.split()[3]).strip("[]") for line in out.splitlines() if line.strip()}


def test_each_host_runs_its_debian_release(cluster):
    seen = {}
    for name, codename in RELEASES.items():
        host = cluster[name]
        os_release = host.file("/etc/os-release").content_string
        assert f"VERSION_CODENAME={codename}\n" in os_release, (name, os_release)
        seen[name] = {
            "debian": host.check_output("cat /etc/debian_version"),
            "python3": host.check_output("python3 -c 'import platform; print(platform.python_version())'"),
            "systemd": host.check_output("systemctl --version").splitlines()[0],
        }
    seen[LB]["nginx"] = cluster[LB].run("nginx -v").stderr.strip()
    record("platforms", seen)
    assert seen[DATA]["python3"].startswith("3.13."), seen


def test_every_unit_runs_on_its_host_only(cluster):
    for name, units in UNITS.items():
        for unit in units:
            svc = cluster[name].service(unit)
            assert svc.is_running and svc.is_enabled, (name, unit)
    # And nowhere else: the roles ran only on their groups.
    for name in (LB, APP1, APP2):
        assert not cluster[name].file("/etc/systemd/system/surrealdb.service").exists, name
    for name in (LB, DATA):
        assert not cluster[name].file("/etc/systemd/system/cynic@.service").exists, name


def test_surrealdb_and_ollama_listen_only_on_the_private_address(cluster):
    data = cluster[DATA]
    assert listeners(data, 8000) == {ADDRESS[DATA]}
    assert listeners(data, 11434) == {ADDRESS[DATA]}
    assert listeners(cluster[LB], 11434) == {ADDRESS[LB]}
    # Reachable from an app host at that address, not on the data host's loopback.
    app = cluster[APP1]
    assert app.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' --cacert {SURREAL_CA[APP1]} {SURREAL}/health") == "200"
    assert app.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' http://{ADDRESS[DATA]}:11434/api/version") == "200"
    for port in (8000, 11434):
        assert data.run(f"curl -s -m 2 http://127.0.0.1:{port}/").rc != 0, port


def test_instances_listen_on_their_private_address_and_reach_the_shared_services(cluster):
    for name in APPS:
        for iid, port in INSTANCES[name].items():
            assert listeners(cluster[name], port) == {ADDRESS[name]}, (name, port)
            health = json.loads(cluster[LB].check_output(f"curl -sf http://{ADDRESS[name]}:{port}/health"))
            assert health["instance_id"] == f"{name}-{iid}"
            assert health["storage"]["surreal"] == "connected", health
            assert health["llm"]["ollama"] == "reachable", health
            assert health["status"] == "alive", health


def test_instances_use_the_data_hosts_private_address(cluster):
    for name in APPS:
        env = cluster[name].file("/etc/cynic/cynic.env").content_string
        assert f'SURREAL_URL="wss://{ADDRESS[DATA]}:8000/rpc"' in env
        assert 'SURREAL_CA_FILE="/etc/cynic/surreal-ca.pem"' in env
        assert 'SURREAL_AUTH_LEVEL="database"' in env and 'SURREAL_USER="cynic"' in env
        # Both Ollama servers, in inventory order (molecule lists the hosts by name: data before lb).
        assert f'OLLAMA_URL="http://{ADDRESS[DATA]}:11434,http://{ADDRESS[LB]}:11434"' in env
        unit = cluster[name].file("/etc/systemd/system/cynic@.service").content_string
        assert f"--forwarded-allow-ips={ADDRESS[LB]}" in unit


def test_nginx_upstream_holds_every_instance_of_both_hosts(host):
    conf = host.file("/etc/nginx/nginx.conf").content_string
    servers = set(re.findall(r"^\s*server (\S+) max_fails", conf, re.MULTILINE))
    assert servers == {f"{ADDRESS[n]}:{p}" for n in APPS for p in INSTANCES[n].values()}


def test_judgments_through_the_lb_come_from_both_app_hosts(host):
    seen = run_py(host, """
        import json, urllib.request, uuid
        seen = {}
        for i in range(40):
            req = urllib.request.Request("http://127.0.0.1/judge", method="POST",
                data=json.dumps({"content": "cross-host probe %d %s" % (i, uuid.uuid4().hex)}).encode(),
                headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                body = json.loads(r.read())
                assert body["instance_id"] == r.headers["X-Instance-ID"], body
                seen[body["instance_id"]] = seen.get(body["instance_id"], 0) + 1
        print(json.dumps(seen))
    """)
    assert sorted(seen) == INSTANCE_IDS, seen


def test_judgment_created_on_an_app_host_is_stored_on_the_data_host(host, cluster, secret):
    answer = run_py(host, """
        import json, urllib.request, uuid
        req = urllib.request.Request("http://127.0.0.1/judge", method="POST",
            data=json.dumps({"content": "stored probe " + uuid.uuid4().hex}).encode(),
            headers={"Content-Type": "application/json"})
        print(urllib.request.urlopen(req, timeout=10).read().decode())
    """)
    status, body = surreal_sql(cluster[DATA], DATA, f"SELECT judgment_id, instance_id FROM judgment WHERE cell_id = "
                               f"'{answer['cell_id']}';", auth=("root", secret))
    assert status == "200", body
    stored = json.loads(body)
    assert stored[-1]["result"] == [{"judgment_id": answer["judgment_id"], "instance_id": answer["instance_id"]}]


def test_load_spread_covers_every_instance_on_both_hosts():
    # cynic_stress at 150 req/s on the lb host, with expected_instances and min_instance_share
    # as thresholds: the task fails when an instance is missing or starved.
    result = run_playbook("spread.yml")
    assert result.returncode == 0, result.stdout[-4000:]
    spread = json.loads(re.search(r'"SPREAD (\{.*\})"', result.stdout).group(1).replace('\\"', '"'))
    record("spread", spread)
    assert sorted(spread) == INSTANCE_IDS, spread
    by_host = {name: sum(n for iid, n in spread.items() if iid.startswith(name + "-")) for name in APPS}
    total = sum(by_host.values())
    assert all(count / total >= 0.3 for count in by_host.values()), by_host
