# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The load bounds as the roles write them: the instances' environment file (LLM and WebSocket
bounds, for the node and for the uvicorn command line), and nginx's retry window and per-client
WebSocket cap. Rendered by ansible-playbook from the roles' own defaults, vars and templates."""

from __future__ import annotations

import json
import os

import pytest
import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ROLES = os.path.join(REPO_ROOT, 'roles')

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_vars: {{file: "{roles}/{{{{ item }}}}"}}
      loop: [cynic/defaults/main.yml, cynic/vars/main.yml, nginx_lb/defaults/main.yml, nginx_lb/vars/main.yml]
    - ansible.builtin.template: {{src: "{roles}/cynic/templates/cynic.env.j2", dest: "{out}/cynic.env"}}
    - ansible.builtin.template: {{src: "{roles}/nginx_lb/templates/nginx.conf.j2", dest: "{out}/nginx.conf"}}
"""
# What the inventory would give; extra vars, since include_vars outranks play and task vars.
BASE = {'cynic_surreal_url': 'ws://db:8000/rpc', 'cynic_ollama_urls': ['http://llm1:11434', 'http://llm2:11434'],
        'cynic_surreal_user': 'u', 'cynic_surreal_password': 'p', 'cynic_surreal_ca_file': '',
        'nginx_lb_upstream_servers': ['127.0.0.1:8001', '127.0.0.1:8002']}


def role_check_task():
    """The nginx_lb role's first task, its input check, as the role has it."""
    with open(os.path.join(ROLES, 'nginx_lb', 'tasks', 'main.yml')) as f:
        first = yaml.safe_load(f)[0]
    assert 'ansible.builtin.assert' in first
    return yaml.safe_dump([first])


def render(tmp_path, run_playbook, **overrides):
    out = tmp_path / 'out'
    out.mkdir(exist_ok=True)
    play = PLAYBOOK.format(roles=ROLES, out=out) + '\n'.join(
        '    ' + line for line in role_check_task().splitlines())
    extra = tmp_path / 'extra.json'
    extra.write_text(json.dumps({**BASE, **overrides}))
    return run_playbook(play, None, '-e', '@%s' % extra)


def env_lines(tmp_path):
    return dict(line.split('=', 1) for line in (tmp_path / 'out' / 'cynic.env').read_text().splitlines()
                if line and not line.startswith('#'))


def test_defaults(tmp_path, run_playbook):
    render(tmp_path, run_playbook)
    env = env_lines(tmp_path)
    assert env['CYNIC_LLM_TIMEOUT_S'] == '"20"'
    assert env['CYNIC_LLM_MAX_CONCURRENCY'] == '"4"'
    assert env['CYNIC_LLM_DEADLINE_MICRO_S'] == '"10"' and env['CYNIC_LLM_DEADLINE_MACRO_S'] == '"20"'
    assert env['OLLAMA_URL'] == '"http://llm1:11434,http://llm2:11434"'  # the node's comma-separated list
    assert env['CYNIC_WS_MAX_MESSAGE_BYTES'] == env['UVICORN_WS_MAX_SIZE'] == '"4096"'
    assert env['CYNIC_WS_MAX_CLIENTS'] == '"512"'
    assert env['CYNIC_WS_QUEUE_SIZE'] == '"256"'
    assert env['CYNIC_WS_COMPRESSION'] == env['UVICORN_WS_PER_MESSAGE_DEFLATE'] == '"false"'
    conf = (tmp_path / 'out' / 'nginx.conf').read_text()
    assert 'proxy_next_upstream error timeout non_idempotent;' in conf
    assert 'proxy_next_upstream_timeout 45s;' in conf
    assert 'proxy_read_timeout 60s;' in conf
    assert 'limit_conn_zone $binary_remote_addr zone=cynic_ws_per_client:10m;' in conf
    ws_location = conf.split('location /ws {', 1)[1]
    assert 'limit_conn cynic_ws_per_client 8;' in ws_location
    assert 'limit_conn ' not in conf.split('location /ws {', 1)[0]  # /judge and /health not capped


def test_settings_reach_the_files(tmp_path, run_playbook):
    render(tmp_path, run_playbook, cynic_ws_compression=True, cynic_ws_max_message_bytes=1024,
           cynic_llm_timeout_s=7.5, cynic_llm_deadline_micro_s=2.5, nginx_lb_ws_conn_per_client=0, nginx_lb_retry_window='1500ms',
           nginx_lb_proxy_read_timeout='2s')
    env = env_lines(tmp_path)
    assert env['CYNIC_WS_COMPRESSION'] == env['UVICORN_WS_PER_MESSAGE_DEFLATE'] == '"true"'
    assert env['CYNIC_WS_MAX_MESSAGE_BYTES'] == env['UVICORN_WS_MAX_SIZE'] == '"1024"'
    assert env['CYNIC_LLM_TIMEOUT_S'] == '"7.5"'
    assert env['CYNIC_LLM_DEADLINE_MICRO_S'] == '"2.5"'
    conf = (tmp_path / 'out' / 'nginx.conf').read_text()
    assert 'limit_conn' not in conf
    assert 'proxy_next_upstream_timeout 1500ms;' in conf


@pytest.mark.parametrize('window, read', [('60s', '60s'), ('2m', '60s'), ('61', '1m')])
def test_a_retry_window_past_the_read_timeout_is_refused(tmp_path, run_playbook, window, read):
    with pytest.raises(AssertionError) as failed:
        render(tmp_path, run_playbook, nginx_lb_retry_window=window, nginx_lb_proxy_read_timeout=read)
    assert 'must be shorter than nginx_lb_proxy_read_timeout' in str(failed.value)
