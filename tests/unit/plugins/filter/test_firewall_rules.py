# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The firewall_rules filter on plain dicts: which ports each group opens, to exactly whom, and the inputs it
refuses. That Ansible's own hostvars work the same, and that nftables loads and enforces the result, is
tests/unit/roles/test_firewall.py."""

from __future__ import annotations

import copy

import pytest
from ansible.errors import AnsibleFilterError

# pylint: disable=wrong-import-position
from ansible_collections.cynic.cluster.plugins.filter.firewall_rules import FilterModule, firewall_rules

ANY = {'ipv4': ['0.0.0.0/0'], 'ipv6': ['::/0']}


def facts(*addresses):
    return {'ansible_facts': {'all_ipv4_addresses': [a for a in addresses if ':' not in a],
                              'all_ipv6_addresses': [a for a in addresses if ':' in a]}}


HOSTVARS = {
    'lb': facts('10.0.0.10', 'fe80::10', 'fd00::10'),
    'data': {**facts('10.0.0.11'), 'surrealdb_bind_address': '10.0.0.11:8000', 'ollama_host': '[::]:11434'},
    'app1': {**facts('10.0.0.21'), 'cynic_bind_address': '10.0.0.21',
             'cynic_instances': [{'id': 1, 'port': 8001, 'side_ports': [9100, '9200-9201']}, {'id': 2, 'port': '8002'}],
             'cynic_side_port_offsets': [1000]},
    'app2': {**facts('fd00::22'), 'cynic_bind_address': '::'},
    'mon1': {'firewall_address': ['10.0.9.0/24']},
}
GROUPS = {'all': list(HOSTVARS), 'cynic_lb': ['lb'], 'cynic_db': ['data'], 'cynic_llm': ['data'],
          'cynic_app': ['app1', 'app2'], 'cynic_monitor': ['mon1']}


def rules(host, hostvars=None, groups=None, **kwargs):
    return {r['name']: r for r in firewall_rules(HOSTVARS if hostvars is None else hostvars, host,
                                                 GROUPS if groups is None else groups, **kwargs)}


def sources(rule):
    return {'ipv4': rule['ipv4'], 'ipv6': rule['ipv6']}


def test_the_filter_is_registered():
    assert FilterModule().filters()['firewall_rules'] is firewall_rules


def test_ssh_comes_first_and_is_open_to_anyone_by_default():
    out = firewall_rules(HOSTVARS, 'lb', GROUPS)
    assert out[0]['name'] == 'ssh' and out[0]['ports'] == ['22'] and sources(out[0]) == ANY


def test_the_load_balancer_opens_nginx_to_the_public_sources():
    lb = rules('lb')
    assert list(lb) == ['ssh', 'cynic_lb']
    assert lb['cynic_lb']['ports'] == ['80'] and sources(lb['cynic_lb']) == ANY
    hv = copy.deepcopy(HOSTVARS)
    hv['lb'].update(nginx_lb_listen_port=8080, nginx_lb_https_port=8443, nginx_lb_tls_certificate='lb.crt')
    assert rules('lb', hv)['cynic_lb']['ports'] == ['8080']  # no key: nginx serves no HTTPS
    hv['lb'].update(nginx_lb_tls_key='lb.key')
    lb = rules('lb', hv, public_sources=['192.0.2.0/24', 'fd00::/8'])
    assert lb['cynic_lb']['ports'] == ['8080', '8443']
    del hv['lb']['nginx_lb_https_port']
    assert rules('lb', hv)['cynic_lb']['ports'] == ['443', '8080']  # the nginx_lb role's default HTTPS port
    assert sources(lb['cynic_lb']) == {'ipv4': ['192.0.2.0/24'], 'ipv6': ['fd00::/8']}


def test_surrealdb_is_open_to_the_app_and_monitor_hosts_only_and_ollama_to_the_app_hosts():
    data = rules('data')
    assert list(data) == ['ssh', 'cynic_db', 'cynic_llm']
    assert data['cynic_db']['ports'] == ['8000']
    assert sources(data['cynic_db']) == {'ipv4': ['10.0.0.21', '10.0.9.0/24'], 'ipv6': ['fd00::22']}
    assert data['cynic_llm']['ports'] == ['11434']
    assert sources(data['cynic_llm']) == {'ipv4': ['10.0.0.21'], 'ipv6': ['fd00::22']}


def test_every_instance_port_is_open_to_the_load_balancer_and_monitor_hosts_only():
    app1, app2 = rules('app1'), rules('app2')
    # 8001, 8002, + offset 1000 each, side ports 9100 and 9200-9201, merged
    assert app1['cynic_app']['ports'] == ['8001-8002', '9001-9002', '9100', '9200-9201']
    assert app2['cynic_app']['ports'] == ['8001-8003']  # the cynic role's default instances
    for rule in (app1['cynic_app'], app2['cynic_app']):
        # the load balancer's link-local address is left out
        assert sources(rule) == {'ipv4': ['10.0.0.10', '10.0.9.0/24'], 'ipv6': ['fd00::10']}


def test_the_roles_loopback_defaults_open_nothing():
    hv = {'solo': facts('10.0.0.5')}
    groups = {'cynic_lb': ['solo'], 'cynic_db': ['solo'], 'cynic_llm': ['solo'], 'cynic_app': ['solo']}
    solo = rules('solo', hv, groups)
    assert list(solo) == ['ssh', 'cynic_lb', 'cynic_db', 'cynic_llm', 'cynic_app']
    for name in ('cynic_db', 'cynic_llm', 'cynic_app'):
        assert solo[name]['ports'] == [] and sources(solo[name]) == {'ipv4': [], 'ipv6': []}
        assert 'loopback only' in solo[name]['comment']


def test_an_all_in_one_host_with_private_binds_names_itself():
    hv = {'solo': {**facts('10.0.0.5', 'fd00::5'), 'surrealdb_bind_address': '0.0.0.0:8000',
                   'cynic_bind_address': '10.0.0.5', 'cynic_instances': [{'id': 1, 'port': 8001}]}}
    groups = {'cynic_lb': ['solo'], 'cynic_db': ['solo'], 'cynic_llm': ['solo'], 'cynic_app': ['solo']}
    solo = rules('solo', hv, groups)
    assert sources(solo['cynic_db']) == sources(solo['cynic_app']) == {'ipv4': ['10.0.0.5'], 'ipv6': ['fd00::5']}
    assert solo['cynic_llm']['ports'] == []  # Ollama still on its loopback default


def test_firewall_address_replaces_the_facts_and_a_string_is_one_address():
    hv = copy.deepcopy(HOSTVARS)
    hv['app1']['firewall_address'] = '198.51.100.21'
    hv['app2']['firewall_address'] = ['fd00:aa::/64', '198.51.100.22']
    assert sources(rules('data', hv)['cynic_llm']) == {'ipv4': ['198.51.100.21', '198.51.100.22'], 'ipv6': ['fd00:aa::/64']}


def test_facts_lose_their_loopback_and_link_local_addresses_and_duplicates():
    hv = copy.deepcopy(HOSTVARS)
    hv['lb'] = facts('10.0.0.10', '127.0.0.1', '::1', 'fe80::1', '10.0.0.10')
    assert sources(rules('app1', hv)['cynic_app'])['ipv4'] == ['10.0.0.10', '10.0.9.0/24']
    assert sources(rules('app1', hv)['cynic_app'])['ipv6'] == []


def test_the_output_is_sorted_whatever_the_facts_order():
    hv = copy.deepcopy(HOSTVARS)
    hv['app1'] = {**HOSTVARS['app1'], **facts('10.0.0.200', '10.0.0.3', 'fd00::b', 'fd00::a')}
    rule = rules('data', hv)['cynic_llm']
    assert rule['ipv4'] == ['10.0.0.3', '10.0.0.200'] and rule['ipv6'] == ['fd00::a', 'fd00::b', 'fd00::22']  # by value


def test_no_monitor_group_is_an_empty_one():
    groups = {k: v for k, v in GROUPS.items() if k != 'cynic_monitor'}
    assert sources(rules('data', groups=groups)['cynic_db']) == {'ipv4': ['10.0.0.21'], 'ipv6': ['fd00::22']}
    assert 'cynic_monitor (no host)' in rules('data', groups=groups)['cynic_db']['comment']


def test_any_among_the_sources_is_any():
    ssh = rules('lb', ssh_sources=['10.0.0.0/8', '0.0.0.0/0'])['ssh']
    assert sources(ssh) == {'ipv4': ['0.0.0.0/0'], 'ipv6': []}


def test_extra_rules_take_ranges_udp_groups_and_hosts():
    extra = [{'ports': [9180, '60000-60010', '60005-60020'], 'proto': 'udp', 'sources': ['cynic_monitor', 'app2', '192.0.2.7'],
              'comment': 'mosh\nand more'},
             {'port': 9100, 'sources': ['0.0.0.0/0', '::/0']}]
    out = rules('lb', extra_rules=extra)
    assert out['extra 0']['proto'] == 'udp' and out['extra 0']['ports'] == ['9180', '60000-60020']
    assert sources(out['extra 0']) == {'ipv4': ['10.0.9.0/24', '192.0.2.7'], 'ipv6': ['fd00::22']}
    assert out['extra 0']['comment'] == 'mosh and more'  # one comment line, whatever it was given
    assert out['extra 1']['proto'] == 'tcp' and out['extra 1']['comment'] == 'firewall_extra_rules[1]'
    assert sources(out['extra 1']) == ANY


@pytest.mark.parametrize('change, message', [
    ({'app2': {'cynic_bind_address': '::'}}, r'host app2 \(a cynic_app host, client of SurrealDB on data\) has no facts'),
    ({'app2': {'firewall_address': ['app2.example']}}, "firewall_address of host app2: 'app2.example' is not"),
    ({'app2': {'ansible_facts': {'all_ipv4_addresses': ['127.0.0.1'], 'all_ipv6_addresses': ['fe80::2']}}},
     'host app2 .* has no address in its facts but loopback and link-local ones'),
    ({'data': {**facts('10.0.0.11'), 'surrealdb_bind_address': '10.0.0.11'}}, "surrealdb_bind_address of host data must be HOST:PORT"),
    ({'data': {**facts('10.0.0.11'), 'ollama_host': '10.0.0.11:99999'}}, 'ollama_host of host data must be a port number'),
])
def test_what_stops_the_rules_names_the_host(change, message):
    hv = copy.deepcopy(HOSTVARS)
    hv.update(change)
    with pytest.raises(AnsibleFilterError, match='^firewall: ' + message):
        firewall_rules(hv, 'data', GROUPS)


def test_a_peer_outside_the_inventory_is_named():
    groups = dict(GROUPS, cynic_app=['app1', 'ghost'])
    with pytest.raises(AnsibleFilterError, match='host ghost is not in the inventory'):
        firewall_rules(HOSTVARS, 'data', groups)


@pytest.mark.parametrize('kwargs, message', [
    ({'ssh_sources': []}, 'firewall_ssh_sources is empty'),
    ({'public_sources': []}, 'firewall_public_sources is empty'),
    ({'ssh_port': 0}, 'firewall_ssh_port must be a port number'),
    ({'ssh_sources': 'any'}, 'firewall_ssh_sources must be a list'),
    ({'ssh_sources': ['nowhere']}, "firewall_ssh_sources: 'nowhere' is neither an address, a network, an inventory group"),
    ({'extra_rules': {'port': 1}}, 'firewall_extra_rules must be a list'),
    ({'extra_rules': [{'port': 1, 'ports': [2], 'sources': ['::/0']}]}, r'firewall_extra_rules\[0\] needs port or ports'),
    ({'extra_rules': [{'sources': ['::/0']}]}, r'firewall_extra_rules\[0\] needs port or ports'),
    ({'extra_rules': [{'port': 1}]}, r'firewall_extra_rules\[0\] needs sources'),
    ({'extra_rules': [{'port': 1, 'sources': ['::/0'], 'proto': 'icmp'}]}, 'proto must be tcp or udp'),
    ({'extra_rules': [{'ports': ['9-1'], 'sources': ['::/0']}]}, "the range '9-1' ends below its start"),
    ({'extra_rules': [{'ports': ['http'], 'sources': ['::/0']}]}, "'http' is neither a port nor a low-high range"),
    ({'extra_rules': [{'port': 1, 'sources': ['::/0'], 'from': 'x'}]}, 'unknown keys from'),
])
def test_bad_inputs_are_refused(kwargs, message):
    with pytest.raises(AnsibleFilterError, match=message):
        firewall_rules(HOSTVARS, 'lb', GROUPS, **kwargs)
