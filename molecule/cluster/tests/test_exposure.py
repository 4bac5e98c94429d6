"""What answers, seen from a client and from each tier: TLS at both ends, /metrics, and the firewall.

The client is this controller, on the scenario's network as any machine of the private network would be
(172.29.42.1, the bridge's gateway). The firewall role is on in molecule.yml, so what the bind addresses
alone would let through (any machine of the private network reaching SurrealDB) is dropped too.
"""
from __future__ import annotations

import os
import re
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import ADDRESS, APP1, APP2, APPS, DATA, INSTANCES, LB, record

testinfra_hosts = [f"ansible://{LB}"]

CA = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "test-ca" / "ca.crt"
NGINX_PORTS = {80, 443}


def tcp_open(address: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:  # refused, or dropped by the firewall (timeout)
        return False


def open_from(host, address: str, port: int) -> bool:
    """Whether `host` completes a TCP connection to address:port (3 s)."""
    probe = host.run(
        "python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)' %s %s",
        address, str(port))
    return probe.rc == 0


def listening_ports(host) -> set[int]:
    """TCP ports the host listens on, loopback-only sockets left out."""
    ports = set()
    for line in host.check_output("ss -ltnH").splitlines():
        local = line.split()[3]
        address, port = local.rsplit(":", 1)
        if address.strip("[]") not in ("127.0.0.1", "::1") and not address.startswith("127."):
            ports.add(int(port))
    return ports


def test_a_client_reaches_nginx_and_nothing_else(cluster):
    seen = {}
    for name in ADDRESS:
        for port in sorted(listening_ports(cluster[name]) | (NGINX_PORTS if name == LB else set())):
            seen[f"{name}:{port}"] = tcp_open(ADDRESS[name], port)
    record("open to a client", seen)
    opened = {key for key, is_open in seen.items() if is_open}
    assert opened == {f"{LB}:{port}" for port in NGINX_PORTS}, seen
    # The probe can see an open port: the services behind the firewall do listen (on their private address).
    assert f"{DATA}:8000" in seen and f"{APP1}:8001" in seen, seen


# (service address, port) -> the hosts that may connect; every other host of the scenario must not.
NEEDS = {
    (ADDRESS[DATA], 8000): set(APPS),  # SurrealDB: the instances
    (ADDRESS[DATA], 11434): set(APPS),  # Ollama: the instances
    (ADDRESS[LB], 11434): set(APPS),  # the second Ollama: the instances
    **{(ADDRESS[app], port): {LB} for app in APPS for port in INSTANCES[app].values()},  # instances: nginx
}


@pytest.mark.parametrize("target", sorted(NEEDS), ids=lambda t: f"{t[0]}:{t[1]}")
def test_each_service_answers_only_the_hosts_that_need_it(cluster, target):
    address, port = target
    owner = next(name for name, a in ADDRESS.items() if a == address)
    outcome = {name: open_from(cluster[name], address, port) for name in ADDRESS if name != owner}
    record(f"who reaches {address}:{port}", outcome)
    assert {name for name, is_open in outcome.items() if is_open} == NEEDS[target], outcome


def test_the_firewall_is_the_roles_own_table_loaded_at_boot(cluster):
    for name in ADDRESS:
        table = cluster[name].check_output("nft list table inet cynic_cluster")
        assert re.search(r"type filter hook input priority \S+; policy drop;", table), (name, table)
        assert cluster[name].service("cynic-firewall").is_enabled, name


def test_https_at_the_load_balancer_verifies_against_the_test_ca():
    context = ssl.create_default_context(cafile=str(CA))
    with urllib.request.urlopen(f"https://{ADDRESS[LB]}/health", context=context, timeout=10) as answer:
        assert answer.status == 200
    # An old protocol is refused.
    legacy = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    legacy.load_verify_locations(str(CA))
    legacy.minimum_version = legacy.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, urllib.error.URLError, OSError)):
        urllib.request.urlopen(f"https://{ADDRESS[LB]}/health", context=legacy, timeout=10)


def test_metrics_never_reach_a_client_through_nginx():
    context = ssl.create_default_context(cafile=str(CA))
    for url in (f"http://{ADDRESS[LB]}/metrics", f"https://{ADDRESS[LB]}/metrics", f"http://{ADDRESS[LB]}/metrics/x"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, context=context if url.startswith("https") else None, timeout=10)
        assert refused.value.code == 404, url


def test_metrics_answer_the_load_balancer_and_refuse_other_addresses(cluster):
    lb, app = cluster[LB], cluster[APP1]
    url = f"http://{ADDRESS[APP1]}:{INSTANCES[APP1]['1']}/metrics"
    assert lb.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {url}") == "200"
    # From the app host itself, at its private address: a peer not in cynic_metrics_allow.
    assert app.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {url}") == "403"
    # On the app host's loopback (allowed by default) nothing listens: the instances bind the private address only.
    assert app.run(f"curl -s -m 3 http://127.0.0.1:{INSTANCES[APP1]['1']}/metrics").rc != 0
    assert cluster[APP2].run(f"curl -s -m 3 -o /dev/null {url}").rc != 0  # dropped by the firewall


def test_surrealdb_speaks_only_tls(cluster):
    app = cluster[APP1]
    ok = app.run(f"curl -s -o /dev/null -w '%{{http_code}}' --cacert /etc/cynic/surreal-ca.pem "
                 f"https://{ADDRESS[DATA]}:8000/health")
    assert ok.stdout == "200", ok
    # Without the CA the certificate is not trusted; plain HTTP gets no HTTP answer.
    assert app.run(f"curl -s -m 5 https://{ADDRESS[DATA]}:8000/health").rc == 60
    assert app.run(f"curl -s -m 5 -o /dev/null -w '%{{http_code}}' http://{ADDRESS[DATA]}:8000/health").stdout != "200"
