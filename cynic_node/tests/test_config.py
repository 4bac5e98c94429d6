"""Configuration from the environment, and the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cynic_node.cli import parse_args, websocket_options
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
        {"CYNIC_LLM_MAX_CONCURRENCY": "0"},
        {"CYNIC_LLM_TIMEOUT_S": "0"},
        {"CYNIC_WS_MAX_MESSAGE_BYTES": "10"},
        {"CYNIC_WS_MAX_CLIENTS": "0"},
        {"CYNIC_WS_QUEUE_SIZE": "none"},
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


def test_load_bounds_from_env() -> None:
    s = Settings.from_env(
        {
            "CYNIC_LLM_TIMEOUT_S": "12.5",
            "CYNIC_LLM_MAX_CONCURRENCY": "2",
            "CYNIC_WS_MAX_MESSAGE_BYTES": "1024",
            "CYNIC_WS_MAX_CLIENTS": "16",
            "CYNIC_WS_QUEUE_SIZE": "32",
            "CYNIC_WS_COMPRESSION": "true",
        }
    )
    assert (s.llm_timeout_s, s.llm_max_concurrency) == (12.5, 2)
    assert (s.ws_max_message_bytes, s.ws_max_clients, s.ws_queue_size) == (1024, 16, 32)
    assert s.ws_compression is True
    assert websocket_options(s) == {
        "ws_max_size": 1024,
        "ws_max_queue": 4,
        "ws_per_message_deflate": True,
    }


def test_load_bound_defaults() -> None:
    s = Settings.from_env({})
    # look-up, LLM, write: under nginx_lb_retry_window (45 s), itself under proxy_read_timeout
    assert s.store_timeout_s + s.llm_timeout_s + s.store_timeout_s < 45
    assert s.llm_max_concurrency == 4
    assert (s.ws_max_message_bytes, s.ws_max_clients, s.ws_queue_size) == (4096, 512, 256)
    # uvicorn's own defaults are 16 MiB messages and permessage-deflate on
    assert websocket_options(s)["ws_max_size"] == 4096
    assert websocket_options(s)["ws_per_message_deflate"] is False
