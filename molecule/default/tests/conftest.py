"""Helpers of the default scenario's verify tests (the shared ones live in molecule/shared)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from molecule_helpers import REPO, run_playbook_in, run_py  # noqa: E402  (after the path it needs)

PLAYBOOKS = Path(__file__).parent / "playbooks"
__all__ = ["REPO", "run_playbook", "run_py"]


def run_playbook(playbook: str | Path, *extra: str):
    """Run tests/playbooks/NAME, else REPO/NAME, against the converged instance."""
    return run_playbook_in(PLAYBOOKS, playbook, *extra)


@pytest.fixture(scope="module")
def hostvars(host):
    return host.ansible.get_variables()
