"""Helpers shared by the verify tests.

testinfra reaches the container through Ansible, one round trip per command, so HTTP work is done
by small Python programs run inside the container, which print JSON back.
"""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

PLAYBOOKS = Path(__file__).parent / "playbooks"
REPO = Path(__file__).resolve().parents[3]


def run_py(host, code: str, python: str = "python3", timeout: int = 300) -> object:
    """Run Python code inside the container and return its JSON output."""
    script = textwrap.dedent(code)
    result = host.run(f"timeout {timeout} {python} - <<'PYEOF'\n{script}\nPYEOF")
    assert result.rc == 0, result.stderr or result.stdout
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_playbook(playbook: str | Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run a playbook (tests/playbooks/NAME, else REPO/NAME) against the converged instance(s).

    stdout holds stdout and stderr together, without colours.
    """
    path = Path(playbook)
    if not path.is_absolute():
        path = PLAYBOOKS / path if (PLAYBOOKS / path).exists() else REPO / path
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    return subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(path), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900, check=False, env=env,
    )


@pytest.fixture(scope="module")
def hostvars(host):
    return host.ansible.get_variables()
