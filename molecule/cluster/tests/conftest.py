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
APP_SECRET_VAR = "surrealdb_app_password"
# SurrealDB serves TLS from the scenario's test CA; each tier holds the CA where its role put it.
SURREAL = f"https://{ADDRESS[DATA]}:8000"
SURREAL_CA = {DATA: "/etc/surrealdb/tls/ca.crt", APP1: "/etc/cynic/surreal-ca.pem", APP2: "/etc/cynic/surreal-ca.pem"}


def surreal_sql(host, name: str, statement: str, auth: tuple[str, str] | None = None,
                database_user: bool = False, path: str = "/sql") -> tuple[str, str]:
    """(HTTP status, body) of a SurrealQL statement sent from host `name` over TLS, verified against its CA.
    database_user: Basic credentials checked at the cynic database's level, as the instances' user signs in."""
    headers = "-H 'Accept: application/json' -H 'Surreal-NS: cynic' -H 'Surreal-DB: cynic'"
    if database_user:
        headers += " -H 'Surreal-Auth-NS: cynic' -H 'Surreal-Auth-DB: cynic'"
    args = ([f"{auth[0]}:{auth[1]}"] if auth else []) + [statement]
    out = host.check_output(
        f"curl -s --cacert {SURREAL_CA[name]} -w '\\n%%{{http_code}}' {headers} {'-u %s' if auth else ''} "
        f"--data-binary %s {SURREAL}{path}", *args)
    body, _newline, status = out.rpartition("\n")
    return status, body


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


@pytest.fixture(scope="session")
def app_secret(cluster):
    value = cluster[DATA].ansible.get_variables()[APP_SECRET_VAR]
    assert len(value) >= 12
    return value
