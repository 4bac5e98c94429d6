# -*- coding: utf-8 -*-
# Copyright: (c) 2026, CYNIC cluster team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: surrealdb_endpoint
short_description: Where the cluster's SurrealDB is reached, from the database host's variables
version_added: 1.0.0
description:
  - The one place that turns the database host's C(surrealdb_bind_address) and TLS settings into URLs, for the
    surrealdb role's own checks, the instances, the stress check and the drills.
  - A wildcard bind address (C(0.0.0.0), C([::])) is where SurrealDB listens, not where to reach it. On the
    database host itself checks go to loopback (C(127.0.0.1), or C([::1]) for C([::])); other hosts use the
    database host's C(ansible_host), else its inventory name.
  - With C(surrealdb_tls_certificate) set, every URL is C(https://) or C(wss://).
options:
  _input:
    description: The database host's variables (C(hostvars[groups['cynic_db'][0]])).
    type: dict
    required: true
  name:
    description: The database host's inventory name, the address of last resort for a wildcard bind.
    type: str
    required: true
author:
  - CYNIC cluster team
"""

EXAMPLES = r"""
- name: The URL the instances sign in at
  ansible.builtin.set_fact:
    surreal_rpc: "{{ (hostvars[groups['cynic_db'][0]] | cynic.cluster.surrealdb_endpoint(groups['cynic_db'][0])).rpc_url }}"
"""

RETURN = r"""
_value:
  description: The endpoint.
  type: dict
  contains:
    tls:
      description: Whether SurrealDB serves TLS.
      type: bool
    port:
      description: Its port.
      type: int
    local_url:
      description: Its HTTP(S) base URL as seen from the database host itself (checks, schema, look-ups).
      type: str
    url:
      description: Its HTTP(S) base URL as seen from other hosts.
      type: str
    rpc_url:
      description: The WebSocket RPC URL other hosts (the instances) connect to.
      type: str
    local_ca_path:
      description:
        - Where the surrealdb role puts the CA of C(surrealdb_tls_ca) on the database host, for checks made there;
          empty without one (the host's trust store).
      type: str
"""

_DEFAULT_BIND = '127.0.0.1:8000'
_DEFAULT_CONFIG_DIR = '/etc/surrealdb'
_WILDCARDS = {'0.0.0.0': '127.0.0.1', '::': '::1'}


def _bracketed(host):
    return '[%s]' % host if ':' in host else host


def surrealdb_endpoint(db_vars, name):
    if not isinstance(db_vars, Mapping):  # hostvars[...] is a mapping, not a dict
        raise AnsibleFilterError('surrealdb_endpoint: expected the database host\'s variables, got %s'
                                 % type(db_vars).__name__)
    bind = str(db_vars.get('surrealdb_bind_address') or _DEFAULT_BIND)
    host, sep, port = bind.rpartition(':')
    if not sep or not port.isdigit() or not host:
        raise AnsibleFilterError('surrealdb_endpoint: surrealdb_bind_address must be HOST:PORT, got %r' % bind)
    host = host[1:-1] if host.startswith('[') and host.endswith(']') else host
    tls = bool(db_vars.get('surrealdb_tls_certificate'))
    http = 'https' if tls else 'http'
    if host in _WILDCARDS:
        local = _WILDCARDS[host]
        remote = str(db_vars.get('ansible_host') or name)
    else:
        local = remote = host
    url = '%s://%s:%s' % (http, _bracketed(remote), port)
    return {
        'tls': tls,
        'port': int(port),
        'local_url': '%s://%s:%s' % (http, _bracketed(local), port),
        'url': url,
        'rpc_url': '%s://%s:%s/rpc' % ('wss' if tls else 'ws', _bracketed(remote), port),
        'local_ca_path': ('%s/tls/ca.crt' % (db_vars.get('surrealdb_config_dir') or _DEFAULT_CONFIG_DIR)
                          if tls and db_vars.get('surrealdb_tls_ca') else ''),
    }


class FilterModule:
    def filters(self):
        return {'surrealdb_endpoint': surrealdb_endpoint}
