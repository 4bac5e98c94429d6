"""playbooks/teardown.yml on the converged host: what it removes, what it keeps, and the purge.

It takes the cluster down, so it must run after every other test of the scenario: pytest runs the
files in name order and this one is last (test_teardown sorts after test_surrealdb).
"""
from __future__ import annotations

from conftest import run_playbook

UNITS = ["surrealdb.service", "ollama.service", "cynic@1.service", "cynic@2.service", "cynic@3.service"]
SOFTWARE = [
    "/etc/systemd/system/surrealdb.service", "/etc/systemd/system/ollama.service",
    "/etc/systemd/system/ollama.service.d", "/etc/systemd/system/cynic@.service",
    "/etc/systemd/system/nginx.service.d/cynic-hardening.conf",
    "/etc/surrealdb", "/etc/cynic", "/opt/surrealdb", "/opt/ollama", "/opt/cynic",
    "/usr/local/bin/surreal", "/usr/local/bin/ollama", "/opt/cynic-loadgen/venv",
]
DATA = ["/var/lib/surrealdb", "/var/lib/cynic/judgments.jsonl", "/usr/share/ollama/.ollama/models"]
USERS = ["surrealdb", "ollama", "cynic"]


def test_teardown_removes_the_software_keeps_the_data_then_purges_it(host):
    assert all(host.file(path).exists for path in DATA), "the converge should have left data to keep"
    assert host.file("/opt/cynic-loadgen/venv").exists, "test_stress installs the load generator first"

    result = run_playbook("playbooks/teardown.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    for unit in [*UNITS, "nginx.service"]:
        assert not host.service(unit).is_running, unit
    assert [path for path in SOFTWARE if host.file(path).exists] == []
    assert [path for path in DATA if not host.file(path).exists] == []  # kept without the purge
    assert all(host.user(name).exists for name in USERS)
    assert host.package("nginx").is_installed  # stopped, not removed: it may serve other sites

    again = run_playbook("playbooks/teardown.yml")
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-3000:]

    purged = run_playbook("playbooks/teardown.yml", "-e", "teardown_purge_data=true")
    assert purged.returncode == 0, purged.stdout[-3000:]
    assert [path for path in DATA if host.file(path).exists] == []
    assert [name for name in USERS if host.user(name).exists] == []
    assert host.user("root").exists
