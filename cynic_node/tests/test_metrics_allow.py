"""CYNIC_METRICS_ALLOW: who may read GET /metrics, judged by the connection's peer address."""

from __future__ import annotations

import dataclasses
import http.client
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cynic_node.api import create_app
from cynic_node.config import ConfigError, Settings, metrics_networks
from nodetest_helpers import NodeProcess, node_env


def _status(settings: Settings, peer: str, headers: dict[str, str] | None = None) -> int:
    with TestClient(create_app(settings), client=(peer, 40000)) as c:
        status: int = c.get("/metrics", headers=headers).status_code
        return status


def test_default_is_loopback_only(settings: Settings) -> None:
    assert Settings.from_env({}).metrics_allow == "127.0.0.1,::1"
    assert settings.metrics_allow == "127.0.0.1,::1"
    assert _status(settings, "127.0.0.1") == 200
    assert _status(settings, "::1") == 200
    assert _status(settings, "::ffff:127.0.0.1") == 200  # IPv4 on a dual-stack socket
    assert _status(settings, "127.0.0.2") == 403  # the entries are addresses, not 127/8
    assert _status(settings, "10.0.0.7") == 403
    assert _status(settings, "testclient") == 403  # no address: nothing the list can allow


def test_refusal_is_a_short_json_403_counted_in_the_metrics(settings: Settings) -> None:
    app = create_app(settings)
    with TestClient(app, client=("192.0.2.10", 40000)) as outsider:
        r = outsider.get("/metrics")
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-instance-id"] == "node-test"
        assert set(r.json()) == {"detail"}
        assert "cynic_" not in r.text
        # Only /metrics is restricted.
        assert outsider.get("/health").status_code == 200
        assert outsider.post("/judge", json={"content": "open to all"}).status_code == 200
        text = TestClient(app, client=("127.0.0.1", 40001)).get("/metrics").text
    labels = 'instance="node-test",route="/metrics",method="GET"'
    assert f'cynic_http_requests_total{{{labels},status="403"}} 1' in text


def test_networks_ipv4_ipv6_and_mapped(settings: Settings) -> None:
    allow = " 10.0.0.0/8, 192.0.2.5 ,2001:db8::/32,fd00::1,"  # spaces and a stray comma
    assert Settings.from_env({"CYNIC_METRICS_ALLOW": allow}).metrics_allow == allow.strip()
    s = dataclasses.replace(settings, metrics_allow=allow)
    for peer, status in [
        ("10.1.2.3", 200),
        ("11.0.0.1", 403),
        ("192.0.2.5", 200),
        ("192.0.2.6", 403),
        ("2001:db8:1::9", 200),
        ("2001:db9::1", 403),
        ("fd00::1", 200),
        ("fd00::2", 403),
        ("::ffff:10.200.0.1", 200),  # mapped: matches 10.0.0.0/8
        ("::ffff:11.0.0.1", 403),
        ("127.0.0.1", 403),  # loopback is no longer in the list
    ]:
        assert _status(s, peer) == status, peer


def test_star_allows_everyone(settings: Settings) -> None:
    s = dataclasses.replace(settings, metrics_allow="*")
    assert metrics_networks("*") is None
    assert _status(s, "203.0.113.50") == 200
    assert _status(s, "testclient") == 200


def test_forwarded_headers_are_not_read_by_the_app(settings: Settings) -> None:
    spoof = {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1", "Forwarded": "for=127.0.0.1"}
    assert _status(settings, "203.0.113.9", spoof) == 403
    assert _status(settings, "127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}) == 200


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("10.0.0.300", "'10.0.0.300'"),
        ("127.0.0.1,localhost", "'localhost'"),
        ("10.0.0.1/8", "'10.0.0.1/8'"),  # host bits set: refused, not widened
        ("10.0.0.0/33", "'10.0.0.0/33'"),
        ("any", "'any'"),
        ("*,10.0.0.0/8", "'*'"),  # * stands alone
        (",", "lists no address"),
    ],
)
def test_bad_entries_are_config_errors_naming_them(value: str, named: str) -> None:
    with pytest.raises(ConfigError, match="CYNIC_METRICS_ALLOW") as err:
        Settings.from_env({"CYNIC_METRICS_ALLOW": value})
    assert named in str(err.value)


def test_a_bad_entry_stops_the_node_at_start(tmp_path: Path) -> None:
    env = node_env("bad", tmp_path, "mem://", {"CYNIC_METRICS_ALLOW": "10.0.0.0/8,10.0.0.x"})
    done = subprocess.run(
        [sys.executable, "-m", "cynic_node"], env=env, capture_output=True, timeout=30, check=False
    )
    assert done.returncode != 0
    assert b"CYNIC_METRICS_ALLOW: '10.0.0.x'" in done.stderr


def _get(node: NodeProcess, source: str, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", "/metrics", headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def test_behind_uvicorn_proxy_headers(
    start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    """The node as deployed: uvicorn --proxy-headers, trusting X-Forwarded-For from the load
    balancer only (here 127.0.0.1, the role's default). uvicorn, not the app, decides the peer:
    the nearest hop that is not a trusted proxy."""
    node = start_node(
        "proxied",
        "mem://",
        tmp_path / "home",
        {"SURREAL_USER": "", "FORWARDED_ALLOW_IPS": "127.0.0.1"},
    )
    assert _get(node, "127.0.0.1", {}) == 200  # a scraper on the node's host
    # Through a load balancer on this host: nginx appends the outside client's address, so the
    # balancer being local does not make everyone local ...
    assert _get(node, "127.0.0.1", {"X-Forwarded-For": "203.0.113.7"}) == 403
    # ... and a client's own X-Forwarded-For entry, left of the one nginx appends, is not used.
    assert _get(node, "127.0.0.1", {"X-Forwarded-For": "127.0.0.1, 203.0.113.7"}) == 403
    # A peer that is not a trusted proxy (127.0.0.2: loopback, but not in either list) cannot
    # claim to be anyone else.
    assert _get(node, "127.0.0.2", {}) == 403
    assert _get(node, "127.0.0.2", {"X-Forwarded-For": "127.0.0.1"}) == 403
