# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.cynic.cluster.plugins.plugin_utils import topology as _topology

DOCUMENTATION = r"""
name: firewall_rules
short_description: The ports one host of the CYNIC cluster opens, and to whom, computed from the inventory
version_added: 1.0.0
description:
  - The one place where the C(firewall) role decides what a host accepts. It returns one rule per reason a port is
    open, in a fixed order, each with its protocol, ports and the exact source addresses per address family.
  - C(ssh) first, from O(ssh_sources). Then, for each cluster group the host is in, the ports that group's role
    listens on, read from the host's own variables with the same defaults as the roles that open them -
    C(cynic_lb) nginx's C(nginx_lb_listen_port), and its C(nginx_lb_https_port) when both C(nginx_lb_tls_certificate)
    and C(nginx_lb_tls_key) are set (nginx serves HTTPS then), from O(public_sources);
    C(cynic_db) the port of C(surrealdb_bind_address) from the C(cynic_app) and O(monitor_group) hosts;
    C(cynic_llm) the port of C(ollama_host) from the C(cynic_app) hosts; C(cynic_app) every instance's port, the
    ports at C(cynic_side_port_offsets) from it and its C(side_ports), from the C(cynic_lb) and O(monitor_group)
    hosts. Last, O(extra_rules).
  - A service bound to a loopback address (the roles' defaults) is reachable from this host only; its rule opens
    nothing and says so.
  - A peer host's addresses are its C(firewall_address) host variable when set, or else its gathered facts
    (C(ansible_facts.all_ipv4_addresses) and C(all_ipv6_addresses), link-local addresses left out). A peer
    without either stops the filter with an error that names it.
  - Sources are IPv4 or IPv6 addresses or networks; in O(ssh_sources), O(public_sources) and O(extra_rules) also
    inventory group or host names, which stand for those hosts' addresses. C(0.0.0.0/0) and C(::/0) mean any
    source of that family.
options:
  _input:
    description: C(hostvars).
    type: dict
    required: true
  host:
    description: The host the rules are for, C(inventory_hostname).
    type: str
    required: true
  groups:
    description: The inventory's C(groups).
    type: dict
    required: true
  ssh_port:
    description: The SSH port.
    type: int
    default: 22
  ssh_sources:
    description: Who may reach SSH.
    type: list
    elements: str
    default: ['0.0.0.0/0', '::/0']
  public_sources:
    description: Who may reach the load balancer's ports.
    type: list
    elements: str
    default: ['0.0.0.0/0', '::/0']
  monitor_group:
    description: Inventory group whose hosts also reach SurrealDB and the instances (Prometheus); absent is empty.
    type: str
    default: cynic_monitor
  extra_rules:
    description:
      - More rules, each a dict with C(port) (one port) or C(ports) (a list of ports and C(low-high) ranges),
        C(proto) (C(tcp), the default, or C(udp)), C(sources) (required, not empty) and an optional C(comment).
    type: list
    elements: dict
    default: []
author:
  - CYNIC cluster team
"""

EXAMPLES = r"""
- name: What this host would open
  ansible.builtin.debug:
    msg: "{{ hostvars | cynic.cluster.firewall_rules(inventory_hostname, groups) }}"
"""

RETURN = r"""
_value:
  description: The rules, in the order they are to be written.
  type: list
  elements: dict
  contains:
    name:
      description: C(ssh), the group's name, or C(extra N).
      type: str
    comment:
      description: What the rule opens and to whom, for a comment in the ruleset.
      type: str
    proto:
      description: C(tcp) or C(udp).
      type: str
    ports:
      description: Ports and C(low-high) ranges, sorted and merged; empty when the rule opens nothing.
      type: list
      elements: str
    ipv4:
      description: IPv4 sources, sorted; C([0.0.0.0/0]) for any; empty for none.
      type: list
      elements: str
    ipv6:
      description: IPv6 sources, sorted; C([::/0]) for any; empty for none.
      type: list
      elements: str
"""

LB_GROUP = _topology.LB_GROUP
DB_GROUP = _topology.DB_GROUP
LLM_GROUP = _topology.LLM_GROUP
APP_GROUP = _topology.APP_GROUP

# The roles' defaults the rules depend on, for a host that does not set them (role defaults are not host
# variables): read from the roles' defaults files by _var. tests/unit/roles/test_firewall.py lists them.
ROLE_DEFAULTS = _topology.RoleDefaults((
    'nginx_lb_listen_port', 'nginx_lb_https_port', 'nginx_lb_tls_certificate', 'nginx_lb_tls_key',
    'surrealdb_bind_address', 'ollama_host', 'cynic_bind_address', 'cynic_instances', 'cynic_side_port_offsets'))

ANY = {4: ipaddress.ip_network('0.0.0.0/0'), 6: ipaddress.ip_network('::/0')}
_LINK_LOCAL = ipaddress.ip_network('fe80::/10')
_PORT_RANGE = re.compile(r'^([0-9]+)(?:-([0-9]+))?$')
_vars = _topology.host_vars
_var = _topology.host_var  # the host's own value, else its role's default
_port = _topology.port
_loopback = _topology.is_loopback


def _fail(message):
    raise AnsibleFilterError('firewall: ' + message)


def _port_ranges(values, what):
    """[(low, high)] from ports and "low-high" strings."""
    out = []
    for value in values:
        match = _PORT_RANGE.match(str(value).strip()) if not isinstance(value, bool) else None
        if match is None:
            _fail('%s: %r is neither a port nor a low-high range' % (what, value))
        low = _port(match.group(1), what)
        high = _port(match.group(2), what) if match.group(2) else low
        if high < low:
            _fail('%s: the range %r ends below its start' % (what, value))
        out.append((low, high))
    return out


def _merged(ranges):
    """Sorted, overlapping and adjacent ranges merged, as nft would print them: ["8000", "8001-8003"]."""
    merged = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return [str(low) if low == high else '%d-%d' % (low, high) for low, high in merged]


def _bind(value, name, key):
    """(host, port) of a HOST:PORT setting of host name."""
    return _topology.host_port(value, '%s of host %s' % (key, name))


def _network(text):
    try:
        return ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError:
        return None


def _host_addresses(hostvars, name, why):
    """The addresses of peer host name: its firewall_address, or else its facts (link-local left out)."""
    data = _vars(hostvars, name)
    override = data['firewall_address'] if 'firewall_address' in data else None
    if override:
        values = [override] if isinstance(override, str) else list(override)
        nets = []
        for value in values:
            net = _network(value)
            if net is None:
                _fail('firewall_address of host %s: %r is not an IPv4 or IPv6 address or network' % (name, value))
            nets.append(net)
        return nets
    facts = data['ansible_facts'] if 'ansible_facts' in data else None
    if not isinstance(facts, Mapping) or ('all_ipv4_addresses' not in facts and 'all_ipv6_addresses' not in facts):
        _fail('host %s (%s) has no facts with its addresses (ansible_facts.all_ipv4_addresses): gather facts on it in '
              'the same run (playbooks/site.yml does, unless --limit leaves it out), or give its addresses as its '
              'host variable firewall_address' % (name, why))
    nets = []
    for value in list(facts.get('all_ipv4_addresses') or []) + list(facts.get('all_ipv6_addresses') or []):
        net = _network(value)
        if net is None or net.is_loopback or (net.version == 6 and net.subnet_of(_LINK_LOCAL)):
            continue
        nets.append(net)
    if not nets:
        _fail('host %s (%s) has no address in its facts but loopback and link-local ones: give its addresses as its '
              'host variable firewall_address' % (name, why))
    return nets


def _group_addresses(hostvars, groups, group, why):
    nets = []
    for name in groups.get(group) or []:
        nets += _host_addresses(hostvars, name, why)
    return nets


def _resolve(hostvars, groups, entries, what):
    """Sources given as addresses, networks, group names or host names, as networks."""
    if isinstance(entries, str) or not isinstance(entries, (list, tuple)):
        _fail('%s must be a list, got %r' % (what, entries))
    nets = []
    for entry in entries:
        net = _network(entry)
        if net is not None:
            nets.append(net)
        elif isinstance(entry, str) and entry in groups:
            nets += _group_addresses(hostvars, groups, entry, 'group %s in %s' % (entry, what))
        elif isinstance(entry, str) and entry in hostvars:
            nets += _host_addresses(hostvars, entry, 'named in %s' % what)
        else:
            _fail('%s: %r is neither an address, a network, an inventory group nor an inventory host' % (what, entry))
    return nets


def _by_family(nets):
    out = {}
    for version in (4, 6):
        family = {net for net in nets if net.version == version}
        if ANY[version] in family:
            family = {ANY[version]}
        out['ipv%d' % version] = [
            str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
            for net in sorted(family, key=lambda n: (n.network_address, n.prefixlen))
        ]
    return out


def _rule(name, comment, proto, ranges, nets):
    # The comment becomes a comment line of the ruleset: no line break may end it early.
    comment = ' '.join(''.join(c if c.isprintable() else ' ' for c in comment).split())
    rule = {'name': name, 'comment': comment, 'proto': proto, 'ports': _merged(ranges)}
    rule.update(_by_family(nets) if ranges else {'ipv4': [], 'ipv6': []})
    return rule


def _describe(groups, names):
    parts = []
    for group in names:
        hosts = groups.get(group) or []
        parts.append('%s (%s)' % (group, ', '.join(hosts) if hosts else 'no host'))
    return ' and '.join(parts)


def firewall_rules(hostvars, host, groups, **options):
    """The rules; options as DOCUMENTATION gives them. Missing or bad inventory data is named in the error."""
    try:
        return _firewall_rules(hostvars, host, groups, **options)
    except _topology.InventoryError as err:
        _fail(err.message)


def _firewall_rules(hostvars, host, groups, ssh_port=22, ssh_sources=('0.0.0.0/0', '::/0'),
                    public_sources=('0.0.0.0/0', '::/0'), monitor_group='cynic_monitor', extra_rules=()):
    if not isinstance(groups, Mapping):
        _fail('groups must be the inventory groups, got %r' % (groups,))
    ssh_sources = list(ssh_sources) if isinstance(ssh_sources, tuple) else ssh_sources
    public_sources = list(public_sources) if isinstance(public_sources, tuple) else public_sources
    if not ssh_sources:
        _fail('firewall_ssh_sources is empty: nobody could open an SSH connection to %s any more' % host)
    rules = [_rule('ssh', 'SSH (%s) from firewall_ssh_sources' % ssh_port, 'tcp', [(_port(ssh_port, 'firewall_ssh_port'),) * 2],
                   _resolve(hostvars, groups, ssh_sources, 'firewall_ssh_sources'))]

    member = {group for group in (LB_GROUP, DB_GROUP, LLM_GROUP, APP_GROUP) if host in (groups.get(group) or [])}

    if LB_GROUP in member:
        ports = [_port(_var(hostvars, host, 'nginx_lb_listen_port'), 'nginx_lb_listen_port of host %s' % host)]
        # nginx listens on its HTTPS port when it has both a certificate and its key, as the nginx_lb role decides.
        if all(str(_var(hostvars, host, key) or '').strip() for key in ('nginx_lb_tls_certificate', 'nginx_lb_tls_key')):
            ports.append(_port(_var(hostvars, host, 'nginx_lb_https_port'), 'nginx_lb_https_port of host %s' % host))
        if not public_sources:
            _fail('firewall_public_sources is empty: no client could reach the load balancer on %s' % host)
        rules.append(_rule(LB_GROUP, 'nginx (%s) from firewall_public_sources' % ', '.join(map(str, ports)), 'tcp',
                           [(p, p) for p in ports], _resolve(hostvars, groups, public_sources, 'firewall_public_sources')))

    # SurrealDB and Ollama: the port of their HOST:PORT, to the hosts that use them.
    for group, key, service, sources in ((DB_GROUP, 'surrealdb_bind_address', 'SurrealDB', [APP_GROUP, monitor_group]),
                                         (LLM_GROUP, 'ollama_host', 'Ollama', [APP_GROUP])):
        if group not in member:
            continue
        bind_host, port = _bind(_var(hostvars, host, key), host, key)
        if _loopback(bind_host):
            rules.append(_rule(group, '%s listens on loopback only (%s %s): nothing to open' % (service, key, bind_host),
                               'tcp', [], []))
            continue
        nets = []
        for source in sources:
            nets += _group_addresses(hostvars, groups, source, 'a %s host, client of %s on %s' % (source, service, host))
        rules.append(_rule(group, '%s (%s) from %s' % (service, port, _describe(groups, sources)), 'tcp',
                           [(port, port)], nets))

    if APP_GROUP in member:
        bind_host = str(_var(hostvars, host, 'cynic_bind_address')).strip().strip('[]')
        instances = _var(hostvars, host, 'cynic_instances')
        offsets = _var(hostvars, host, 'cynic_side_port_offsets')
        if not isinstance(instances, (list, tuple)) or not isinstance(offsets, (list, tuple)):
            _fail('cynic_instances and cynic_side_port_offsets of host %s must be lists' % host)
        if _loopback(bind_host):
            rules.append(_rule(APP_GROUP, 'the CYNIC instances listen on loopback only (cynic_bind_address %s): nothing '
                                          'to open' % bind_host, 'tcp', [], []))
        else:
            ranges = []
            for instance in instances:
                if not isinstance(instance, Mapping) or 'port' not in instance:
                    _fail('each of cynic_instances of host %s needs a port, got %r' % (host, instance))
                what = 'the port of instance %s of host %s' % (instance.get('id'), host)
                port = _port(instance['port'], what)
                ranges.append((port, port))
                for offset in offsets:
                    side = _port(port + int(offset), '%s + cynic_side_port_offsets %s' % (what, offset))
                    ranges.append((side, side))
                ranges += _port_ranges(instance.get('side_ports') or [], 'side_ports of instance %s of host %s'
                                       % (instance.get('id'), host))
            sources = [LB_GROUP, monitor_group]
            nets = []
            for source in sources:
                nets += _group_addresses(hostvars, groups, source, 'a %s host, client of the instances on %s' % (source, host))
            rules.append(_rule(APP_GROUP, 'CYNIC instances from %s' % _describe(groups, sources), 'tcp', ranges, nets))

    if isinstance(extra_rules, (str, Mapping)) or not isinstance(extra_rules, (list, tuple)):
        _fail('firewall_extra_rules must be a list, got %r' % (extra_rules,))
    for index, extra in enumerate(extra_rules):
        what = 'firewall_extra_rules[%d]' % index
        if not isinstance(extra, Mapping):
            _fail('%s must be a dict, got %r' % (what, extra))
        unknown = set(extra) - {'port', 'ports', 'proto', 'sources', 'comment'}
        if unknown:
            _fail('%s: unknown keys %s (port, ports, proto, sources, comment)' % (what, ', '.join(sorted(unknown))))
        if ('port' in extra) == ('ports' in extra):
            _fail('%s needs port or ports (one of them)' % what)
        values = [extra['port']] if 'port' in extra else extra['ports']
        if isinstance(values, str) or not isinstance(values, (list, tuple)) or not values:
            _fail('%s: ports must be a list that is not empty, got %r' % (what, values))
        proto = extra.get('proto') or 'tcp'
        if proto not in ('tcp', 'udp'):
            _fail('%s: proto must be tcp or udp, got %r' % (what, proto))
        if not extra.get('sources'):
            _fail('%s needs sources (0.0.0.0/0 and ::/0 for any)' % what)
        comment = str(extra.get('comment') or '').strip()
        rules.append(_rule('extra %d' % index, comment or what, proto, _port_ranges(values, what),
                           _resolve(hostvars, groups, extra['sources'], what + '.sources')))
    return rules


class FilterModule(object):
    def filters(self):
        return {'firewall_rules': firewall_rules}
