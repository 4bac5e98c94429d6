# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""Every host:port the roles build from inventory addresses, for an inventory of IPv6 hosts: the
addresses go in brackets (nginx and URLs cannot parse fd00::21:8001). Rendered by ansible-playbook
from the roles' own defaults and vars files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# pylint: disable=wrong-import-position
from ansible_collections.cynic.cluster.plugins.filter.url_host import FilterModule, url_host

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

INVENTORY = """
all:
  vars:
    ansible_connection: local
  children:
    cynic_lb: {hosts: {lb: {ansible_host: "fd00::10"}}}
    cynic_db: {hosts: {data: {ansible_host: "fd00::11", surrealdb_bind_address: "[::]:8000", ollama_host: "[::]:11434"}}}
    cynic_llm: {hosts: {data: {}}}
    cynic_app:
      hosts:
        app1: {ansible_host: "fd00::21", cynic_bind_address: "::"}
        app2: {ansible_host: "fd00::22", cynic_bind_address: "fd00::22", cynic_instances: [{id: 1, port: 8001}]}
        app3: {ansible_host: "10.0.0.23", cynic_bind_address: "0.0.0.0", cynic_instances: [{id: 1, port: 8001}]}
"""

PLAYBOOK = """
- hosts: {host}
  gather_facts: false
  tasks:
    # The load balancer's view of the cluster, from the defaults of the roles it runs.
    - ansible.builtin.include_vars: {{file: "{root}/roles/{{{{ item }}}}"}}
      loop: [cynic/defaults/main.yml, nginx_lb/defaults/main.yml, nginx_lb/vars/main.yml]
      when: inventory_hostname == 'lb'
    - ansible.builtin.copy:
        dest: {out}
        content: "{{{{ {{'servers': _nginx_lb_servers, 'surreal': cynic_surreal_url,
                       'ollama': cynic_ollama_url}} | to_json }}}}"
      when: inventory_hostname == 'lb'
    # An app host's own health checks (the inventory sets its cynic_bind_address; no defaults over it).
    - ansible.builtin.include_vars: {{file: "{root}/roles/cynic/vars/main.yml"}}
      when: inventory_hostname != 'lb'
    - ansible.builtin.copy:
        dest: {out}
        content: "{{{{ {{'check_host': _cynic_check_host}} | to_json }}}}"
      when: inventory_hostname != 'lb'
"""


def render(tmp_path, host):
    out = tmp_path / ('%s.json' % host)
    (tmp_path / 'inventory.yml').write_text(INVENTORY)
    (tmp_path / 'play.yml').write_text(PLAYBOOK.format(host=host, root=REPO_ROOT, out=out))
    playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    env = dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    proc = subprocess.run([playbook, '-i', str(tmp_path / 'inventory.yml'), str(tmp_path / 'play.yml')],
                          capture_output=True, text=True, cwd=tmp_path, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return json.loads(out.read_text())


def test_an_ipv6_inventory_gives_bracketed_addresses_everywhere(tmp_path):
    lb = render(tmp_path, 'lb')
    assert lb['servers'] == ['[fd00::21]:8001', '[fd00::21]:8002', '[fd00::21]:8003',
                             '[fd00::22]:8001', '10.0.0.23:8001']
    # the wildcard binds of the data host are replaced by its inventory address
    assert lb['surreal'] == 'ws://[fd00::11]:8000/rpc'
    assert lb['ollama'] == 'http://[fd00::11]:11434'
    assert render(tmp_path, 'app2')['check_host'] == '[fd00::22]'
    assert render(tmp_path, 'app1')['check_host'] == '127.0.0.1'  # a wildcard bind is checked on loopback


@pytest.mark.parametrize('host, expected', [
    ('fd00::21', '[fd00::21]'),
    ('::1', '[::1]'),
    ('[fd00::21]', '[fd00::21]'),  # already bracketed: unchanged
    ('10.0.0.5', '10.0.0.5'),
    ('cynic-app1.example', 'cynic-app1.example'),
])
def test_url_host(host, expected):
    assert url_host(host) == expected
    assert FilterModule().filters()['url_host'] is url_host
