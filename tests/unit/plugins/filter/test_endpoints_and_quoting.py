# -*- coding: utf-8 -*-
# Copyright: (c) 2026, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""surrealdb_endpoint (where SurrealDB is reached), surql_string and systemd_unquote."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

# pylint: disable=wrong-import-position
from ansible_collections.cynic.cluster.plugins.filter.surql_string import surql_string
from ansible_collections.cynic.cluster.plugins.filter.surrealdb_endpoint import surrealdb_endpoint
from ansible_collections.cynic.cluster.plugins.filter.systemd_quote import systemd_quote
from ansible_collections.cynic.cluster.plugins.filter.systemd_unquote import systemd_unquote


@pytest.mark.parametrize('db_vars, local, remote', [
    ({}, 'http://127.0.0.1:8000', 'http://127.0.0.1:8000'),
    ({'surrealdb_bind_address': '10.0.0.11:8000'}, 'http://10.0.0.11:8000', 'http://10.0.0.11:8000'),
    ({'surrealdb_bind_address': '0.0.0.0:9000', 'ansible_host': 'db.example'},
     'http://127.0.0.1:9000', 'http://db.example:9000'),
    ({'surrealdb_bind_address': '0.0.0.0:9000'}, 'http://127.0.0.1:9000', 'http://db1:9000'),
    ({'surrealdb_bind_address': '[::]:8000', 'ansible_host': 'fd00::11'}, 'http://[::1]:8000', 'http://[fd00::11]:8000'),
    ({'surrealdb_bind_address': '[fd00::11]:8000'}, 'http://[fd00::11]:8000', 'http://[fd00::11]:8000'),
    ({'surrealdb_bind_address': '[::1]:8000'}, 'http://[::1]:8000', 'http://[::1]:8000'),
])
def test_the_endpoint_from_loopback_private_wildcard_and_ipv6_binds(db_vars, local, remote):
    endpoint = surrealdb_endpoint(db_vars, 'db1')
    assert endpoint['local_url'] == local
    assert endpoint['url'] == remote
    assert endpoint['rpc_url'] == remote.replace('http://', 'ws://') + '/rpc'
    assert endpoint['tls'] is False and endpoint['port'] == int(remote.rsplit(':', 1)[1])
    assert endpoint['local_ca_path'] == ''


def test_a_certificate_makes_every_url_tls():
    endpoint = surrealdb_endpoint({'surrealdb_bind_address': '10.0.0.11:8000',
                                   'surrealdb_tls_certificate': 'files/db.crt'}, 'db1')
    assert endpoint == {'tls': True, 'port': 8000, 'local_url': 'https://10.0.0.11:8000',
                        'url': 'https://10.0.0.11:8000', 'rpc_url': 'wss://10.0.0.11:8000/rpc', 'local_ca_path': ''}
    with_ca = {'surrealdb_tls_certificate': 'files/db.crt', 'surrealdb_tls_ca': 'files/ca.crt'}
    assert surrealdb_endpoint(with_ca, 'db1')['local_ca_path'] == '/etc/surrealdb/tls/ca.crt'
    assert surrealdb_endpoint(dict(with_ca, surrealdb_config_dir='/srv/sdb'), 'db1')['local_ca_path'] == '/srv/sdb/tls/ca.crt'


@pytest.mark.parametrize('bind', ['8000', ':8000', '10.0.0.1:', 'db:port'])
def test_a_bind_address_without_host_and_port_is_refused(bind):
    with pytest.raises(AnsibleFilterError, match='HOST:PORT'):
        surrealdb_endpoint({'surrealdb_bind_address': bind}, 'db1')


def test_surql_strings_escape_quotes_and_backslashes():
    assert surql_string('plain') == "'plain'"
    assert surql_string(" it's a \\ \"x\" `y` $z ") == "' it\\'s a \\\\ \"x\" `y` $z '"
    with pytest.raises(AnsibleFilterError, match='control character'):
        surql_string('two\nlines')


@pytest.mark.parametrize('value', ['plain', ' molecule "only" \\se`cr`et 100% #3b1f ', '$HOME', ''])
def test_systemd_unquote_reads_back_what_systemd_quote_wrote(value):
    text = '# managed\nSURREAL_USER="root"\nSURREAL_PASS=%s\n' % systemd_quote(value)
    assert systemd_unquote(text, 'SURREAL_PASS') == value
    assert systemd_unquote(text, 'SURREAL_USER') == 'root'
    assert systemd_unquote(text, 'OTHER') == ''
