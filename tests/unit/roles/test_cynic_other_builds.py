# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The cynic role running another build than the node (docs/OTHER-BUILDS.md), on the controller: the files it
renders for the default and for a kernel-like configuration, its port-collision check, its Requires-Python
check against the host's interpreter, and nginx naming the upstream for a build that sends no X-Instance-ID."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ROLE = os.path.join(REPO_ROOT, 'roles', 'cynic')

INVENTORY = {'all': {'children': {
    'cynic_db': {'hosts': {'data1': {'ansible_host': '10.0.0.11', 'surrealdb_bind_address': '0.0.0.0:8000'}}},
    'cynic_llm': {'hosts': {'data1': {}}},
    'cynic_app': {'hosts': {'app1': {'ansible_connection': 'local'}}},
}}}

# What a molecule scenario for the public kernel sets (docs/OTHER-BUILDS.md).
KERNEL_VARS = {
    'cynic_package_source': '/work/shared/cynic-kernel/cynic-kernel-e448af12.tar.gz',
    'cynic_asgi_app': 'cynic.api.server:app',
    'cynic_python': 'python3.13',
    'cynic_requirement_overrides': ['surrealdb>=1,<3', 'ollama==0.4.6'],
    'cynic_instances': [{'id': 1, 'port': 8001}, {'id': 2, 'port': 8002}],
    'cynic_port_env': 'CYNIC_LISTEN_PORT',
    'cynic_instance_env': {'PORT': '-1'},
    'cynic_instance_id_env': '',
    'cynic_env_omit': ['SURREAL_URL'],
    'cynic_extra_env': {'LOG_LEVEL': 'INFO', 'CYNIC_AUTOBENCH': '0'},
    'cynic_health_json': {'status': 'alive'},
    'cynic_health_id_field': '',
    'cynic_restart_sec': 5,
    'cynic_start_limit_interval_sec': 600,
    'cynic_start_limit_burst': 60,
}

RENDER = """
- hosts: app1
  gather_facts: false
  tasks:
    - ansible.builtin.include_vars: {role}/defaults/main.yml
    - ansible.builtin.include_vars: {role}/vars/main.yml
    - ansible.builtin.template: {{src: "{role}/templates/cynic@.service.j2", dest: "{out}/cynic@.service", mode: "0644"}}
    - ansible.builtin.template: {{src: "{role}/templates/cynic.env.j2", dest: "{out}/cynic.env", mode: "0600"}}
    - ansible.builtin.template: {{src: "{role}/templates/instance.env.j2", dest: "{out}/{{{{ item.id }}}}.env", mode: "0644"}}
      loop: "{{{{ cynic_instances }}}}"
"""


def play(tmp_path, text, extra_vars=None, inventory=None, expect_failure=False):
    """ansible-playbook on this machine; returns its output. Fails the test unless it ends as expected."""
    (tmp_path / 'play.yml').write_text(text)
    (tmp_path / 'inventory.yml').write_text(json.dumps(INVENTORY if inventory is None else inventory))
    argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', str(tmp_path / 'inventory.yml')]
    if extra_vars is not None:
        (tmp_path / 'extra.json').write_text(json.dumps(extra_vars))
        argv += ['-e', '@' + str(tmp_path / 'extra.json')]
    env = dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR='1')
    proc = subprocess.run(argv + [str(tmp_path / 'play.yml')], capture_output=True, text=True, cwd=tmp_path,
                          env=env, check=False)
    assert (proc.returncode != 0) == expect_failure, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout


def render(tmp_path, extra_vars=None):
    out = tmp_path / 'out'
    out.mkdir()
    play(tmp_path, RENDER.format(role=ROLE, out=out), extra_vars)
    return {p.name: p.read_text() for p in out.iterdir()}


def body(text):
    """A rendered file without its ansible_managed header."""
    return ''.join(line + '\n' for line in text.splitlines() if not line.startswith('#'))


def test_the_default_renders_the_node_as_before(tmp_path):
    files = render(tmp_path)
    unit = files['cynic@.service']
    assert ' --port ${PORT} ' in unit
    assert 'Restart=on-failure\nRestartSec=1\n' in unit
    assert 'StartLimitIntervalSec=60\nStartLimitBurst=30\n' in unit.split('[Service]')[0]  # [Unit] settings
    assert 'ReadWritePaths=/var/lib/cynic\n' in unit  # covers each instance's state directory below it
    assert body(files['1.env']) == 'INSTANCE_ID=app1-1\nPORT=8001\nHOME="/var/lib/cynic/instances/1"\n'
    assert body(files['3.env']) == 'INSTANCE_ID=app1-3\nPORT=8003\nHOME="/var/lib/cynic/instances/3"\n'
    names = [line.split('=', 1)[0] for line in body(files['cynic.env']).splitlines()]
    assert names == ['CYNIC_HOME', 'SURREAL_URL', 'SURREAL_USER', 'SURREAL_PASS', 'SURREAL_NS', 'SURREAL_DB',
                     'SURREAL_AUTH_LEVEL', 'SURREAL_CA_FILE', 'OLLAMA_URL', 'CYNIC_MODEL', 'CYNIC_MAX_BODY_BYTES',
                     'CYNIC_METRICS_ALLOW', 'CYNIC_LLM_TIMEOUT_S',
                     'CYNIC_LLM_MAX_CONCURRENCY', 'CYNIC_LLM_DEADLINE_MICRO_S', 'CYNIC_LLM_DEADLINE_MACRO_S',
                     'CYNIC_WS_MAX_MESSAGE_BYTES', 'CYNIC_WS_MAX_CLIENTS',
                     'CYNIC_WS_QUEUE_SIZE', 'CYNIC_WS_COMPRESSION', 'UVICORN_WS_MAX_SIZE',
                     'UVICORN_WS_PER_MESSAGE_DEFLATE']
    assert 'SURREAL_URL="ws://10.0.0.11:8000/rpc"\n' in files['cynic.env']
    assert 'CYNIC_WS_COMPRESSION="false"\n' in files['cynic.env']


def test_a_kernel_like_build_gets_its_own_port_variables_state_and_environment(tmp_path):
    files = render(tmp_path, KERNEL_VARS)
    unit = files['cynic@.service']
    assert 'bin/uvicorn cynic.api.server:app --host 127.0.0.1 --port ${CYNIC_LISTEN_PORT} ' in unit
    assert 'RestartSec=5\n' in unit and 'StartLimitIntervalSec=600\nStartLimitBurst=60\n' in unit
    # PORT is the build's own (its MCP server on PORT + 1: -1 lets the OS choose); no INSTANCE_ID
    assert body(files['2.env']) == 'CYNIC_LISTEN_PORT=8002\nHOME="/var/lib/cynic/instances/2"\nPORT="-1"\n'
    shared = body(files['cynic.env'])
    assert 'SURREAL_URL=' not in shared and 'SURREAL_USER=' in shared and 'OLLAMA_URL=' in shared
    assert 'LOG_LEVEL="INFO"\n' in shared and 'CYNIC_AUTOBENCH="0"\n' in shared


def test_instance_env_placeholders(tmp_path):
    files = render(tmp_path, {'cynic_instances': [{'id': 'a', 'port': 9001}],
                              'cynic_instance_env': {'MCP_PORT': '{port}1', 'STATE': '{home}/state', 'WHO': '{instance_id}'}})
    assert body(files['a.env']) == ('INSTANCE_ID=app1-a\nPORT=9001\nHOME="/var/lib/cynic/instances/a"\n'
                                    'MCP_PORT="90011"\nSTATE="/var/lib/cynic/instances/a/state"\nWHO="app1-a"\n')


CHECKS = """
- hosts: app1
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: cynic.cluster.cynic
        tasks_from: checks.yml
"""


@pytest.mark.parametrize(('extra', 'message'), [
    # consecutive ports and a build that also opens port + 1
    ({'cynic_side_port_offsets': [1]},
     'ports opened more than once: 8002: cynic@1 (port + 1), cynic@2 (port); 8003: cynic@2 (port + 1), cynic@3 (port)'),
    ({'cynic_instances': [{'id': 1, 'port': 8001, 'side_ports': [9001]}, {'id': 2, 'port': 9001}]},
     'ports opened more than once: 9001: cynic@1 (side port), cynic@2 (port)'),
    ({'cynic_instances': [{'id': 1, 'port': 8001}, {'id': 2, 'port': 8001}]},
     'ports opened more than once: 8001: cynic@1 (port), cynic@2 (port)'),
    ({'cynic_instances': [{'id': 1, 'port': 65535}], 'cynic_side_port_offsets': [1]},
     'ports must be 1 to 65535: cynic@1 (port + 1)'),
    ({'cynic_env_omit': ['SURREAL_URI']}, 'it names SURREAL_URI'),
    ({'cynic_instance_env': {'PORT': '-1'}}, 'must be distinct'),  # PORT is already cynic_port_env
    ({'cynic_ollama_url': 'http://llm:11434'},
     'cynic_ollama_url is replaced by cynic_ollama_urls, a list (every Ollama the instances may use; by default '
     'every cynic_llm host). Write cynic_ollama_urls: ["http://llm:11434"]'),
    ({'cynic_llm_deadline_macro_s': 30}, 'must be above 0 and at most cynic_llm_timeout_s (20)'),
    ({'cynic_llm_timeout_s': 5}, 'cynic_llm_deadline_micro_s (10) and cynic_llm_deadline_macro_s (20) must be'),
    ({'cynic_llm_deadline_micro_s': 0}, 'must be above 0'),
])
def test_bad_inputs_fail_before_anything_changes(tmp_path, extra, message):
    out = play(tmp_path, CHECKS, extra, expect_failure=True)
    assert message in ' '.join(out.split()), out[-3000:]


def test_spaced_ports_with_side_ports_pass(tmp_path):
    play(tmp_path, CHECKS, {'cynic_instances': [{'id': 1, 'port': 8001}, {'id': 2, 'port': 8003}],
                            'cynic_side_port_offsets': [1]})
    play(tmp_path, CHECKS, dict(KERNEL_VARS, cynic_package_source=str(tmp_path)))


INSTALL = """
- hosts: app1
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: cynic.cluster.cynic
        tasks_from: install.yml
"""


def toy_project(tmp_path, requires_python):
    src = tmp_path / 'toy'
    (src / 'toy').mkdir(parents=True)
    (src / 'toy' / '__init__.py').write_text('')
    (src / 'pyproject.toml').write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "toy"
        version = "0.1.0"
        requires-python = "%s"
        dependencies = ["surrealdb>=0.3.2,<0.4"]
        [tool.setuptools]
        packages = ["toy"]
        """ % requires_python))
    archive = shutil.make_archive(str(tmp_path / 'toy-0.1.0'), 'gztar', tmp_path, 'toy')  # one top-level directory
    return archive


def install_vars(tmp_path, source, python=sys.executable):
    return {'cynic_package_source': source, 'cynic_asgi_app': 'toy:app', 'cynic_python': python,
            'cynic_cache_dir': str(tmp_path / 'cache'), 'cynic_install_dir': str(tmp_path / 'opt' / 'cynic'),
            'cynic_requirement_overrides': ['surrealdb>=1,<3']}


def test_an_old_host_python_is_refused_before_the_host_changes(tmp_path):
    source = toy_project(tmp_path, '>=3.99')
    out = play(tmp_path, INSTALL, install_vars(tmp_path, source), expect_failure=True)
    text = ' '.join(out.split())
    host = '%d.%d.%d' % sys.version_info[:3]
    assert ('cynic: toy 0.1.0 requires Python >=3.99 (Requires-Python of its wheel), and %s on app1 is %s. '
            'Nothing was changed on the host.' % (sys.executable, host)) in text, out[-3000:]
    assert not (tmp_path / 'opt').exists()
    # the archive was unpacked, built and its pin replaced on the controller
    fixed = os.listdir(tmp_path / 'cache' / 'cynic-node-wheel' / 'fixed')
    assert fixed == ['toy-0.1.0-py3-none-any.whl']


def test_a_host_python_that_fits_gets_past_the_check(tmp_path):
    source = toy_project(tmp_path, '>=3.8')
    (tmp_path / 'opt').write_text('a file, so that the first task that writes on the host fails')
    out = play(tmp_path, INSTALL, install_vars(tmp_path, source), expect_failure=True)
    assert "ok: [app1] => {\"changed\": false, \"msg\": \"All assertions passed\"}" in out or \
        'TASK [cynic.cluster.cynic : Check the host\'s Python against the wheel\'s Requires-Python]' in out
    assert 'requires Python' not in out
    assert "Create the directory of the package's wheel" in out.split('fatal:')[0].rsplit('TASK [', 1)[1]


def test_a_missing_interpreter_is_named(tmp_path):
    source = toy_project(tmp_path, '>=3.8')
    out = play(tmp_path, INSTALL, install_vars(tmp_path, source, '/nonexistent/python3.42'), expect_failure=True)
    assert 'wheel_venv: the interpreter /nonexistent/python3.42 does not run on app1' in ' '.join(out.split())


NGINX = """
- hosts: lb
  gather_facts: false
  tasks:
    - ansible.builtin.include_vars: {root}/roles/nginx_lb/defaults/main.yml
    - ansible.builtin.include_vars: {root}/roles/nginx_lb/vars/main.yml
    - ansible.builtin.template: {{src: "{root}/roles/nginx_lb/templates/nginx.conf.j2", dest: "{out}", mode: "0644"}}
"""


def _nginx():
    for candidate in (os.environ.get('NGINX_BIN', ''), shutil.which('nginx') or '', '/usr/sbin/nginx'):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.mark.parametrize('sticky', [False, True])
def test_nginx_names_the_upstream_when_the_build_sends_no_instance_id(tmp_path, sticky):
    inventory = {'all': {'vars': {'ansible_connection': 'local'}, 'children': {
        'cynic_lb': {'hosts': {'lb': {'nginx_lb_sticky': sticky}}},
        'cynic_app': {'hosts': {'app1': {'cynic_instances': [{'id': 1, 'port': 8001}, {'id': 2, 'port': 8003}]}}},
    }}}
    conf = tmp_path / 'nginx.conf'
    play(tmp_path, NGINX.format(root=REPO_ROOT, out=conf), inventory=inventory)
    text = conf.read_text()
    assert 'map $upstream_http_x_instance_id $cynic_instance_id {\n        ""      $upstream_addr;\n' \
           '        default $upstream_http_x_instance_id;\n    }' in text
    server = text.split('    server {', 1)[1]
    head, locations = server.split('\n        location ', 1)  # server level: inherited by every location
    assert 'proxy_hide_header X-Instance-ID;' in head and 'add_header X-Instance-ID $cynic_instance_id always;' in head
    assert 'add_header' not in locations and 'proxy_hide_header' not in locations
    assert 'instance=$cynic_instance_id' in text
    nginx = _nginx()
    if nginx is None:
        pytest.skip('no nginx binary (set NGINX_BIN) for nginx -t; the rendering was checked')
    prefix = tmp_path / 'prefix'
    (prefix / 'logs').mkdir(parents=True)
    mime = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(nginx))), 'etc', 'nginx', 'mime.types')
    if not os.path.exists(mime):
        mime = str(prefix / 'mime.types')
        (prefix / 'mime.types').write_text('types { text/html html; }\n')
    temp_paths = ''.join('    %s_temp_path %s/%s;\n' % (kind, prefix, kind)
                         for kind in ('client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'))
    local = (text.replace('user www-data;\n', '').replace('pid /run/nginx.pid;', 'pid %s/nginx.pid;' % prefix)
             .replace('/etc/nginx/mime.types', mime).replace('/var/log/nginx/', '%s/logs/' % prefix)
             .replace('http {\n', 'http {\n' + temp_paths, 1))
    (prefix / 'nginx.conf').write_text(local)
    proc = subprocess.run([nginx, '-t', '-p', str(prefix), '-c', str(prefix / 'nginx.conf'), '-g', 'error_log stderr;'],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert 'test is successful' in proc.stderr


READY = """
- hosts: app1
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: cynic.cluster.cynic
        tasks_from: wait_ready.yml
      vars:
        __cynic_wait_for: {instances}
"""


def _health(body, status=200):
    async def handler(server, request):  # pylint: disable=unused-argument
        from aiohttp import web
        return web.json_response(body, status=status)
    return handler


def test_the_readiness_gate_reads_status_and_json_field(tmp_path, http_server):
    alive = http_server([('GET', '/status', _health({'status': 'alive', 'dogs': []}))])
    play(tmp_path, READY.format(instances=json.dumps([{'id': 1, 'port': alive.port}])),
         {'cynic_health_path': '/status', 'cynic_health_json': {'status': 'alive'}, 'cynic_ready_delay': 0})


def test_the_readiness_gate_names_the_instance_that_does_not_come_up(tmp_path, http_server, closed_port):
    alive = http_server([('GET', '/health', _health({'status': 'alive'}))])
    waking = http_server([('GET', '/health', _health({'status': 'waking'}))])
    instances = [{'id': 1, 'port': alive.port}, {'id': 2, 'port': closed_port}, {'id': 3, 'port': waking.port}]
    out = play(tmp_path, READY.format(instances=json.dumps(instances)),
               {'cynic_health_json': {'status': 'alive'}, 'cynic_ready_retries': 2, 'cynic_ready_delay': 0},
               expect_failure=True)
    text = ' '.join(out.split())
    assert 'cynic: cynic@2, cynic@3 on app1 did not become ready in 2 polls 0 s apart' in text, out[-3000:]
    assert 'wanting status 200 and JSON {"status": "alive"}' in text
    assert 'cynic@2 at http://127.0.0.1:%d/health: status -1' % closed_port in text
    assert 'cynic@3 at http://127.0.0.1:%d/health: status 200' % waking.port in text  # not the JSON asked for
    assert 'journalctl -u cynic@2 -n 30:' in text and 'journalctl -u cynic@3 -n 30:' in text
    assert 'journalctl -u cynic@1' not in text
