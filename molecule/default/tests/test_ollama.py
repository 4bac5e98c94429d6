"""Ollama as the ollama role leaves it (stand-in binary packaged like the official archive)."""
from __future__ import annotations

import json

URL = "http://127.0.0.1:11434"


def tags(host) -> list[str]:
    return [m["name"] for m in json.loads(host.check_output(f"curl -sf {URL}/api/tags"))["models"]]


def test_unit_active_enabled_as_own_user(host):
    svc = host.service("ollama")
    assert svc.is_running and svc.is_enabled
    pid = host.check_output("systemctl show -p MainPID --value ollama")
    assert host.check_output(f"ps -o user= -p {pid}").strip() == "ollama"


def test_installed_in_versioned_dir_and_linked(host):
    link = host.file("/usr/local/bin/ollama")
    assert link.is_symlink
    assert link.linked_to.startswith("/opt/ollama/") and link.linked_to.endswith("/bin/ollama")


def test_listens_on_loopback_and_answers(host):
    assert host.socket("tcp://127.0.0.1:11434").is_listening
    assert not host.socket("tcp://0.0.0.0:11434").is_listening
    assert "version" in json.loads(host.check_output(f"curl -sf {URL}/api/version"))


def test_drop_in_environment(host):
    env = host.check_output("systemctl show -p Environment --value ollama")
    for key in ("OLLAMA_HOST=127.0.0.1:11434", "OLLAMA_MODELS=", "OLLAMA_KEEP_ALIVE=", "OLLAMA_NUM_PARALLEL="):
        assert key in env


def test_models_listed(host):
    names = tags(host)
    assert "gemma2:2b" in names and "qwen2.5:0.5b" in names


def test_restart_keeps_models(host):
    before = sorted(tags(host))
    host.run_expect([0], "systemctl restart ollama")
    for _attempt in range(30):
        if host.run(f"curl -sf {URL}/api/version").rc == 0:
            break
        host.run("sleep 1")
    assert sorted(tags(host)) == before
