# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The host:port pairs the roles build from inventory addresses, for an inventory of IPv6 hosts: the
addresses go in brackets (nginx and URLs cannot parse fd00::21:8001). Rendered by ansible-playbook
from the roles' own vars files. The instances' SurrealDB and Ollama URLs are in test_cynic_defaults."""

from __future__ import annotations

import json
import os

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
    cynic_app:
      hosts:
        app1: {ansible_host: "fd00::21", cynic_bind_address: "::"}
        app2: {ansible_host: "fd00::22", cynic_bind_address: "fd00::22", cynic_instances: [{id: 1, port: 8001}]}
        app3: {ansible_host: "10.0.0.23", cynic_bind_address: "0.0.0.0", cynic_instances: [{id: 1, port: 8001}]}
"""

# The load balancer's upstream, from the nginx_lb role's files; an app host's own health-check host,
# from the cynic role's vars (the inventory sets its cynic_bind_address: no defaults over it).
PLAYBOOK = """
- hosts: {host}
  gather_facts: false
  tasks:
    - ansible.builtin.include_vars: {{file: "{root}/roles/{{{{ item }}}}"}}
      loop: "{{{{ ['nginx_lb/defaults/main.yml', 'nginx_lb/vars/main.yml'] if inventory_hostname == 'lb'
                 else ['cynic/vars/main.yml'] }}}}"
    - ansible.builtin.copy:
        dest: {out}
        content: "{{{{ (_nginx_lb_servers if inventory_hostname == 'lb' else _cynic_check_host) | to_json }}}}"
"""


def render(tmp_path, run_playbook, host):
    out = tmp_path / ('%s.json' % host)
    run_playbook(PLAYBOOK.format(host=host, root=REPO_ROOT, out=out), INVENTORY)
    return json.loads(out.read_text())


def test_an_ipv6_inventory_gives_bracketed_addresses_everywhere(tmp_path, run_playbook):
    assert render(tmp_path, run_playbook, 'lb') == ['[fd00::21]:8001', '[fd00::21]:8002', '[fd00::21]:8003',
                                                    '[fd00::22]:8001', '10.0.0.23:8001']
    assert render(tmp_path, run_playbook, 'app2') == '[fd00::22]'
    assert render(tmp_path, run_playbook, 'app1') == '127.0.0.1'  # a wildcard bind is checked on loopback


# The surrealdb and ollama roles' own checks, from their vars files and their own values (as role parameters).
OWN_CHECKS = """
- hosts: localhost
  gather_facts: false
  vars:
    surrealdb_bind_address: "{surrealdb}"
    surrealdb_tls_certificate: ""
    surrealdb_tls_ca: ""
    surrealdb_config_dir: /etc/surrealdb
    ollama_host: "{ollama}"
  tasks:
    - ansible.builtin.include_vars: {{file: "{root}/roles/{{{{ item }}}}"}}
      loop: [surrealdb/vars/main.yml, ollama/vars/main.yml]
    - ansible.builtin.copy:
        dest: {out}
        content: "{{{{ [_surrealdb_url, _ollama_url] | to_json }}}}"
"""


@pytest.mark.parametrize('surrealdb, ollama, expected', [
    ('[::]:8000', '[::]:11434', ['http://[::1]:8000', 'http://127.0.0.1:11434']),
    ('[fd00::11]:8000', '[fd00::11]:11435', ['http://[fd00::11]:8000', 'http://[fd00::11]:11435']),
    ('0.0.0.0:8000', '0.0.0.0:11434', ['http://127.0.0.1:8000', 'http://127.0.0.1:11434']),
])
def test_the_service_roles_check_their_own_bind_address(tmp_path, run_playbook, surrealdb, ollama, expected):
    out = tmp_path / 'own.json'
    run_playbook(OWN_CHECKS.format(surrealdb=surrealdb, ollama=ollama, root=REPO_ROOT, out=out))
    assert json.loads(out.read_text()) == expected


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
