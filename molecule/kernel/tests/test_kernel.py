"""The public CYNIC kernel, three instances behind nginx, run by the cynic role from its source archive."""
from __future__ import annotations

import json
import re

from conftest import INSTANCES, LB, UPSTREAMS, run_py

KERNEL_PY = "/opt/cynic/venv/bin/python"


def test_every_unit_active(host):
    for unit in ["surrealdb", "ollama", "nginx", *(f"cynic@{i}" for i in INSTANCES)]:
        svc = host.service(unit)
        assert svc.is_running, unit
        assert svc.is_enabled, unit


def test_the_kernel_runs_on_python_313_with_the_pinned_clients(host):
    # Debian 13's interpreter, and the wheel's pins as cynic_requirement_overrides and the constraints set them.
    versions = run_py(host, """
        import json, sys
        from importlib.metadata import version
        print(json.dumps({"python": "%d.%d" % sys.version_info[:2], "cynic": version("cynic"),
                          "ollama": version("ollama"), "surrealdb": version("surrealdb")}))
    """, python=KERNEL_PY)
    assert versions == {"python": "3.13", "cynic": "0.2.0", "ollama": "0.4.6", "surrealdb": "2.0.0"}, versions


def test_ollama_has_no_models(host):
    # The precondition of the kernel's heuristic mode: with a model, its /judge answers 500 (its bug).
    tags = json.loads(host.check_output("curl -sf http://127.0.0.1:11434/api/tags"))
    assert tags["models"] == [], tags


def test_each_instance_alive_on_its_own_port(host):
    for port in INSTANCES.values():
        health = json.loads(host.check_output(f"curl -sf http://127.0.0.1:{port}/health"))
        assert health["status"] == "alive", health
        assert health["llm_adapters"] == [], health  # heuristic mode
        # No SURREAL_URL (cynic_env_omit): the kernel's judgments are not stored, see the scenario's notes.
        assert health["storage"]["surreal"] == "disconnected", health


def test_no_surreal_url_in_the_environment(host):
    env = host.file("/etc/cynic/cynic.env")
    assert env.mode == 0o600
    content = env.content_string
    assert not re.search(r"^SURREAL_URL=", content, re.M), "cynic_env_omit: [SURREAL_URL] is not honoured"
    assert re.search(r"^OLLAMA_URL=", content, re.M)


def test_each_instance_has_its_own_state(host):
    # The kernel keeps ~/.cynic/instance.json; HOME is each instance's own directory.
    seen = {}
    for i, port in INSTANCES.items():
        state = json.loads(host.check_output(f"cat /var/lib/cynic/instances/{i}/.cynic/instance.json"))
        assert state["port"] == port, state
        seen[i] = state["instance_id"]
    assert len(set(seen.values())) == len(INSTANCES), seen


def test_mcp_side_ports_do_not_collide(host):
    # Each instance's process listens on its port and on its MCP port (env PORT + 1), and no port is held
    # by two instances. ss names the process that holds each listening socket, but root in these
    # containers lacks CAP_SYS_PTRACE and cannot read another user's /proc/PID/fd: ask as cynic_user.
    pids = {i: host.check_output(f"systemctl show -P MainPID cynic@{i}.service") for i in INSTANCES}
    assert all(pid != "0" for pid in pids.values()), pids
    assert len(set(pids.values())) == len(INSTANCES), pids
    sockets = host.check_output("runuser -u cynic -- ss -Hltnp")
    listening: dict[str, set[int]] = {i: set() for i in INSTANCES}
    for line in sockets.splitlines():
        port = int(line.split()[3].rsplit(":", 1)[1])
        for i, pid in pids.items():
            if f"pid={pid}," in line:
                listening[i].add(port)
    for i in INSTANCES:
        main = INSTANCES[i]
        assert listening[i] == {main, main + 1}, (i, listening, sockets)
    ports = [p for held in listening.values() for p in held]
    assert len(ports) == len(set(ports)), listening


def test_requests_through_nginx_reach_all_three(host):
    # The kernel sends no X-Instance-ID: nginx sets it to the upstream that answered.
    seen = run_py(host, f"""
        import json, urllib.request
        seen = {{}}
        for i in range(30):
            req = urllib.request.Request("{LB}/judge", method="POST",
                data=json.dumps({{"content": f"def spread_{{i}}(): return {{i}}", "reality": "CODE"}}).encode(),
                headers={{"Content-Type": "application/json"}})
            with urllib.request.urlopen(req, timeout=15) as r:
                assert r.status == 200, r.status
                iid = r.headers["X-Instance-ID"]
                seen[iid] = seen.get(iid, 0) + 1
        print(json.dumps(seen))
    """)
    assert sorted(seen) == UPSTREAMS, seen


def test_judge_through_nginx_gives_a_q_score(host):
    # The default level (no "level": level_used AUTO) and REFLEX both judge without a model.
    answers = run_py(host, f"""
        import json, urllib.request
        out = {{}}
        for name, extra in (("default", {{}}), ("REFLEX", {{"level": "REFLEX"}})):
            body = {{"content": "def f(x): return x * 2", "reality": "CODE", **extra}}
            req = urllib.request.Request("{LB}/judge", method="POST", data=json.dumps(body).encode(),
                                         headers={{"Content-Type": "application/json"}})
            with urllib.request.urlopen(req, timeout=15) as r:
                out[name] = {{"status": r.status, "body": json.loads(r.read())}}
        print(json.dumps(out))
    """)
    for name, answer in answers.items():
        assert answer["status"] == 200, (name, answer)
        body = answer["body"]
        assert isinstance(body["q_score"], (int, float)) and 0 <= body["q_score"] <= 100, (name, body)
        assert body["verdict"] in ("HOWL", "WAG", "GROWL", "BARK"), (name, body)
        assert body["llm_calls"] == 0, (name, body)
    assert answers["REFLEX"]["body"]["level_used"] == "REFLEX", answers


def test_bad_reality_is_rejected(host):
    status = host.check_output(
        "curl -s -o /dev/null -w '%%{http_code}' -H 'Content-Type: application/json' "
        "--data-binary %s %s/judge", json.dumps({"content": "x", "reality": "NOT-A-REALITY"}), LB)
    assert status == "422", status
