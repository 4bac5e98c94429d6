# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""Shared fixtures of the unit tests.

* Makes ``ansible_collections.cynic.cluster`` importable when pytest runs straight from the checkout
  (``python -m pytest tests/unit``): a temporary ``ansible_collections/cynic/cluster`` symlink to the
  repository is put on ``sys.path``. Under ``ansible-test units`` the collection is already importable
  and nothing is done.
* ``http_server``: a local aiohttp server with known behaviour on 127.0.0.1 and a free port, running in
  its own thread and event loop, so that the load generator under test keeps its own.
* ``run_playbook``: ansible-playbook on a play written for the test, against this machine.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _make_collection_importable():
    try:
        if importlib.util.find_spec('ansible_collections.cynic.cluster') is not None:
            return None
    except ImportError:
        pass
    top = tempfile.mkdtemp(prefix='cynic-unit-')
    os.makedirs(os.path.join(top, 'ansible_collections', 'cynic'))
    os.symlink(REPO_ROOT, os.path.join(top, 'ansible_collections', 'cynic', 'cluster'))
    sys.path.insert(0, top)
    for name in list(sys.modules):  # forget a cached ansible_collections without our path
        if name == 'ansible_collections':
            del sys.modules[name]
    return top


_LINK_DIR = _make_collection_importable()


def pytest_unconfigure(config):  # pylint: disable=unused-argument
    if _LINK_DIR:
        shutil.rmtree(_LINK_DIR, ignore_errors=True)


class TestServer(object):
    """An aiohttp application served from a background thread.

    ``stats`` counts requests, the in-flight peak, the bodies and header values seen, for assertions.
    """

    __test__ = False  # not a test class

    def __init__(self, routes):
        self.routes = routes
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name='test-http-server', daemon=True)
        self.ready = threading.Event()
        self.port = None
        self.runner = None
        self.error = None
        self.stats = {'requests': 0, 'in_flight': 0, 'peak_in_flight': 0, 'bodies': [], 'headers': []}

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self.port

    def _serve(self):
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except Exception as exc:  # pylint: disable=broad-except
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    async def _start(self):
        from aiohttp import web

        @web.middleware
        async def count(request, handler):
            self.stats['requests'] += 1
            self.stats['in_flight'] += 1
            self.stats['peak_in_flight'] = max(self.stats['peak_in_flight'], self.stats['in_flight'])
            try:
                return await handler(request)
            finally:
                self.stats['in_flight'] -= 1

        app = web.Application(middlewares=[count])
        for method, path, handler in self.routes:
            app.router.add_route(method, path, handler)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, '127.0.0.1', 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def start(self):
        self.thread.start()
        self.ready.wait(10)
        if self.error is not None:
            raise self.error
        return self

    def stop(self):
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture
def http_server():
    """Factory: ``http_server([(method, path, async handler(server, request)), ...])`` -> started TestServer."""
    servers = []

    def factory(routes):
        server = TestServer([])
        server.routes = [(method, path, _bind(handler, server)) for method, path, handler in routes]
        servers.append(server.start())
        return server

    yield factory
    for server in servers:
        server.stop()


def _bind(handler, server):
    async def bound(request):
        return await handler(server, request)
    return bound


@pytest.fixture
def free_port():
    """A port on 127.0.0.1 that was free a moment ago, for a server the test starts itself."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture
def closed_port():
    """A port on 127.0.0.1 that refuses connections for the whole test.

    Bound but never listening: connects get ECONNREFUSED, and the kernel cannot hand the
    port to a server the test starts later (released at once, it once did, and the
    "closed" port answered 503).
    """
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    yield sock.getsockname()[1]
    sock.close()


class AnsibleExitJson(Exception):
    """exit_json was called."""


class AnsibleFailJson(Exception):
    """fail_json was called."""


@pytest.fixture
def run_module(monkeypatch):
    """``run_module(main, args) -> (result, failed)``: run a module's main() with
    ``ansible.module_utils.testing.patch_module_args`` and capture exit_json/fail_json."""
    from ansible.module_utils import basic
    from ansible.module_utils.testing import patch_module_args

    def exit_json(self, **kwargs):  # pylint: disable=unused-argument
        kwargs.setdefault('changed', False)
        raise AnsibleExitJson(kwargs)

    def fail_json(self, msg, **kwargs):  # pylint: disable=unused-argument
        kwargs['failed'] = True
        kwargs['msg'] = msg
        raise AnsibleFailJson(kwargs)

    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', exit_json)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', fail_json)

    def run(main, args):
        with patch_module_args(args):
            try:
                main()
            except AnsibleExitJson as exc:
                return exc.args[0], False
            except AnsibleFailJson as exc:
                return exc.args[0], True
        raise AssertionError('the module returned without exit_json or fail_json')

    return run


@pytest.fixture
def run_playbook(tmp_path):
    """``run_playbook(play, inventory=None, *extra) -> stdout``: write the play (YAML text) and the
    inventory (YAML text; None: localhost over the local connection) into tmp_path and run them with
    this interpreter's ansible-playbook, hosts using this Python. A failing play fails the test."""
    playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    env = dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable)

    def run(play, inventory=None, *extra):
        (tmp_path / 'play.yml').write_text(play)
        if inventory is None:
            target = ['-i', 'localhost,', '-c', 'local']
        else:
            (tmp_path / 'inventory.yml').write_text(inventory)
            target = ['-i', str(tmp_path / 'inventory.yml')]
        proc = subprocess.run([playbook, *target, *extra, str(tmp_path / 'play.yml')],
                              capture_output=True, text=True, cwd=tmp_path, env=env, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:]
        return proc.stdout

    return run
