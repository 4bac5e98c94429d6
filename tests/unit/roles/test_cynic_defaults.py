# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The cynic role's default service URLs, rendered by ansible-playbook from real inventories."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEFAULTS = os.path.join(REPO_ROOT, 'roles', 'cynic', 'defaults', 'main.yml')
PLAYBOOK = """
- hosts: app1
  gather_facts: false
  tasks:
    - ansible.builtin.include_vars: {defaults}
    - ansible.builtin.copy:
        content: "{{{{ {{'surreal': cynic_surreal_url, 'ollama': cynic_ollama_url}} | to_json }}}}"
        dest: {out}
"""


def render_urls(tmp_path, db_vars):
    app = {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable}
    inventory = {'all': {'children': {
        'cynic_db': {'hosts': {'data1': db_vars}},
        'cynic_llm': {'hosts': {'data1': {}}},
        'cynic_app': {'hosts': {'app1': app}},
    }}}
    (tmp_path / 'inventory.json').write_text(json.dumps(inventory))
    out = tmp_path / 'urls.json'
    (tmp_path / 'play.yml').write_text(PLAYBOOK.format(defaults=DEFAULTS, out=out))
    playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    subprocess.run([playbook, '-i', str(tmp_path / 'inventory.json'), str(tmp_path / 'play.yml')],
                   check=True, capture_output=True, cwd=tmp_path)
    return json.loads(out.read_text())


@pytest.mark.parametrize(('db_vars', 'surreal', 'ollama'), [
    # wildcard binds are where the services listen, not where to reach them
    ({'ansible_host': '10.1.2.3', 'surrealdb_bind_address': '0.0.0.0:8000', 'ollama_host': '[::]:11434'},
     'ws://10.1.2.3:8000/rpc', 'http://10.1.2.3:11434'),
    # a specific address is used as it is
    ({'ansible_host': '10.1.2.3', 'surrealdb_bind_address': '10.9.9.9:8001', 'ollama_host': '10.9.9.9:11435'},
     'ws://10.9.9.9:8001/rpc', 'http://10.9.9.9:11435'),
    # no ansible_host: the inventory name; nothing set: the roles' loopback defaults
    ({'surrealdb_bind_address': '0.0.0.0:8000'}, 'ws://data1:8000/rpc', 'http://127.0.0.1:11434'),
])
def test_service_urls(tmp_path, db_vars, surreal, ollama):
    assert render_urls(tmp_path, db_vars) == {'surreal': surreal, 'ollama': ollama}
