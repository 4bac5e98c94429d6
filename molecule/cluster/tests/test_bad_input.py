"""Bad input to the collection fails clearly, and before anything on a host changes."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import APP1, DATA, LB, REPO, run_playbook

testinfra_hosts = [f"ansible://{LB}"]

STANDINS = REPO / ".cache" / "standins"
ARCHIVE = "surreal-v2.3.7.linux-amd64.tgz"
CHECKSUM = "surreal-v2.3.7.linux-amd64.txt"
# What the surrealdb role creates on a host; the lb host has none of it.
SURREALDB_MARKERS = ["/opt/surrealdb", "/usr/local/bin/surreal", "/etc/systemd/system/surrealdb.service",
                     "/etc/surrealdb", "/var/lib/surrealdb"]


def apply_role(role: str, hosts: str, **variables):
    return run_playbook("apply_role.yml", "-e", json.dumps({"test_role": role, "test_hosts": hosts, **variables}))


def recap_changed(output: str) -> dict[str, int]:
    return {h: int(c) for h, c in re.findall(r"^(cynic-cluster-\S+)\s+: ok=\d+\s+changed=(\d+)", output, re.MULTILINE)}


def state(host, units):
    return {u: host.check_output(f"systemctl show -p MainPID -p NRestarts {u}") for u in units}


@pytest.mark.parametrize(("role", "hosts", "variables", "expected"), [
    ("cynic", APP1, {"cynic_instances": "three"}, ["cynic_instances", "list"]),
    ("cynic", APP1, {"cynic_instances": [{"id": 1, "port": "eighty"}]}, ["port", "int"]),
    ("nginx_lb", LB, {"nginx_lb_strategy": "fastest"}, ["nginx_lb_strategy", "fastest", "least_conn"]),
    ("surrealdb", DATA, {"surrealdb_log_level": "loud"}, ["surrealdb_log_level", "loud", "trace"]),
    ("ollama", DATA, {"ollama_num_parallel": "many"}, ["ollama_num_parallel", "int"]),
])
def test_argument_specs_reject_wrong_types_and_values(cluster, role, hosts, variables, expected):
    units = {"cynic": ["cynic@1", "cynic@2"], "nginx_lb": ["nginx"], "surrealdb": ["surrealdb"], "ollama": ["ollama"]}[role]
    before = state(cluster[hosts], units)
    result = apply_role(role, hosts, **variables)
    assert result.returncode != 0, result.stdout[-3000:]
    message = result.stdout[result.stdout.find("Validating arguments against arg spec"):]
    assert "Validating arguments against arg spec" in result.stdout, result.stdout[-3000:]
    for word in expected:
        assert word in message, (word, message[:3000])
    assert recap_changed(result.stdout) == {hosts: 0}, result.stdout[-1500:]
    assert state(cluster[hosts], units) == before


def test_missing_archive_fails_before_a_fresh_host_changes(cluster, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = apply_role("surrealdb", LB, surrealdb_archive_dir=str(empty))
    assert result.returncode != 0
    assert f"{empty}/{ARCHIVE} does not exist on the controller" in result.stdout, result.stdout[-3000:]
    assert recap_changed(result.stdout) == {LB: 0}
    for path in SURREALDB_MARKERS:
        assert not cluster[LB].file(path).exists, path
    assert not cluster[LB].user("surrealdb").exists


@pytest.fixture
def tampered(tmp_path: Path) -> Path:
    """The stand-in archive with one byte changed, beside its genuine checksum file."""
    directory = tmp_path / "tampered"
    directory.mkdir()
    shutil.copy(STANDINS / CHECKSUM, directory / CHECKSUM)
    data = bytearray((STANDINS / ARCHIVE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (directory / ARCHIVE).write_bytes(bytes(data))
    assert hashlib.sha256(data).hexdigest() not in (directory / CHECKSUM).read_text()
    return directory


def test_wrong_checksum_fails_before_a_fresh_host_changes(cluster, tampered):
    result = apply_role("surrealdb", LB, surrealdb_archive_dir=str(tampered))
    assert result.returncode != 0
    assert "CHECKSUM MISMATCH" in result.stdout, result.stdout[-3000:]
    assert recap_changed(result.stdout) == {LB: 0}
    for path in SURREALDB_MARKERS:
        assert not cluster[LB].file(path).exists, path


def test_wrong_checksum_leaves_the_installed_surrealdb_alone(cluster, tampered):
    data = cluster[DATA]
    binary = data.file("/usr/local/bin/surreal").linked_to
    digest = data.check_output(f"sha256sum {binary}")
    before = state(data, ["surrealdb"])
    result = apply_role("surrealdb", DATA, surrealdb_archive_dir=str(tampered))
    assert result.returncode != 0
    assert "CHECKSUM MISMATCH" in result.stdout, result.stdout[-3000:]
    assert recap_changed(result.stdout) == {DATA: 0}
    assert data.check_output(f"sha256sum {binary}") == digest
    assert state(data, ["surrealdb"]) == before
