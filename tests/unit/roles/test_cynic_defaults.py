# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The cynic role's default service URLs, rendered by ansible-playbook from real inventories."""

from __future__ import annotations

import json
import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEFAULTS = os.path.join(REPO_ROOT, 'roles', 'cynic', 'defaults', 'main.yml')
PLAYBOOK = """
- hosts: app1
  gather_facts: false
  tasks:
    - ansible.builtin.include_vars: {defaults}
    - ansible.builtin.copy:
        content: "{{{{ {{'surreal': cynic_surreal_url, 'ollama': cynic_ollama_urls, 'ca': cynic_surreal_ca_file}} | to_json }}}}"
        dest: {out}
"""


def render_urls(tmp_path, run_playbook, db_vars, llm_hosts=None):
    inventory = {'all': {'children': {
        'cynic_db': {'hosts': {'data1': db_vars}},
        'cynic_llm': {'hosts': llm_hosts or {'data1': {}}},
        'cynic_app': {'hosts': {'app1': {'ansible_connection': 'local'}}},
    }}}
    out = tmp_path / 'urls.json'
    run_playbook(PLAYBOOK.format(defaults=DEFAULTS, out=out), json.dumps(inventory))  # JSON is YAML
    return json.loads(out.read_text())


@pytest.mark.parametrize(('db_vars', 'surreal', 'ollama'), [
    # wildcard binds are where the services listen, not where to reach them
    ({'ansible_host': '10.1.2.3', 'surrealdb_bind_address': '0.0.0.0:8000', 'ollama_host': '[::]:11434'},
     'ws://10.1.2.3:8000/rpc', ['http://10.1.2.3:11434']),
    # a specific address is used as it is
    ({'ansible_host': '10.1.2.3', 'surrealdb_bind_address': '10.9.9.9:8001', 'ollama_host': '10.9.9.9:11435'},
     'ws://10.9.9.9:8001/rpc', ['http://10.9.9.9:11435']),
    # no ansible_host: the inventory name; nothing set: the roles' loopback defaults
    ({'surrealdb_bind_address': '0.0.0.0:8000'}, 'ws://data1:8000/rpc', ['http://127.0.0.1:11434']),
    # A certificate on the database host: the instances use wss://.
    ({'surrealdb_bind_address': '10.9.9.9:8000', 'surrealdb_tls_certificate': 'tls/db.crt'},
     'wss://10.9.9.9:8000/rpc', ['http://127.0.0.1:11434']),
    # an IPv6 host: its address in brackets, before the port
    ({'ansible_host': 'fd00::11', 'surrealdb_bind_address': '[::]:8000', 'ollama_host': '[::]:11434'},
     'ws://[fd00::11]:8000/rpc', ['http://[fd00::11]:11434']),
])
def test_service_urls(tmp_path, run_playbook, db_vars, surreal, ollama):
    assert render_urls(tmp_path, run_playbook, db_vars) == {'surreal': surreal, 'ollama': ollama, 'ca': ''}


def test_the_database_host_ca_is_the_instances_ca(tmp_path, run_playbook):
    db_vars = {'surrealdb_bind_address': '10.9.9.9:8000', 'surrealdb_tls_certificate': 'tls/db.crt',
               'surrealdb_tls_ca': 'tls/ca.crt'}
    assert render_urls(tmp_path, run_playbook, db_vars) == {'surreal': 'wss://10.9.9.9:8000/rpc',
                                                            'ollama': ['http://127.0.0.1:11434'], 'ca': 'tls/ca.crt'}


def test_every_llm_host_is_an_ollama_of_the_instances(tmp_path, run_playbook):
    llm_hosts = {'data1': {}, 'llm2': {'ansible_host': '10.1.2.4', 'ollama_host': '0.0.0.0:11435'}}
    urls = render_urls(tmp_path, run_playbook, {'ansible_host': '10.1.2.3', 'ollama_host': '[::]:11434'}, llm_hosts)
    assert urls['ollama'] == ['http://10.1.2.3:11434', 'http://10.1.2.4:11435']  # inventory order
