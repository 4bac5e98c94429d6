# -*- coding: utf-8 -*-
# Copyright: (c) 2026, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The topology filter: where SurrealDB, Ollama and every instance are reached, on plain dicts (and once through
ansible-playbook's own hostvars), for loopback, wildcard and IPv6 binds, several hosts, missing groups, hosts that
set nothing (the roles' defaults) and TLS."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping

import pytest
import yaml
from ansible.errors import AnsibleFilterError

# pylint: disable=wrong-import-position
from ansible_collections.cynic.cluster.plugins.filter.surrealdb_endpoint import surrealdb_endpoint
from ansible_collections.cynic.cluster.plugins.filter.topology import FilterModule, topology
from ansible_collections.cynic.cluster.plugins.plugin_utils import topology as plugin_utils

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
GROUPS = {'cynic_db': ['data'], 'cynic_llm': ['data'], 'cynic_app': ['app1']}


def role_defaults(role):
    with open(os.path.join(REPO_ROOT, 'roles', role, 'defaults', 'main.yml'), encoding='utf-8') as handle:
        return yaml.safe_load(handle)


class LazyHostvars(Mapping):
    """Like Ansible's hostvars: a mapping, not a dict, that knows only the inventory's hosts."""

    def __init__(self, data):
        self._data = data

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)


def test_the_filter_is_registered():
    assert FilterModule().filters()['topology'] is topology


def test_hosts_that_set_nothing_get_the_roles_loopback_defaults():
    out = topology({'data': {}, 'app1': {}}, GROUPS)
    assert out['surrealdb'] == {'host': 'data', 'tls': False, 'port': 8000, 'url': 'http://127.0.0.1:8000',
                                'local_url': 'http://127.0.0.1:8000', 'rpc_url': 'ws://127.0.0.1:8000/rpc',
                                'local_ca_path': '', 'ca_file': ''}
    assert out['ollama'] == [{'host': 'data', 'url': 'http://127.0.0.1:11434', 'local_url': 'http://127.0.0.1:11434'}]
    assert out['ollama_urls'] == ['http://127.0.0.1:11434']
    # the cynic role's three default instances; the default prefix is templated from the host's inventory name
    assert out['instances'] == [
        {'host': 'app1', 'id': str(i), 'port': 8000 + i, 'instance_id': 'app1-%d' % i,
         'url': 'http://127.0.0.1:%d' % (8000 + i), 'local_url': 'http://127.0.0.1:%d' % (8000 + i)} for i in (1, 2, 3)]
    assert out['upstream'] == ['127.0.0.1:8001', '127.0.0.1:8002', '127.0.0.1:8003']


def test_the_defaults_come_from_the_roles_files():
    cynic, surrealdb, ollama = role_defaults('cynic'), role_defaults('surrealdb'), role_defaults('ollama')
    out = topology({'data': {}, 'app1': {}}, GROUPS)
    assert [(i['id'], i['port']) for i in out['instances']] == [(str(i['id']), i['port']) for i in cynic['cynic_instances']]
    assert out['surrealdb']['url'] == 'http://' + surrealdb['surrealdb_bind_address']
    assert out['ollama_urls'] == ['http://' + ollama['ollama_host']]
    assert cynic['cynic_instance_id_prefix'] == '{{ inventory_hostname }}-'  # what the first test renders


def test_a_host_own_values_win_over_the_defaults():
    hostvars = {'data': {}, 'app1': {'cynic_instance_id_prefix': 'eu-', 'cynic_instances': [{'id': 7, 'port': '9007'}],
                                     'cynic_bind_address': '10.0.0.21'}}
    (instance,) = topology(hostvars, GROUPS)['instances']
    assert instance == {'host': 'app1', 'id': '7', 'port': 9007, 'instance_id': 'eu-7',
                        'url': 'http://10.0.0.21:9007', 'local_url': 'http://10.0.0.21:9007'}


@pytest.mark.parametrize('app_vars, url, local', [
    ({'cynic_bind_address': '0.0.0.0', 'ansible_host': '10.0.0.21'}, 'http://10.0.0.21:8001', 'http://127.0.0.1:8001'),
    ({'cynic_bind_address': '0.0.0.0'}, 'http://app1:8001', 'http://127.0.0.1:8001'),  # no ansible_host: its name
    ({'cynic_bind_address': '::', 'ansible_host': 'fd00::21'}, 'http://[fd00::21]:8001', 'http://127.0.0.1:8001'),
    ({'cynic_bind_address': '[::]', 'ansible_host': 'fd00::21'}, 'http://[fd00::21]:8001', 'http://127.0.0.1:8001'),
    ({'cynic_bind_address': 'fd00::21', 'ansible_host': '10.0.0.21'}, 'http://[fd00::21]:8001', 'http://[fd00::21]:8001'),
    ({'cynic_bind_address': '::1'}, 'http://[::1]:8001', 'http://[::1]:8001'),
    ({'cynic_bind_address': '10.0.0.21', 'ansible_host': 'app1.example'}, 'http://10.0.0.21:8001', 'http://10.0.0.21:8001'),
])
def test_instance_urls_from_loopback_wildcard_and_ipv6_binds(app_vars, url, local):
    out = topology({'data': {}, 'app1': app_vars}, GROUPS)
    first = out['instances'][0]
    assert (first['url'], first['local_url']) == (url, local)
    assert out['upstream'][0] == url[len('http://'):]


@pytest.mark.parametrize('db_vars, url, local', [
    ({'surrealdb_bind_address': '0.0.0.0:8000', 'ansible_host': '10.0.0.11'}, 'http://10.0.0.11:8000', 'http://127.0.0.1:8000'),
    ({'surrealdb_bind_address': '[::]:8000', 'ansible_host': 'fd00::11'}, 'http://[fd00::11]:8000', 'http://[::1]:8000'),
    ({'surrealdb_bind_address': '[fd00::11]:8000'}, 'http://[fd00::11]:8000', 'http://[fd00::11]:8000'),
    ({'surrealdb_bind_address': '0.0.0.0:9000'}, 'http://data:9000', 'http://127.0.0.1:9000'),
])
def test_surrealdb_from_wildcard_and_ipv6_binds_is_the_surrealdb_endpoint_filter(db_vars, url, local):
    db = topology({'data': db_vars, 'app1': {}}, GROUPS)['surrealdb']
    assert (db['url'], db['local_url'], db['rpc_url']) == (url, local, url.replace('http://', 'ws://') + '/rpc')
    assert db == dict(surrealdb_endpoint(db_vars, 'data'), host='data', ca_file='')


@pytest.mark.parametrize('ollama_host, url, local', [
    ('0.0.0.0:11434', 'http://10.0.0.11:11434', 'http://127.0.0.1:11434'),
    ('[::]:11434', 'http://10.0.0.11:11434', 'http://127.0.0.1:11434'),  # Ollama's role checks on 127.0.0.1
    ('[fd00::11]:11435', 'http://[fd00::11]:11435', 'http://[fd00::11]:11435'),
    ('10.9.9.9:11435', 'http://10.9.9.9:11435', 'http://10.9.9.9:11435'),
])
def test_ollama_from_wildcard_and_ipv6_binds(ollama_host, url, local):
    out = topology({'data': {'ollama_host': ollama_host, 'ansible_host': '10.0.0.11'}, 'app1': {}}, GROUPS)
    assert out['ollama'] == [{'host': 'data', 'url': url, 'local_url': local}]
    assert out['ollama_urls'] == [url]


def test_tls_on_surrealdb_makes_its_urls_tls_and_names_the_ca():
    db_vars = {'surrealdb_bind_address': '0.0.0.0:8000', 'ansible_host': 'db.example',
               'surrealdb_tls_certificate': 'tls/db.crt', 'surrealdb_tls_ca': 'tls/ca.crt'}
    db = topology({'data': db_vars, 'app1': {}}, GROUPS)['surrealdb']
    assert db == {'host': 'data', 'tls': True, 'port': 8000, 'url': 'https://db.example:8000',
                  'local_url': 'https://127.0.0.1:8000', 'rpc_url': 'wss://db.example:8000/rpc',
                  'local_ca_path': '/etc/surrealdb/tls/ca.crt', 'ca_file': 'tls/ca.crt'}
    db_vars.update(surrealdb_config_dir='/srv/sdb')
    assert topology({'data': db_vars, 'app1': {}}, GROUPS)['surrealdb']['local_ca_path'] == '/srv/sdb/tls/ca.crt'
    del db_vars['surrealdb_tls_ca']  # a certificate from a public CA: the hosts' trust store
    db = topology({'data': db_vars, 'app1': {}}, GROUPS)['surrealdb']
    assert db['tls'] is True and db['local_ca_path'] == '' and db['ca_file'] == ''


def test_several_hosts_in_inventory_order():
    hostvars = LazyHostvars({
        'db1': {'surrealdb_bind_address': '10.0.0.11:8000'}, 'db2': {'surrealdb_bind_address': '10.0.0.12:8000'},
        'llm1': {'ollama_host': '0.0.0.0:11434', 'ansible_host': '10.0.0.31'}, 'llm2': {'ollama_host': '10.0.0.32:11434'},
        'app1': {'cynic_bind_address': '::', 'ansible_host': 'fd00::21'},
        'app2': {'cynic_bind_address': '10.0.0.22', 'cynic_instances': [{'id': 1, 'port': 8001}]},
    })
    groups = {'cynic_db': ['db1', 'db2'], 'cynic_llm': ['llm1', 'llm2'], 'cynic_app': ['app1', 'app2']}
    out = topology(hostvars, groups)
    assert out['surrealdb']['host'] == 'db1' and out['surrealdb']['url'] == 'http://10.0.0.11:8000'  # the first one
    assert [o['url'] for o in out['ollama']] == ['http://10.0.0.31:11434', 'http://10.0.0.32:11434']
    assert out['ollama_urls'] == ['http://10.0.0.31:11434', 'http://10.0.0.32:11434']  # all, in inventory order
    assert [i['instance_id'] for i in out['instances']] == ['app1-1', 'app1-2', 'app1-3', 'app2-1']
    assert out['upstream'] == ['[fd00::21]:8001', '[fd00::21]:8002', '[fd00::21]:8003', '10.0.0.22:8001']


def test_missing_groups_are_empty():
    assert topology({}, {}) == {'surrealdb': None, 'ollama': [], 'ollama_urls': [], 'instances': [], 'upstream': []}
    out = topology({'app1': {}}, {'cynic_app': ['app1'], 'cynic_db': []})
    assert out['surrealdb'] is None and out['ollama_urls'] == [] and len(out['instances']) == 3


def test_other_group_names():
    hostvars = {'canary': {'cynic_instances': [{'id': 9, 'port': 8009}]}, 'app1': {}}
    out = topology(hostvars, {'cynic_app': ['app1'], 'canaries': ['canary']}, app_group='canaries', db_group='none')
    assert out['upstream'] == ['127.0.0.1:8009'] and out['surrealdb'] is None


@pytest.mark.parametrize('hostvars, groups, message', [
    ({'app1': {}}, {'cynic_app': ['app1', 'ghost']}, 'host ghost is not in the inventory'),
    ({'data': {'surrealdb_bind_address': '10.0.0.11'}}, {'cynic_db': ['data']},
     'surrealdb_bind_address of host data must be HOST:PORT'),
    ({'data': {'ollama_host': 'fd00::11:11434'}}, {'cynic_llm': ['data']}, 'ollama_host of host data must be HOST:PORT'),
    ({'app1': {'cynic_instances': {'id': 1}}}, {'cynic_app': ['app1']}, 'cynic_instances of host app1 must be a list'),
    ({'app1': {'cynic_instances': [{'port': 8001}]}}, {'cynic_app': ['app1']},
     'each of cynic_instances of host app1 needs an id and a port'),
    ({'app1': {'cynic_instances': [{'id': 1, 'port': 0}]}}, {'cynic_app': ['app1']},
     'the port of instance 1 of host app1 must be a port number (an int 1-65535), got 0'),
    # The word "int" too: a role's argument spec templates its topology defaults first, so this is what
    # an operator reads for a port that is not a number (molecule/cluster/tests/test_bad_input.py).
    ({'app1': {'cynic_instances': [{'id': 1, 'port': 'eighty'}]}}, {'cynic_app': ['app1']},
     "the port of instance 1 of host app1 must be a port number (an int 1-65535), got 'eighty'"),
    ({}, {'cynic_app': 'app1'}, 'group cynic_app must be a list'),
])
def test_bad_inventory_data_is_named(hostvars, groups, message):
    with pytest.raises(AnsibleFilterError, match='^topology: ' + re.escape(message)):
        topology(hostvars, groups)


def test_a_variable_no_role_owns_is_a_clear_error():
    with pytest.raises(plugin_utils.InventoryError, match='no role of the collection owns the variable nobody_x'):
        plugin_utils.host_var({'h': {}}, 'h', 'nobody_x')
    with pytest.raises(plugin_utils.InventoryError, match='the role cynic has no default for cynic_nothing'):
        plugin_utils.host_var({'h': {}}, 'h', 'cynic_nothing')


PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        content: "{{ hostvars | cynic.cluster.topology(groups) | to_json }}"
        dest: %s
"""

INVENTORY = """
all:
  vars: {ansible_connection: local}
  children:
    cynic_db: {hosts: {data: {ansible_host: "fd00::11", surrealdb_bind_address: "[::]:8000"}}}
    cynic_app:
      hosts:
        app1: {cynic_bind_address: "0.0.0.0", ansible_host: 10.0.0.21, cynic_instances: [{id: 1, port: 8001}]}
        app2: {cynic_instance_id_prefix: "{{ inventory_hostname }}-x"}
"""


def test_ansible_hostvars_and_templated_values(tmp_path, run_playbook):
    out = tmp_path / 'topology.json'
    run_playbook(PLAY % out, INVENTORY)
    got = json.loads(out.read_text())
    assert got['surrealdb']['rpc_url'] == 'ws://[fd00::11]:8000/rpc' and got['ollama_urls'] == []
    assert [i['instance_id'] for i in got['instances']] == ['app1-1', 'app2-x1', 'app2-x2', 'app2-x3']
    assert got['upstream'] == ['10.0.0.21:8001', '127.0.0.1:8001', '127.0.0.1:8002', '127.0.0.1:8003']


def test_templated_defaults_see_the_host_and_the_role_other_defaults(tmp_path, monkeypatch):
    defaults = tmp_path / 'roles' / 'demo' / 'defaults'
    defaults.mkdir(parents=True)
    (defaults / 'main.yml').write_text('demo_site: eu\ndemo_prefix: "{{ demo_site }}-{{ inventory_hostname }}-"\n')
    monkeypatch.setattr(plugin_utils, 'ROLES_DIR', str(tmp_path / 'roles'))
    for cached in (plugin_utils._defaults_file, plugin_utils._role_of):  # pylint: disable=protected-access
        cached.cache_clear()
    try:
        assert plugin_utils.host_var({'h1': {}}, 'h1', 'demo_prefix') == 'eu-h1-'
        assert plugin_utils.host_var({'h1': {'demo_site': 'us'}}, 'h1', 'demo_prefix') == 'us-h1-'
    finally:
        monkeypatch.undo()
        for cached in (plugin_utils._defaults_file, plugin_utils._role_of):  # pylint: disable=protected-access
            cached.cache_clear()
