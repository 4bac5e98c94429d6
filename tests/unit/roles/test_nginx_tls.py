# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""nginx_lb's HTTPS listener and its /metrics block, run for real: a test CA (root, intermediate, server
certificate for lb.cynic.test and 127.0.0.1) made here with `cryptography`, the role's nginx.conf rendered
with TLS on through ansible-playbook, and the nginx of NGINX_BIN started on two free local ports (plain and
TLS) in front of tiny upstream servers. Clients verify the chain against the root only.

Checked: HTTPS through to an upstream; TLS 1.2 and 1.3 accepted, TLS 1.1 and CBC ciphers refused (with a
control showing that the probes can speak them); HTTP/2 by ALPN, with a real HTTP/2 exchange (also under
cell_affinity, whose hash needs the body in memory); WebSocket over TLS; the redirect on (301 with the right
Location, /health kept plain, HSTS) and off (plain HTTP still proxies, no HSTS); /metrics 404 on both
listeners; the template's locations written once for both; and the role's refusal of half a TLS set-up
before the host changes."""

from __future__ import annotations

import asyncio
import datetime
import http.client
import ipaddress
import os
import re
import socket
import ssl
import struct
import subprocess
import threading
import warnings

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from test_cynic_other_builds import play
from test_nginx_cell_affinity import INVENTORY, ROLE, Balancer, Upstream, nginx_binary, render

HOST = 'lb.cynic.test'
TLS_DIR = '/etc/nginx/cynic-tls'
# Mozilla's intermediate TLS 1.2 ciphers (guidelines 6.0), as the template writes them.
INTERMEDIATE = ['ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384',
                'ECDHE-RSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-RSA-CHACHA20-POLY1305']
METRICS_PATHS = ['/metrics', '/metrics/', '/metrics/anything', '/metrics?format=json', '/%6Detrics', '//metrics',
                 '/ws/../metrics', '/METRICS']


# --- a test CA --------------------------------------------------------------------------------------------

class Pki(object):
    """Root CA -> intermediate CA -> server certificate; ``chain`` holds the server's certificate and the
    intermediate (what nginx_lb_tls_certificate names), ``key`` its key, ``ca`` the root alone."""

    def __init__(self, directory):
        self.directory = directory
        now = datetime.datetime.now(datetime.timezone.utc)
        root_key, inter_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _key in range(3))
        root = self._cert('CYNIC test root CA', root_key, 'CYNIC test root CA', root_key, now, path_length=1)
        inter = self._cert('CYNIC test intermediate CA', inter_key, 'CYNIC test root CA', root_key, now, path_length=0)
        leaf = self._cert(HOST, leaf_key, 'CYNIC test intermediate CA', inter_key, now)
        pem = serialization.Encoding.PEM
        self.ca = directory / 'ca.pem'
        self.ca.write_bytes(root.public_bytes(pem))
        self.chain = directory / 'chain.pem'
        self.chain.write_bytes(leaf.public_bytes(pem) + inter.public_bytes(pem))
        self.key = directory / 'key.pem'
        self.key.write_bytes(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self.key.chmod(0o600)

    @staticmethod
    def _cert(subject, key, issuer, issuer_key, now, path_length=None):
        ca = subject != HOST
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                                                data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                                crl_sign=ca, encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                  critical=False))
        if not ca:
            builder = (builder
                       .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST),
                                                                   x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]),
                                      critical=False)
                       .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
        return builder.sign(issuer_key, hashes.SHA256())

    def client(self, alpn=None):
        """A client context that trusts the test root only and checks the host name."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if alpn:
            context.set_alpn_protocols(alpn)
        return context


def probe_context(version, ciphers='ALL:@SECLEVEL=0'):
    """A client that offers only this protocol version (and these TLS 1.2-and-older ciphers), and checks nothing."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)  # TLSVersion.TLSv1_1
        context.minimum_version = context.maximum_version = getattr(ssl.TLSVersion, version)
    context.set_ciphers(ciphers)
    return context


def handshake(port, context, server_hostname=HOST):
    """(protocol version, cipher) of a TLS handshake with 127.0.0.1:port."""
    with socket.create_connection(('127.0.0.1', port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as sock:
            return sock.version(), sock.cipher()[0]


# --- the load balancer with TLS ---------------------------------------------------------------------------

def free_ports(count):
    socks = [socket.socket() for _sock in range(count)]
    try:
        for sock in socks:
            sock.bind(('127.0.0.1', 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp('pki'))


@pytest.fixture(scope='module')
def nginx():
    found = nginx_binary()
    if found is None:
        pytest.skip('no nginx binary (set NGINX_BIN, or make .cache/nginx/usr/sbin/nginx) to run the load balancer')
    # What the role's "Find nginx's version" task registers: the template writes the HTTP/2 form of this nginx.
    version = subprocess.run([found, '-v'], capture_output=True, text=True, check=True).stderr
    return found, version


@pytest.fixture(scope='module')
def start_tls_lb(tmp_path_factory, pki, nginx):
    """``start_tls_lb(upstream addresses, **role_vars) -> Balancer`` with ``port`` (plain), ``tls_port`` and
    ``rendered`` (the role's nginx.conf as written to a host): TLS on, with the test CA's chain and key."""
    binary, version = nginx
    started = []

    def start(addresses, **role_vars):
        workdir = tmp_path_factory.mktemp('tls-lb')
        port, tls_port = free_ports(2)
        variables = {'nginx_lb_tls_certificate': str(pki.chain), 'nginx_lb_tls_key': str(pki.key),
                     'nginx_lb_listen_port': port, 'nginx_lb_https_port': tls_port,
                     'nginx_lb_upstream_servers': list(addresses), '__nginx_lb_nginx_v': {'stderr': version}}
        variables.update(role_vars)
        text = render(workdir, variables)
        local = (text.replace(TLS_DIR + '/cynic.crt', str(pki.chain)).replace(TLS_DIR + '/cynic.key', str(pki.key)))
        local = re.sub(r'\blisten %d ssl\b' % tls_port, 'listen 127.0.0.1:%d ssl' % tls_port, local)
        balancer = Balancer(local, workdir / 'prefix', binary)
        started.append(balancer)
        balancer.start(port)
        balancer.tls_port = tls_port
        balancer.rendered = text
        socket.create_connection(('127.0.0.1', tls_port), timeout=5).close()  # bound with the plain port
        return balancer

    yield start
    for balancer in started:
        balancer.stop()


@pytest.fixture(scope='module')
def upstreams():
    servers = [Upstream('s%d' % i).start() for i in (1, 2, 3)]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope='module')
def tls_lb(start_tls_lb, upstreams):
    """TLS on, redirect off; HSTS asked for, which needs the redirect: never sent."""
    return start_tls_lb([u.address for u in upstreams], nginx_lb_hsts=600)


@pytest.fixture(scope='module')
def redirect_lb(start_tls_lb, upstreams):
    return start_tls_lb([u.address for u in upstreams], nginx_lb_http_redirect=True, nginx_lb_hsts=600)


def request(balancer, path, tls=False, method='GET', body=None, headers=None, context=None):
    """(status, headers, body) of one request to the plain or the TLS listener."""
    if tls:
        conn = http.client.HTTPSConnection('127.0.0.1', balancer.tls_port, timeout=10, context=context)
    else:
        conn = http.client.HTTPConnection('127.0.0.1', balancer.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read().decode()
    finally:
        conn.close()


# --- a minimal HTTP/2 client (no h2 package here): one request on stream 1 --------------------------------

H2_PREFACE = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'
# :status in nginx's answers: an index of HPACK's static table, or index 8's name with 3 raw digits.
H2_STATUS = {0x88: 200, 0x89: 204, 0x8a: 206, 0x8b: 304, 0x8c: 400, 0x8d: 404, 0x8e: 500}


def _hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out, value = [first | limit], value - limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    return bytes(out + [value])


def _hpack_literal(name_index, value):
    """A header field without indexing, its name from the static table, its value as raw octets."""
    value = value.encode()
    return _hpack_int(name_index, 4) + _hpack_int(len(value), 7) + value


def _h2_frame(kind, flags, stream, payload):
    return struct.pack('>I', len(payload))[1:] + bytes([kind, flags]) + struct.pack('>I', stream) + payload


def _h2_read(sock):
    def exactly(count):
        data = b''
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise AssertionError('the HTTP/2 connection closed')
            data += chunk
        return data
    head = exactly(9)
    length = struct.unpack('>I', b'\0' + head[:3])[0]
    return head[3], head[4], struct.unpack('>I', head[5:9])[0] & 0x7fffffff, exactly(length)


def h2_request(port, context, path, body=None):
    """(status, body) of one HTTP/2 request (GET, or POST with a body) over TLS with ALPN h2."""
    with socket.create_connection(('127.0.0.1', port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=HOST) as sock:
            assert sock.selected_alpn_protocol() == 'h2', sock.selected_alpn_protocol()
            block = bytes([0x83 if body else 0x82, 0x87]) + _hpack_literal(4, path) + _hpack_literal(1, HOST)
            if body:
                block += _hpack_literal(28, str(len(body))) + _hpack_literal(31, 'application/json')
            frames = _h2_frame(4, 0, 0, b'') + _h2_frame(1, 0x4 | (0 if body else 0x1), 1, block)
            if body:
                frames += _h2_frame(0, 0x1, 1, body.encode())
            sock.sendall(H2_PREFACE + frames)
            status, data = None, b''
            while True:
                kind, flags, stream, payload = _h2_read(sock)
                if kind == 4 and not flags & 0x1:  # the server's SETTINGS: acknowledge
                    sock.sendall(_h2_frame(4, 0x1, 0, b''))
                elif kind in (3, 7):  # RST_STREAM, GOAWAY
                    raise AssertionError('HTTP/2 frame %d: %r' % (kind, payload))
                elif kind == 1 and stream == 1:
                    status = H2_STATUS.get(payload[0]) or int(payload[2:5])
                elif kind == 0 and stream == 1:
                    data += payload
                if stream == 1 and kind in (0, 1) and flags & 0x1:
                    return status, data.decode()


# --- the template ------------------------------------------------------------------------------------------

def servers(text):
    """The rendered server blocks: [plain, TLS]."""
    return ['    server {\n' + block.split('\n    }\n', 1)[0] for block in text.split('\n    server {\n')[1:]]


def test_the_template_writes_each_location_once():
    with open(os.path.join(ROLE, 'templates', 'nginx.conf.j2')) as template:
        source = template.read()
    for location in ('location / {', 'location = /health {', 'location /ws {', 'location ~* ^/metrics(/|$) {'):
        assert source.count(location) == 1 + (location == 'location / {'), location  # / has its redirect form


def test_both_listeners_serve_the_same_locations(tls_lb):
    plain, tls = servers(tls_lb.rendered)
    assert 'listen %d default_server;' % tls_lb.port in plain and 'ssl' not in plain
    tls_head, tls_body = tls.split('        ssl_session_tickets off;\n\n', 1)
    plain_body = plain.split('        listen %d default_server;\n' % tls_lb.port, 1)[1]
    assert tls_body == plain_body
    for directive in ('ssl_protocols TLSv1.2 TLSv1.3;', 'ssl_ciphers %s;' % ':'.join(INTERMEDIATE),
                      'ssl_prefer_server_ciphers off;', 'ssl_session_cache shared:cynic_tls:10m;',
                      'ssl_session_timeout 1d;', 'ssl_session_tickets off;',
                      'ssl_certificate %s/cynic.crt;' % TLS_DIR, 'ssl_certificate_key %s/cynic.key;' % TLS_DIR):
        assert '        %s\n' % directive in tls_head + '        ssl_session_tickets off;\n', directive
    assert 'Strict-Transport-Security' not in tls_lb.rendered  # asked for, but the redirect is off


@pytest.mark.parametrize('version, form', [('nginx version: nginx/1.22.1\n', 'parameter'),
                                           ('nginx version: nginx/1.26.3\n', 'directive'),
                                           ('', 'parameter')])  # --check on a host without nginx yet
def test_http2_is_written_in_the_form_of_the_hosts_nginx(tmp_path, pki, version, form):
    text = render(tmp_path, {'nginx_lb_tls_certificate': str(pki.chain), 'nginx_lb_tls_key': str(pki.key),
                             'nginx_lb_upstream_servers': ['127.0.0.1:8001'], '__nginx_lb_nginx_v': {'stderr': version}})
    tls = servers(text)[1]
    if form == 'directive':  # nginx 1.25.1 and later (Debian 13: 1.26)
        assert '        listen 443 ssl default_server;\n        http2 on;\n' in tls
    else:  # before 1.25.1 (Debian 12: 1.22), which does not know the directive
        assert '        listen 443 ssl http2 default_server;\n' in tls and 'http2 on;' not in tls


def test_without_tls_there_is_one_plain_server(tmp_path):
    text = render(tmp_path, {'nginx_lb_upstream_servers': ['127.0.0.1:8001'], 'nginx_lb_http_redirect': False})
    assert len(servers(text)) == 1 and 'ssl' not in text and 'http2' not in text and 'return 301' not in text
    assert 'location ~* ^/metrics(/|$) {\n            return 404;\n        }' in text


def test_a_redirect_to_port_443_names_no_port(tmp_path, pki):
    text = render(tmp_path, {'nginx_lb_tls_certificate': str(pki.chain), 'nginx_lb_tls_key': str(pki.key),
                             'nginx_lb_upstream_servers': ['127.0.0.1:8001'], 'nginx_lb_http_redirect': True})
    assert 'location / {\n            return 301 https://$host$request_uri;\n        }' in servers(text)[0]


# --- HTTPS for real ------------------------------------------------------------------------------------------

def test_https_answers_through_to_an_upstream(tls_lb, upstreams, pki):
    by_name = {u.name: u.address for u in upstreams}
    names = set()
    for _attempt in range(6):
        status, headers, body = request(tls_lb, '/judge', tls=True, method='POST', body='{}', context=pki.client())
        assert status == 200 and headers['X-Instance-ID'] == by_name[body], (status, dict(headers), body)
        names.add(body)
    assert len(names) > 1, names
    assert request(tls_lb, '/health', tls=True, context=pki.client())[0] == 200


def test_the_chain_verifies_against_the_root_only(tls_lb, pki):
    assert handshake(tls_lb.tls_port, pki.client())[0] in ('TLSv1.2', 'TLSv1.3')  # by name (lb.cynic.test)
    with pytest.raises(ssl.SSLCertVerificationError):  # the system's CAs do not know the test root
        handshake(tls_lb.tls_port, ssl.create_default_context())
    with pytest.raises(ssl.SSLCertVerificationError):  # nor is it any other name
        handshake(tls_lb.tls_port, pki.client(), server_hostname='other.cynic.test')


@pytest.mark.parametrize('version', ['TLSv1_2', 'TLSv1_3'])
def test_tls_1_2_and_1_3_are_accepted(tls_lb, pki, version):
    context = pki.client()
    context.minimum_version = context.maximum_version = getattr(ssl.TLSVersion, version)
    protocol, cipher = handshake(tls_lb.tls_port, context)
    assert protocol == version.replace('_', '.')
    if version == 'TLSv1_2':
        assert cipher in INTERMEDIATE, cipher


@pytest.mark.parametrize('version, ciphers', [('TLSv1_1', 'ALL:@SECLEVEL=0'),
                                              ('TLSv1_2', 'ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA')])
def test_tls_1_1_and_cbc_ciphers_are_refused(tls_lb, version, ciphers):
    with pytest.raises(ssl.SSLError) as refused:
        handshake(tls_lb.tls_port, probe_context(version, ciphers))
    reason = str(refused.value)
    assert ('PROTOCOL_VERSION' if version == 'TLSv1_1' else 'HANDSHAKE_FAILURE') in reason.upper(), reason


@pytest.mark.parametrize('version, ciphers', [('TLSv1_1', 'ALL:@SECLEVEL=0'),
                                              ('TLSv1_2', 'ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA')])
def test_the_refused_probes_work_against_a_server_that_allows_them(pki, version, ciphers):
    """The refusals above are nginx's: the same probes complete a handshake with a lenient server."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(pki.chain), str(pki.key))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        server.minimum_version = ssl.TLSVersion.TLSv1_1
    server.set_ciphers('ALL:@SECLEVEL=0')
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen()

    def serve():
        conn, _addr = listener.accept()
        try:
            server.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        protocol, cipher = handshake(listener.getsockname()[1], probe_context(version, ciphers))
    finally:
        thread.join(10)
        listener.close()
    assert protocol == version.replace('_', '.')
    if version == 'TLSv1_2':
        assert cipher in ciphers.split(':'), cipher  # a CBC cipher


def test_http2_on_the_tls_listener(tls_lb, upstreams, pki):
    status, body = h2_request(tls_lb.tls_port, pki.client(alpn=['h2', 'http/1.1']), '/health')
    assert status == 200 and body in {u.name for u in upstreams}, (status, body)
    status, body = h2_request(tls_lb.tls_port, pki.client(alpn=['h2']), '/judge', body='{"content": "x"}')
    assert status == 200 and body in {u.name for u in upstreams}, (status, body)
    # An HTTP/1.1-only client (as the WebSocket clients are) still gets HTTP/1.1.
    with socket.create_connection(('127.0.0.1', tls_lb.tls_port), timeout=10) as raw:
        with pki.client(alpn=['http/1.1']).wrap_socket(raw, server_hostname=HOST) as sock:
            assert sock.selected_alpn_protocol() == 'http/1.1'


def test_cell_affinity_hashes_http2_bodies(start_tls_lb, upstreams, pki):
    """Over HTTP/2 the body reaches $request_body as well: each cell on one instance, the cells spread."""
    balancer = start_tls_lb([u.address for u in upstreams], nginx_lb_strategy='cell_affinity')
    seen = {}
    for i in range(12):
        cell = '{"content": "def f(): return %d", "reality": "CODE"}' % i
        for _send in range(3):
            status, body = h2_request(balancer.tls_port, pki.client(alpn=['h2']), '/judge', body=cell)
            assert status == 200, (status, body)
            seen.setdefault(cell, set()).add(body)
    assert all(len(names) == 1 for names in seen.values()), seen
    assert len(set().union(*seen.values())) >= 2, seen


def test_redirect_off_keeps_plain_http_serving(tls_lb, upstreams, pki):
    names = {u.name for u in upstreams}
    for method, path in (('GET', '/judge?cell=1'), ('POST', '/judge'), ('GET', '/health'), ('GET', '/ws/stream')):
        status, headers, body = request(tls_lb, path, method=method, body='{}' if method == 'POST' else None)
        assert status == 200 and body in names, (method, path, status, body)
        assert 'Strict-Transport-Security' not in headers
    assert 'Strict-Transport-Security' not in request(tls_lb, '/judge', tls=True, context=pki.client())[1]


def test_redirect_on_sends_plain_http_to_https(redirect_lb, upstreams, pki):
    location = 'https://%s:%d' % (HOST, redirect_lb.tls_port)
    for method, path, host in (('GET', '/judge?cell=1&x=%20y', HOST), ('POST', '/judge', HOST + ':80'),
                               ('GET', '/ws/stream', HOST), ('GET', '/', HOST), ('GET', '/healthz', HOST)):
        status, headers, body = request(redirect_lb, path, method=method, body='{}' if method == 'POST' else None,
                                        headers={'Host': host})
        assert status == 301 and headers['Location'] == location + path, (method, path, status, dict(headers))
        assert 'Strict-Transport-Security' not in headers  # meaningless (and ignored) over plain HTTP
    # /health stays plain: the role's own check, and probes without the CA.
    status, headers, body = request(redirect_lb, '/health', headers={'Host': HOST})
    assert status == 200 and body in {u.name for u in upstreams}, (status, body)
    status, headers, body = request(redirect_lb, '/judge', tls=True, method='POST', body='{}', context=pki.client())
    assert status == 200 and body in {u.name for u in upstreams}
    assert headers['Strict-Transport-Security'] == 'max-age=600'


@pytest.mark.parametrize('which', ['tls_lb', 'redirect_lb'])
@pytest.mark.parametrize('tls', [False, True], ids=['plain', 'tls'])
def test_metrics_is_404_on_both_listeners(request_fixture, upstreams, pki, which, tls):
    balancer = request_fixture(which)
    context = pki.client() if tls else None
    for path in METRICS_PATHS:
        status, _headers, body = request(balancer, path, tls=tls, context=context)
        assert status == 404 and 'nginx' in body, (path, status, body)  # nginx's own page, no instance asked
    # Nothing else changed: a path that only starts like it, and /health, still reach an instance.
    names = {u.name for u in upstreams}
    for path in ('/metricsx', '/health', '/judge/metrics'):
        status, _headers, body = request(balancer, path, tls=tls, context=context)
        if which == 'redirect_lb' and not tls and path != '/health':
            assert status == 301, (path, status)
        else:
            assert status == 200 and body in names, (path, status, body)


@pytest.fixture
def request_fixture(request):
    return request.getfixturevalue


def test_websocket_over_tls(start_tls_lb, http_server, pki):
    """wss:// through the TLS listener to an upstream WebSocket, which sees the upgrade and X-Forwarded-Proto https."""
    aiohttp = pytest.importorskip('aiohttp')
    from aiohttp import web

    async def stream(server, req):
        server.stats['headers'].append(dict(req.headers))
        ws = web.WebSocketResponse()
        await ws.prepare(req)
        async for message in ws:
            await ws.send_str('echo:' + message.data)
        return ws

    upstream = http_server([('GET', '/ws/stream', stream)])
    balancer = start_tls_lb(['127.0.0.1:%d' % upstream.port])

    async def exchange():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect('wss://127.0.0.1:%d/ws/stream' % balancer.tls_port, ssl=pki.client()) as ws:
                await ws.send_str('ping')
                first = await ws.receive(timeout=5)
                await ws.send_str('again')
                second = await ws.receive(timeout=5)
                return first.data, second.data

    assert asyncio.run(exchange()) == ('echo:ping', 'echo:again')
    headers = upstream.stats['headers'][-1]
    assert headers['Upgrade'].lower() == 'websocket' and headers['Connection'].lower() == 'upgrade', headers
    assert headers['X-Forwarded-Proto'] == 'https', headers


# --- the role refuses half a TLS set-up before the host changes ---------------------------------------------

ROLE_PLAY = """
- hosts: lb
  gather_facts: false
  check_mode: true
  roles:
    - role: cynic.cluster.nginx_lb
"""
TLS_TASK = 'Refuse an incomplete TLS set-up'


def tls_problem_cases(pki):
    return {
        'certificate without key': ({'nginx_lb_tls_certificate': str(pki.chain)},
                                    'nginx_lb_tls_certificate and nginx_lb_tls_key go together: set both (HTTPS on '
                                    'nginx_lb_https_port) or neither (plain HTTP only); only the certificate is set.'),
        'key without certificate': ({'nginx_lb_tls_key': str(pki.key)}, 'only the key is set.'),
        'a file not there': ({'nginx_lb_tls_certificate': str(pki.directory / 'missing.pem'),
                              'nginx_lb_tls_key': str(pki.key)},
                             'nginx_lb_tls_certificate (%s) is not a file on the controller.' % (pki.directory / 'missing.pem')),
        'redirect without TLS': ({'nginx_lb_http_redirect': True}, 'nginx_lb_http_redirect needs HTTPS'),
        'one port for both': ({'nginx_lb_tls_certificate': str(pki.chain), 'nginx_lb_tls_key': str(pki.key),
                               'nginx_lb_https_port': 80}, 'nginx_lb_https_port and nginx_lb_listen_port must differ (both 80).'),
    }


@pytest.mark.parametrize('case', ['certificate without key', 'key without certificate', 'a file not there',
                                  'redirect without TLS', 'one port for both'])
def test_an_incomplete_tls_set_up_fails_before_the_host_changes(tmp_path, pki, case):
    variables, message = tls_problem_cases(pki)[case]
    out = play(tmp_path, ROLE_PLAY, dict(variables, nginx_lb_upstream_servers=['127.0.0.1:8001']),
               inventory=INVENTORY, expect_failure=True)
    text = ' '.join(out.split())
    assert 'Validating arguments against arg spec' in text  # the spec accepts the values
    assert 'TASK [cynic.cluster.nginx_lb : %s]' % TLS_TASK in text
    assert message in text, out[-3000:]
    assert 'Install nginx from Debian' not in text and 'Copy the TLS' not in text
    assert 'changed=0' in text and 'failed=1' in text


CHECKS = {'hosts': 'lb', 'gather_facts': False, 'tasks': [
    {'ansible.builtin.include_vars': os.path.join(ROLE, 'defaults', 'main.yml')},
    {'ansible.builtin.include_vars': os.path.join(ROLE, 'vars', 'main.yml')},
]}


@pytest.mark.parametrize('tls', ['off', 'on', 'on with the redirect'])
def test_the_tls_check_passes_both_files_or_neither(tmp_path, pki, tls):
    with open(os.path.join(ROLE, 'tasks', 'main.yml')) as tasks:
        check = [task for task in yaml.safe_load(tasks) if task['name'] == TLS_TASK]
    assert len(check) == 1
    variables = {} if tls == 'off' else {'nginx_lb_tls_certificate': str(pki.chain), 'nginx_lb_tls_key': str(pki.key),
                                         'nginx_lb_http_redirect': tls == 'on with the redirect', 'nginx_lb_hsts': 300}
    play(tmp_path, yaml.safe_dump([dict(CHECKS, tasks=CHECKS['tasks'] + check)]), variables, inventory=INVENTORY)
