"""Configuration, read once from the environment.

Every setting has an environment variable so that the Ansible role (a systemd EnvironmentFile)
and the tests configure the node the same way. Secrets (SURREAL_PASS) only ever come from the
environment, never from a command line.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

_N = TypeVar("_N", int, float)


class ConfigError(ValueError):
    """An environment variable holds a value the node cannot use."""


def _number(
    env: Mapping[str, str], name: str, default: _N, minimum: _N, kind: type[_N], what: str
) -> _N:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from exc
    if not value >= minimum:  # also rejects NaN
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    return _number(env, name, default, minimum, int, "an integer")


def _float(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    return _number(env, name, default, minimum, float, "a number")


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
    return raw


def _bool(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


# When judgments.jsonl is fsynced (journal.py): never, about once a second, or each line before
# its answer. `none` is what the node always did.
JOURNAL_FSYNC_POLICIES = ("none", "batch", "line")
JOURNAL_FSYNC_DEFAULT = "none"


def journal_fsync_policy(env: Mapping[str, str] | None = None) -> str:
    """CYNIC_JOURNAL_FSYNC: `none` (default), `batch` or `line`; ConfigError for anything else."""
    return _choice(
        os.environ if env is None else env,
        "CYNIC_JOURNAL_FSYNC",
        JOURNAL_FSYNC_DEFAULT,
        JOURNAL_FSYNC_POLICIES,
    )


def surreal_ssl_context(ca_file: str) -> ssl.SSLContext | None:
    """SURREAL_CA_FILE: the TLS context that verifies SurrealDB's certificate (wss://) against
    that PEM CA bundle, host name (or IP address SAN) included; None when empty: the system's
    trust store. ConfigError when the file cannot be read or holds no certificate, so that a
    typo stops the node at start instead of making every connection fail."""
    if not ca_file:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except OSError as exc:  # FileNotFoundError, IsADirectoryError, ssl.SSLError (not PEM)
        raise ConfigError(
            f"SURREAL_CA_FILE {ca_file!r} is not a readable PEM CA bundle: {exc}"
        ) from exc


def ollama_server_urls(value: str) -> tuple[str, ...]:
    """OLLAMA_URL: one or more Ollama base URLs, comma-separated; stripped, without a trailing
    slash, duplicates dropped (first kept). ConfigError naming the first that is no http(s) URL."""
    urls: list[str] = []
    for entry in filter(None, (part.strip() for part in value.split(","))):
        url = entry.rstrip("/")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises ValueError for a port out of range or not a number)
        except ValueError as exc:
            raise ConfigError(f"OLLAMA_URL: {entry!r} is not a URL ({exc})") from exc
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"OLLAMA_URL: {entry!r} is not an http(s) URL with a host, "
                "e.g. http://127.0.0.1:11434"
            )
        if url not in urls:
            urls.append(url)
    if not urls:
        raise ConfigError(f"OLLAMA_URL lists no URL, got {value!r}")
    return tuple(urls)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
METRICS_ALLOW_DEFAULT = "127.0.0.1,::1"
METRICS_ALLOW_ANY = "*"


def metrics_networks(value: str) -> tuple[IPNetwork, ...] | None:
    """CYNIC_METRICS_ALLOW: IP addresses and CIDR networks, comma-separated, that may read
    /metrics; None for `*` (everyone). ConfigError naming the first entry that is neither."""
    if value.strip() == METRICS_ALLOW_ANY:
        return None
    networks = []
    for entry in filter(None, (part.strip() for part in value.split(","))):
        try:
            # strict: 10.0.0.1/8 is refused rather than silently widened to 10.0.0.0/8.
            networks.append(ipaddress.ip_network(entry))
        except ValueError as exc:
            raise ConfigError(
                f"CYNIC_METRICS_ALLOW: {entry!r} is not an IP address or CIDR network ({exc}); "
                f"use {METRICS_ALLOW_ANY} alone to allow everyone"
            ) from exc
    if not networks:
        raise ConfigError(f"CYNIC_METRICS_ALLOW lists no address, got {value!r}")
    return tuple(networks)


@dataclass(frozen=True)
class Settings:
    instance_id: str = field(default_factory=socket.gethostname)
    cynic_home: Path = field(default_factory=lambda: Path.home() / ".cynic")
    surreal_url: str = "ws://127.0.0.1:8000/rpc"
    # Empty user means "do not sign in" (an embedded or unauthenticated store).
    surreal_user: str = ""
    surreal_pass: str = field(default="", repr=False)
    # Where the user is defined: root (`surreal start --user`), namespace or database (a
    # least-privilege user the deployment creates with DEFINE USER ... ON DATABASE).
    surreal_auth_level: str = "root"
    surreal_ns: str = "cynic"
    surreal_db: str = "cynic"
    # PEM CA bundle for a wss:// SURREAL_URL (surreal_ssl_context); empty: the system's.
    surreal_ca_file: str = ""
    # Connections to SurrealDB. One WebSocket already multiplexes concurrent calls; a second
    # one lets the server work on two requests at once when it handles a socket serially.
    surreal_pool_size: int = 2
    store_timeout_s: float = 5.0
    ollama_url: str = "http://127.0.0.1:11434"
    model: str = "gemma2:2b"
    # The whole of one LLM call, the wait for a slot included. With a store look-up before and a
    # write after (store_timeout_s each), under the load balancer's retry window (45 s) and its
    # proxy_read_timeout (60 s): a slow Ollama gives a REFLEX answer from this instance rather
    # than a 504, and nginx never replays a request only because it was slow.
    llm_timeout_s: float = 20.0
    # LLM calls in flight from this instance at once (a MACRO judgment makes three); more wait
    # for a slot within llm_timeout_s, then the judgment falls back to REFLEX.
    llm_max_concurrency: int = 4
    # How long a judgment may wait for its LLM opinions, the wait for a slot included; past it
    # the node answers REFLEX (degraded). Each at most llm_timeout_s (from_env checks it).
    llm_deadline_micro_s: float = 10.0
    llm_deadline_macro_s: float = 20.0
    max_body_bytes: int = 1024 * 1024
    retry_after_s: int = 5
    ws_ping_interval_s: float = 30.0
    # /ws/stream bounds. A client only ever sends {"type": "ping"}: a few bytes.
    ws_max_message_bytes: int = 4096
    ws_max_clients: int = 512
    ws_queue_size: int = 256
    ws_compression: bool = False
    bench_routes: bool = False
    journal_fsync: str = JOURNAL_FSYNC_DEFAULT
    # Who may read /metrics (metrics_networks): loopback unless configured.
    metrics_allow: str = METRICS_ALLOW_DEFAULT

    @property
    def journal_path(self) -> Path:
        return self.cynic_home / "judgments.jsonl"

    @property
    def ollama_urls(self) -> tuple[str, ...]:
        return ollama_server_urls(self.ollama_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = env.get("CYNIC_HOME", "").strip()
        ca_file = env.get("SURREAL_CA_FILE", "").strip()
        surreal_ssl_context(ca_file)  # fail at start, not at the first connection
        metrics_allow = env.get("CYNIC_METRICS_ALLOW", "").strip() or cls.metrics_allow
        metrics_networks(metrics_allow)
        ollama_url = ",".join(
            ollama_server_urls(env.get("OLLAMA_URL", "").strip() or cls.ollama_url)
        )
        llm_timeout_s = _float(env, "CYNIC_LLM_TIMEOUT_S", cls.llm_timeout_s, 0.01)
        # Unset, a deadline is its default, cut to the timeout; set above it, an error.
        deadlines = {
            name: _float(env, name, min(default, llm_timeout_s), 0.01)
            for name, default in (
                ("CYNIC_LLM_DEADLINE_MICRO_S", cls.llm_deadline_micro_s),
                ("CYNIC_LLM_DEADLINE_MACRO_S", cls.llm_deadline_macro_s),
            )
        }
        for name, deadline in deadlines.items():
            if deadline > llm_timeout_s:
                raise ConfigError(
                    f"{name} ({deadline:g}) must be <= CYNIC_LLM_TIMEOUT_S ({llm_timeout_s:g}): "
                    "no LLM call outlives the timeout"
                )
        return cls(
            instance_id=env.get("INSTANCE_ID", "").strip() or socket.gethostname(),
            cynic_home=Path(home) if home else Path.home() / ".cynic",
            surreal_url=env.get("SURREAL_URL", "").strip() or cls.surreal_url,
            surreal_user=env.get("SURREAL_USER", ""),
            surreal_pass=env.get("SURREAL_PASS", ""),
            surreal_auth_level=_choice(
                env, "SURREAL_AUTH_LEVEL", cls.surreal_auth_level, ("root", "namespace", "database")
            ),
            surreal_ns=env.get("SURREAL_NS", "").strip() or cls.surreal_ns,
            surreal_db=env.get("SURREAL_DB", "").strip() or cls.surreal_db,
            surreal_ca_file=ca_file,
            surreal_pool_size=_int(env, "SURREAL_POOL_SIZE", cls.surreal_pool_size, 1),
            store_timeout_s=_float(env, "CYNIC_STORE_TIMEOUT_S", cls.store_timeout_s, 0.01),
            ollama_url=ollama_url,
            model=env.get("CYNIC_MODEL", "").strip() or cls.model,
            llm_timeout_s=llm_timeout_s,
            llm_deadline_micro_s=deadlines["CYNIC_LLM_DEADLINE_MICRO_S"],
            llm_deadline_macro_s=deadlines["CYNIC_LLM_DEADLINE_MACRO_S"],
            llm_max_concurrency=_int(env, "CYNIC_LLM_MAX_CONCURRENCY", cls.llm_max_concurrency, 1),
            max_body_bytes=_int(env, "CYNIC_MAX_BODY_BYTES", cls.max_body_bytes, 64),
            retry_after_s=_int(env, "CYNIC_RETRY_AFTER_S", cls.retry_after_s, 1),
            ws_ping_interval_s=_float(env, "CYNIC_WS_PING_S", cls.ws_ping_interval_s, 0.01),
            ws_max_message_bytes=_int(
                env, "CYNIC_WS_MAX_MESSAGE_BYTES", cls.ws_max_message_bytes, 64
            ),
            ws_max_clients=_int(env, "CYNIC_WS_MAX_CLIENTS", cls.ws_max_clients, 1),
            ws_queue_size=_int(env, "CYNIC_WS_QUEUE_SIZE", cls.ws_queue_size, 1),
            ws_compression=_bool(env, "CYNIC_WS_COMPRESSION"),
            bench_routes=_bool(env, "CYNIC_BENCH_ROUTES"),
            journal_fsync=journal_fsync_policy(env),
            metrics_allow=metrics_allow,
        )
