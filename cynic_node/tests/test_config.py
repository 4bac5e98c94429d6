"""Configuration from the environment, and the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cynic_node.cli import parse_args
from cynic_node.config import ConfigError, Settings


def test_from_env_reads_every_variable() -> None:
    s = Settings.from_env(
        {
            "INSTANCE_ID": "cynic-2",
            "CYNIC_HOME": "/var/lib/cynic",
            "SURREAL_URL": "ws://10.0.0.5:8000/rpc",
            "SURREAL_USER": "root",
            "SURREAL_PASS": "pw",
            "SURREAL_NS": "ns1",
            "SURREAL_DB": "db1",
            "SURREAL_AUTH_LEVEL": "Database",
            "OLLAMA_URL": "http://127.0.0.1:11434/",
            "CYNIC_MODEL": "qwen2:0.5b",
            "CYNIC_MAX_BODY_BYTES": "2048",
            "CYNIC_BENCH_ROUTES": "1",
            "SURREAL_POOL_SIZE": "3",
        }
    )
    assert s.instance_id == "cynic-2"
    assert s.journal_path == Path("/var/lib/cynic/judgments.jsonl")
    assert (s.surreal_url, s.surreal_user, s.surreal_pass) == (
        "ws://10.0.0.5:8000/rpc",
        "root",
        "pw",
    )
    assert (s.surreal_ns, s.surreal_db, s.surreal_auth_level) == ("ns1", "db1", "database")
    assert s.ollama_url == "http://127.0.0.1:11434"
    assert s.model == "qwen2:0.5b"
    assert s.max_body_bytes == 2048
    assert s.bench_routes is True
    assert s.surreal_pool_size == 3
    assert "pw" not in repr(s)  # the password never reaches a log line


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.surreal_ns, s.surreal_db, s.model) == ("cynic", "cynic", "gemma2:2b")
    assert s.ollama_url == "http://127.0.0.1:11434"
    assert s.bench_routes is False
    assert s.instance_id  # the host name


@pytest.mark.parametrize(
    "env",
    [
        {"CYNIC_MAX_BODY_BYTES": "lots"},
        {"CYNIC_MAX_BODY_BYTES": "1"},
        {"SURREAL_POOL_SIZE": "0"},
        {"CYNIC_STORE_TIMEOUT_S": "nan"},
        {"SURREAL_AUTH_LEVEL": "galaxy"},
    ],
)
def test_bad_values_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_cli() -> None:
    args = parse_args(
        ["--host", "0.0.0.0", "--port", "8123", "--log-level", "debug", "--workers", "2"]
    )
    assert (args.host, args.port, args.log_level, args.workers) == ("0.0.0.0", 8123, "debug", 2)
