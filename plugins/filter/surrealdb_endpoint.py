# -*- coding: utf-8 -*-
# Copyright: (c) 2026, CYNIC cluster team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.cynic.cluster.plugins.plugin_utils import topology as _topology

DOCUMENTATION = r"""
name: surrealdb_endpoint
short_description: Where the cluster's SurrealDB is reached, from the database host's variables
version_added: 1.0.0
description:
  - Turns the database host's C(surrealdb_bind_address) and TLS settings into URLs, for the surrealdb role's
    own checks on its own values. It is the C(surrealdb) part of the C(cynic.cluster.topology) filter (the same
    code), which the instances, the stress check and the drills use.
  - A variable missing from O(_input) is the surrealdb role's default.
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
# The surrealdb role, on its own values (role parameters included, which hostvars would miss).
- name: Show where the role's own checks reach SurrealDB
  ansible.builtin.debug:
    msg: "{{ {'surrealdb_bind_address': surrealdb_bind_address} | cynic.cluster.surrealdb_endpoint(inventory_hostname) }}"
"""

RETURN = r"""
_value:
  description:
    - The endpoint, the C(surrealdb) entry of the C(cynic.cluster.topology) filter's result without C(host) and C(ca_file)
      (C(tls), C(port), C(url), C(local_url), C(rpc_url), C(local_ca_path)); that filter documents them.
  type: dict
"""


def surrealdb_endpoint(db_vars, name):
    if not isinstance(db_vars, Mapping):  # hostvars[...] is a mapping, not a dict
        raise AnsibleFilterError('surrealdb_endpoint: expected the database host\'s variables, got %s'
                                 % type(db_vars).__name__)
    # The same code as the topology filter's surrealdb, on these variables alone (the surrealdb role passes its
    # own values, role parameters included, which hostvars would miss).
    try:
        return _topology.surrealdb({name: db_vars}, name)
    except _topology.InventoryError as err:
        raise AnsibleFilterError('surrealdb_endpoint: %s' % err.message) from None


class FilterModule:
    def filters(self):
        return {'surrealdb_endpoint': surrealdb_endpoint}
