# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

# The same function the topology filter builds its URLs with.
from ansible_collections.cynic.cluster.plugins.plugin_utils.topology import url_host

DOCUMENTATION = r"""
name: url_host
short_description: A host name or address as the host part of a URL or of an nginx server address
version_added: 1.0.0
description:
  - Returns an IPv6 literal in square brackets, as URLs (RFC 3986) and nginx's C(server address:port) need it
    before a port can follow; host names, IPv4 addresses and already bracketed literals come back unchanged.
  - The roles build every C(host:port) from inventory values with it, so that an IPv6 C(ansible_host) or bind
    address gives C([fd00::21]:8001), not the unparseable C(fd00::21:8001).
options:
  _input:
    description: A host name, an IPv4 address or an IPv6 address (bracketed or not).
    type: str
    required: true
author:
  - CYNIC cluster team
"""

EXAMPLES = r"""
- name: The health URL of an instance, whatever its address family
  ansible.builtin.uri:
    url: "http://{{ cynic_bind_address | cynic.cluster.url_host }}:8001/health"
"""

RETURN = r"""
_value:
  description: The host, IPv6 literals in brackets.
  type: str
"""


class FilterModule:
    def filters(self):
        return {'url_host': url_host}
