"""The roles fail clearly on bad input: run them from the controller against the converged host."""
from __future__ import annotations

from conftest import run_playbook


def test_unknown_model_fails_with_clear_message(host):
    result = run_playbook("ollama_unknown_model.yml")
    assert result.returncode != 0
    assert "could not pull model no-such-model-xyz:latest" in result.stdout
    # ...and the models that were there are untouched.
    assert "gemma2:2b" in host.check_output("curl -sf http://127.0.0.1:11434/api/tags")


def test_second_converge_pulls_nothing():
    result = run_playbook("ollama_only.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "changed=0" in result.stdout, result.stdout[-3000:]
