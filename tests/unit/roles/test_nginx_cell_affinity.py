# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""nginx_lb's cell_affinity strategy (docs/BALANCING.md), run for real: the role's nginx.conf, rendered through
ansible-playbook with the role's own variables, is started on a free local port in front of three tiny HTTP
servers that answer with their name and send no X-Instance-ID, so the X-Instance-ID that nginx adds is the
upstream address ($upstream_addr). Also: sticky together with cell_affinity is refused before the host changes."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import socket
import subprocess
import threading
import time

import pytest
import yaml
from test_cynic_other_builds import NGINX, REPO_ROOT, _nginx, play

ROLE = os.path.join(REPO_ROOT, 'roles', 'nginx_lb')
# `make .cache/nginx/usr/sbin/nginx` unpacks Debian's nginx there; NGINX_BIN or an installed nginx come first.
CACHED_NGINX = os.path.join(REPO_ROOT, '.cache', 'nginx', 'usr', 'sbin', 'nginx')
INVENTORY = {'all': {'hosts': {'lb': {'ansible_connection': 'local'}}}}
BUFFER_LINE = '        client_body_buffer_size 1m;\n'

# 30 distinct /judge cells, each sent 4 times.
BODIES = [json.dumps({'content': 'def f(): return %d' % i, 'reality': 'CODE', 'analysis': 'JUDGE'}) for i in range(30)]
SENDS = 4
# 200 KB bodies: above nginx's default client_body_buffer_size (16k), below client_max_body_size (1m).
LARGE_BODIES = [json.dumps({'content': '%02d' % i + 'x' * 200_000}) for i in range(20)]


def nginx_binary():
    found = _nginx()
    if found is None and os.access(CACHED_NGINX, os.X_OK):
        return CACHED_NGINX
    return found


def free_port():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


class Upstream(object):
    """A CYNIC stand-in: answers every GET and POST with its name (and no X-Instance-ID), one request per
    connection (HTTP/1.0), so that a stopped one holds no kept-alive connection that still answers."""

    def __init__(self, name):
        self.name = name
        self.port = 0
        self.server = None

    @property
    def address(self):
        return '127.0.0.1:%d' % self.port

    def start(self):
        name = self.name.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                self.send_response(200)
                self.send_header('Content-Type', 'text/plain')
                self.send_header('Content-Length', str(len(name)))
                self.end_headers()
                self.wfile.write(name)

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get('Content-Length') or 0))
                self.do_GET()

            def log_message(self, *args):  # pylint: disable=arguments-differ
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', self.port), Handler)  # the same port again
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, name='upstream-' + self.name, daemon=True).start()
        return self

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class Balancer(object):
    """The rendered nginx.conf, moved into a prefix of its own and started in the foreground."""

    def __init__(self, text, prefix, nginx):
        self.text = text
        self.prefix = prefix
        self.port = None
        self.proc = None
        self.nginx = nginx

    def start(self, port):
        prefix = self.prefix
        (prefix / 'logs').mkdir(parents=True)
        mime = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(self.nginx))), 'etc', 'nginx', 'mime.types')
        if not os.path.exists(mime):
            mime = str(prefix / 'mime.types')
            (prefix / 'mime.types').write_text('types { text/html html; }\n')
        temp_paths = ''.join('    %s_temp_path %s/%s;\n' % (kind, prefix, kind)
                             for kind in ('client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'))
        # Run as root (a container), the workers would be "nobody" and could not reach the temp paths.
        user = 'user root;\n' if os.geteuid() == 0 else ''
        local = (self.text.replace('user www-data;\n', user).replace('pid /run/nginx.pid;', 'pid %s/nginx.pid;' % prefix)
                 .replace('/etc/nginx/mime.types', mime).replace('/var/log/nginx/', '%s/logs/' % prefix)
                 .replace('http {\n', 'http {\n' + temp_paths, 1))
        # This port (the text may come from another balancer), and on the loopback only.
        local = re.sub(r'\blisten \d+ default_server;', 'listen 127.0.0.1:%d default_server;' % port, local)
        (prefix / 'nginx.conf').write_text(local)
        with open(prefix / 'stderr', 'w') as stderr:
            self.proc = subprocess.Popen([self.nginx, '-p', str(prefix), '-c', str(prefix / 'nginx.conf'), '-g', 'daemon off;'],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        self.port = port
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise AssertionError('nginx exited: %s' % (prefix / 'stderr').read_text())
            try:
                socket.create_connection(('127.0.0.1', port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def error_log(self):
        return (self.prefix / 'logs' / 'error.log').read_text()

    def send(self, body=None, path='/judge'):
        """One request; returns (status, X-Instance-ID, the name of the server that answered)."""
        conn = http.client.HTTPConnection('127.0.0.1', self.port, timeout=10)
        try:
            conn.request('GET' if body is None else 'POST', path, body=body, headers={'Content-Type': 'application/json'})
            resp = conn.getresponse()
            return resp.status, resp.getheader('X-Instance-ID'), resp.read().decode()
        finally:
            conn.close()


def render(workdir, variables):
    conf = workdir / 'nginx.conf'
    play(workdir, NGINX.format(root=REPO_ROOT, out=conf), extra_vars=variables, inventory=INVENTORY)
    return conf.read_text()


@pytest.fixture(scope='module')
def start_lb(tmp_path_factory):
    """``start_lb(upstreams, text=None, **role_vars) -> Balancer``: the role's nginx.conf for these upstreams
    (nginx_lb_upstream_servers) on a free port (nginx_lb_listen_port), or the given text, running."""
    nginx = nginx_binary()
    if nginx is None:
        pytest.skip('no nginx binary (set NGINX_BIN, or make .cache/nginx/usr/sbin/nginx) to run the load balancer')
    started = []

    def start(upstreams, text=None, **role_vars):
        workdir = tmp_path_factory.mktemp('lb')
        port = free_port()
        if text is None:
            text = render(workdir, dict(role_vars, nginx_lb_listen_port=port,
                                        nginx_lb_upstream_servers=[u.address for u in upstreams]))
        balancer = Balancer(text, workdir / 'prefix', nginx)
        started.append(balancer)
        return balancer.start(port)

    yield start
    for balancer in started:
        balancer.stop()


def start_upstreams():
    return [Upstream('s%d' % i).start() for i in (1, 2, 3)]


@pytest.fixture(scope='module')
def upstreams():
    servers = start_upstreams()
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope='module')
def affinity_lb(start_lb, upstreams):
    return start_lb(upstreams, nginx_lb_strategy='cell_affinity')


def where(balancer, upstreams, bodies, sends=SENDS, headers=None):
    """{body: set of upstream addresses that answered it}; every answer is a 200 whose X-Instance-ID names the
    server that answered (the last address tried). ``headers`` (a list) collects the X-Instance-IDs."""
    by_name = {u.name: u.address for u in upstreams}
    seen = {}
    for body in bodies:
        for _send in range(sends):
            status, instance, name = balancer.send(body)
            assert status == 200, (status, name)
            assert instance.split(', ')[-1] == by_name[name], (instance, name)
            if headers is not None:
                headers.append(instance)
            seen.setdefault(body, set()).add(by_name[name])
    return seen


def test_the_rendered_config_hashes_the_body_and_buffers_it(affinity_lb):
    text = affinity_lb.text
    upstream = text.split('    upstream cynic {\n', 1)[1].split('\n    }\n', 1)[0]
    assert '        hash $request_body consistent;\n' in upstream and 'least_conn;' not in upstream
    assert BUFFER_LINE in text and '        client_max_body_size 1m;\n' in text
    bodyless = text.split('    upstream cynic_any {\n', 1)[1].split('\n    }\n', 1)[0]
    assert bodyless.startswith('        least_conn;\n') and bodyless.count('server 127.0.0.1:') == 3
    assert 'location = /health {\n            proxy_pass http://cynic_any;' in text
    assert 'location /ws {' in text and text.split('location /ws {', 1)[1].count('proxy_pass http://cynic_any;') == 1
    assert 'location / {\n            proxy_pass http://cynic;' in text


def test_other_strategies_keep_one_upstream_and_the_default_body_buffer(tmp_path):
    text = render(tmp_path, {'nginx_lb_upstream_servers': ['127.0.0.1:8001']})
    assert 'cynic_any' not in text and 'client_body_buffer_size' not in text and '$request_body' not in text
    assert '        least_conn;\n' in text


def test_cell_affinity_sends_each_body_to_one_instance(affinity_lb, upstreams):
    seen = where(affinity_lb, upstreams, BODIES)
    assert all(len(addresses) == 1 for addresses in seen.values()), seen
    assert len(set().union(*seen.values())) >= 2, seen


def test_a_200_kb_body_is_hashed_from_memory(affinity_lb, upstreams):
    seen = where(affinity_lb, upstreams, LARGE_BODIES)
    assert all(len(addresses) == 1 for addresses in seen.values()), seen
    assert len(set().union(*seen.values())) >= 2, seen
    assert 'buffered to a temporary file' not in affinity_lb.error_log()


def test_without_the_body_buffer_a_200_kb_body_is_not_hashed(start_lb, affinity_lb, upstreams):
    """In a temporary file, the body leaves $request_body empty, a key that nginx does not hash: round robin."""
    assert BUFFER_LINE in affinity_lb.text
    unbuffered = start_lb(upstreams, text=affinity_lb.text.replace(BUFFER_LINE, ''))
    seen = where(unbuffered, upstreams, LARGE_BODIES)
    assert any(len(addresses) > 1 for addresses in seen.values()), seen
    assert 'a client request body is buffered to a temporary file' in unbuffered.error_log()
    assert all(len(addresses) == 1 for addresses in where(unbuffered, upstreams, BODIES[:10]).values())  # small ones still are


def test_least_conn_spreads_the_same_body(start_lb, upstreams):
    balancer = start_lb(upstreams, nginx_lb_strategy='least_conn')
    seen = where(balancer, upstreams, BODIES)
    assert any(len(addresses) > 1 for addresses in seen.values()), seen


def test_requests_without_a_body_are_spread(affinity_lb, upstreams):
    """/health and /ws go to cynic_any (least_conn); any other request without a body has an empty hash key,
    which nginx does not hash but hands round robin: none of them piles up on one instance."""
    by_name = {u.name: u.address for u in upstreams}
    for path in ('/health', '/ws/stream', '/version'):
        names = set()
        for _attempt in range(6):
            status, instance, name = affinity_lb.send(path=path)
            assert status == 200 and instance == by_name[name], (path, status, instance, name)
            names.add(name)
        assert len(names) > 1, (path, names)


def test_a_stopped_instance_gives_its_cells_away_and_gets_them_back(start_lb):
    servers = start_upstreams()
    try:
        balancer = start_lb(servers, nginx_lb_strategy='cell_affinity', nginx_lb_fail_timeout='1s')
        before = {body: addresses.pop() for body, addresses in where(balancer, servers, BODIES, 2).items()}
        victim = max(servers, key=lambda u: sum(1 for a in before.values() if a == u.address))
        moved = [body for body, address in before.items() if address == victim.address]
        victim.stop()
        headers = []
        during = where(balancer, servers, BODIES, 2, headers)  # every answer a 200 (where() checks it)
        # Tried first, until max_fails (3) failures take it out for fail_timeout: "<victim>, <next>".
        assert any(h.startswith(victim.address + ', ') for h in headers), headers
        for body, addresses in during.items():
            assert len(addresses) == 1, (body, addresses)
            if body in moved:
                assert addresses != {victim.address}, body
            else:
                assert addresses == {before[body]}, body  # consistent hashing: the others stay where they were
        victim.start()  # the same port again
        deadline = time.monotonic() + 10
        while True:  # back once fail_timeout (1 s) has passed since its last failure
            back = where(balancer, servers, moved, 1)
            if all(addresses == {victim.address} for addresses in back.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert all(addresses == {victim.address} for addresses in back.values()), back
    finally:
        for server in servers:
            server.stop()


ROLE_PLAY = """
- hosts: lb
  gather_facts: false
  check_mode: true
  roles:
    - role: cynic.cluster.nginx_lb
"""


def test_sticky_with_cell_affinity_fails_before_the_host_changes(tmp_path):
    out = play(tmp_path, ROLE_PLAY, {'nginx_lb_strategy': 'cell_affinity', 'nginx_lb_sticky': True,
                                     'nginx_lb_upstream_servers': ['127.0.0.1:8001']},
               inventory=INVENTORY, expect_failure=True)
    text = ' '.join(out.split())
    assert 'Validating arguments against arg spec' in text  # the spec accepts both values
    assert 'TASK [cynic.cluster.nginx_lb : Check that stickiness and cell affinity are not both asked for]' in text
    assert 'nginx_lb: nginx_lb_sticky and nginx_lb_strategy cell_affinity exclude each other' in text, out[-3000:]
    assert 'Set nginx_lb_sticky to false' in text
    assert 'Install nginx from Debian' not in text
    assert 'changed=0' in text and 'failed=1' in text


CHECKS = {'hosts': 'lb', 'gather_facts': False, 'tasks': [
    {'ansible.builtin.include_vars': os.path.join(ROLE, 'defaults', 'main.yml')},
    {'ansible.builtin.include_vars': os.path.join(ROLE, 'vars', 'main.yml')},
]}


@pytest.mark.parametrize('variables', [{'nginx_lb_strategy': 'cell_affinity'},
                                       {'nginx_lb_strategy': 'least_conn', 'nginx_lb_sticky': True}])
def test_the_role_checks_pass_cell_affinity_alone_and_sticky_with_another_strategy(tmp_path, variables):
    with open(os.path.join(ROLE, 'tasks', 'main.yml')) as tasks:
        checks = [task for task in yaml.safe_load(tasks) if task['name'].startswith('Check')]
    assert len(checks) == 2
    text = yaml.safe_dump([dict(CHECKS, tasks=CHECKS['tasks'] + checks)])
    play(tmp_path, text, dict(variables, nginx_lb_upstream_servers=['127.0.0.1:8001']), inventory=INVENTORY)
