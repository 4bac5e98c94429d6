# -*- coding: utf-8 -*-
# Copyright: (c) 2026, CYNIC cluster team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.cynic.cluster.plugins.plugin_utils import topology as _topology

DOCUMENTATION = r"""
name: topology
short_description: Where each service of the CYNIC cluster is reached, computed from the inventory
version_added: 1.0.0
description:
  - The one place that turns the inventory into addresses - the SurrealDB endpoint, the Ollama URLs, every
    CYNIC instance of every app host and the load balancer's upstream list. The roles, the stress check and
    the drills read it instead of working it out in Jinja.
  - Each host's variables come from C(hostvars); a variable the host does not set is the default of the role
    that owns it (C(roles/<role>/defaults/main.yml)), rendered for that host (so C(cynic_instance_id_prefix)
    is the host's inventory name and C(-)), since role defaults are not host variables.
  - A wildcard bind address (C(0.0.0.0), C(::), C([::])) is where a service listens, not where to reach it.
    Other hosts use the host's C(ansible_host), else its inventory name; the host itself uses loopback
    (C(127.0.0.1); C([::1]) for SurrealDB bound to C([::])).
  - IPv6 addresses are put in brackets wherever a port follows. With C(surrealdb_tls_certificate) set on the
    database host, its URLs are C(https://) and C(wss://).
  - A group absent from the inventory is an empty one.
options:
  _input:
    description: C(hostvars).
    type: dict
    required: true
  groups:
    description: The inventory's C(groups).
    type: dict
    required: true
  db_group:
    description: The group whose first host runs SurrealDB.
    type: str
    default: cynic_db
  llm_group:
    description: The group whose hosts run Ollama.
    type: str
    default: cynic_llm
  app_group:
    description: The group whose hosts run the CYNIC instances.
    type: str
    default: cynic_app
author:
  - CYNIC cluster team
"""

EXAMPLES = r"""
- name: The URL the instances sign in to SurrealDB at
  ansible.builtin.debug:
    msg: "{{ (hostvars | cynic.cluster.topology(groups)).surrealdb.rpc_url }}"

- name: Every instance's health, from the host that runs it
  ansible.builtin.uri:
    url: "{{ item.local_url }}/health"
  delegate_to: "{{ item.host }}"
  loop: "{{ (hostvars | cynic.cluster.topology(groups)).instances }}"
  loop_control:
    label: "{{ item.instance_id }}"

- name: nginx's upstream servers for another app group
  ansible.builtin.set_fact:
    servers: "{{ (hostvars | cynic.cluster.topology(groups, app_group='cynic_canary')).upstream }}"
"""

RETURN = r"""
_value:
  description: The cluster's topology.
  type: dict
  contains:
    surrealdb:
      description: The first host of O(db_group), as the C(cynic.cluster.surrealdb_endpoint) filter gives it; none when the group is empty.
      type: dict
      contains:
        host:
          description: Its inventory name.
          type: str
        tls:
          description: Whether SurrealDB serves TLS.
          type: bool
        port:
          description: Its port.
          type: int
        url:
          description: Its HTTP(S) base URL as seen from other hosts.
          type: str
        local_url:
          description: Its HTTP(S) base URL as seen from the database host itself.
          type: str
        rpc_url:
          description: The WebSocket RPC URL the instances connect to.
          type: str
        local_ca_path:
          description: Where the surrealdb role puts the CA on the database host; empty without one.
          type: str
        ca_file:
          description: The controller path of that CA (C(surrealdb_tls_ca)), for the instances; empty without one.
          type: str
    ollama:
      description: Every host of O(llm_group), from its C(ollama_host).
      type: list
      elements: dict
      contains:
        host:
          description: Its inventory name.
          type: str
        url:
          description: Ollama's base URL as seen from other hosts.
          type: str
        local_url:
          description: Ollama's base URL as seen from its own host.
          type: str
    ollama_urls:
      description: Every Ollama's URL as seen from other hosts, in inventory order; empty when O(llm_group) is.
      type: list
      elements: str
    instances:
      description:
        - Every instance of every host of O(app_group), in inventory order, from C(cynic_instances),
          C(cynic_bind_address) and C(cynic_instance_id_prefix).
      type: list
      elements: dict
      contains:
        host:
          description: The app host's inventory name.
          type: str
        id:
          description: The instance's id (C(cynic@<id>)).
          type: str
        port:
          description: Its port.
          type: int
        instance_id:
          description: Its C(INSTANCE_ID), C(cynic_instance_id_prefix) and the id.
          type: str
        url:
          description: Its base URL as seen from other hosts (the load balancer, the load generator).
          type: str
        local_url:
          description: Its base URL as seen from its own host.
          type: str
    upstream:
      description: nginx's C(server) addresses, C(host:port) per instance (an IPv6 host in brackets).
      type: list
      elements: str
"""


def topology(hostvars, groups, db_group=_topology.DB_GROUP, llm_group=_topology.LLM_GROUP,
             app_group=_topology.APP_GROUP):
    try:
        return _topology.topology(hostvars, groups, db_group=db_group, llm_group=llm_group, app_group=app_group)
    except _topology.InventoryError as err:
        raise AnsibleFilterError('topology: %s' % err.message) from None


class FilterModule:
    def filters(self):
        return {'topology': topology}
