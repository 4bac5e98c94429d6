"""Helpers of the kernel scenario's verify tests (the shared ones live in molecule/shared).

One Debian 13 host runs everything: SurrealDB and Ollama (no models), nginx on port 80, and three
instances of the public CYNIC kernel on ports 8001, 8003 and 8005, each with its MCP server on port + 1
(molecule.yml). The kernel names no instance: nginx's X-Instance-ID is the upstream address.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from molecule_helpers import REPO, record, run_playbook_in, run_py  # noqa: E402  (after the path it needs)

PLAYBOOKS = Path(__file__).parent / "playbooks"
__all__ = ["REPO", "record", "run_playbook", "run_py"]

LB = "http://127.0.0.1:80"
# cynic_instances of molecule.yml: id -> port; the MCP server of each is on port + 1.
INSTANCES = {"1": 8001, "2": 8003, "3": 8005}
UPSTREAMS = sorted(f"127.0.0.1:{port}" for port in INSTANCES.values())


def run_playbook(playbook: str | Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run tests/playbooks/NAME, else REPO/NAME, against the converged host."""
    return run_playbook_in(PLAYBOOKS, playbook, *extra)


@pytest.fixture(scope="module")
def hostvars(host):
    return host.ansible.get_variables()
