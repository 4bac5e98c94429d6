"""Helpers shared by the scenarios' verify tests (each scenario's conftest imports them).

testinfra reaches the containers through Ansible, one round trip per command, so HTTP work is done
by small Python programs run inside a container, which print JSON back; playbooks (drills, stress,
role error cases) run from the controller against the scenario's inventory.
"""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_py(host, code: str, python: str = "python3", timeout: int = 300) -> object:
    """Run Python code inside the container and return its JSON output (its last line)."""
    script = textwrap.dedent(code)
    result = host.run(f"timeout {timeout} {python} - <<'PYEOF'\n{script}\nPYEOF")
    assert result.rc == 0, result.stderr or result.stdout
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_playbook_in(playbooks: Path, playbook: str | Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run a playbook (PLAYBOOKS/NAME, else REPO/NAME) against the scenario's converged hosts.

    stdout holds stdout and stderr together, without colours, results as one-line JSON (the
    scenarios' ansible.cfg asks for YAML, which wraps long messages), and with the run time
    only (not the converge runs' list of slowest tasks, which would push a failure out of the tail
    that the tests print).
    """
    path = Path(playbook)
    if not path.is_absolute():
        path = playbooks / path if (playbooks / path).exists() else REPO / path
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
           "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.timer"}
    return subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(path), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900, check=False, env=env,
    )


def record(name: str, data: object) -> None:
    """Keep a measured figure in the scenario's ephemeral directory (drill-results.jsonl) and print it."""
    directory = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if directory:
        with open(os.path.join(directory, "drill-results.jsonl"), "a", encoding="utf-8") as out:
            out.write(json.dumps({"test": name, "result": data}) + "\n")
    print(name, json.dumps(data))
