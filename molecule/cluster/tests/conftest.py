"""Helpers of the cluster scenario's verify tests.

Four hosts: lb (nginx, the load generator), data (SurrealDB, Ollama), app1 and app2 (two CYNIC
instances each), on the private network 172.29.42.0/24 of molecule.yml. Tests restrict testinfra's
`host` to one host with `testinfra_hosts` and reach the others through the `cluster` fixture.

run_py and run_playbook come from molecule/shared/molecule_helpers.py, like the default scenario's.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from molecule_helpers import REPO, record, run_playbook_in, run_py  # noqa: E402  (after the path it needs)

PLAYBOOKS = Path(__file__).parent / "playbooks"
__all__ = ["REPO", "record", "run_playbook", "run_py"]

LB, DATA, APP1, APP2 = "cynic-cluster-lb", "cynic-cluster-data", "cynic-cluster-app1", "cynic-cluster-app2"
ADDRESS = {LB: "172.29.42.10", DATA: "172.29.42.11", APP1: "172.29.42.21", APP2: "172.29.42.22"}
APPS = (APP1, APP2)
# cynic_instances of molecule.yml: two per app host; INSTANCE_ID is "<host>-<id>".
INSTANCES = {APP1: {"1": 8001, "2": 8002}, APP2: {"1": 8001, "2": 8002}}
INSTANCE_IDS = sorted(f"{h}-{i}" for h, ids in INSTANCES.items() for i in ids)
SECRET_VAR = "surrealdb_root_password"


def run_playbook(playbook: str | Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run tests/playbooks/NAME, else REPO/NAME, against the converged hosts."""
    return run_playbook_in(PLAYBOOKS, playbook, *extra)


def drill_result(path: Path, output: str) -> dict:
    """The summary a drill wrote to drill_result_file."""
    assert path.exists(), output[-4000:]
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def cluster(request):
    """testinfra hosts by inventory name."""
    inventory = request.config.option.ansible_inventory
    return {name: testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory) for name in ADDRESS}


@pytest.fixture(scope="session")
def secret(cluster):
    value = cluster[DATA].ansible.get_variables()[SECRET_VAR]
    assert len(value) >= 12
    return value
