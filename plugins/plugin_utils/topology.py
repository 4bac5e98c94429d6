# -*- coding: utf-8 -*-
# Copyright: (c) 2026, CYNIC cluster team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Where each service of the cluster is reached, worked out once from the inventory.

The topology, surrealdb_endpoint and firewall_rules filters read host variables here. hostvars hold what the
inventory sets, not the roles' defaults, so a variable a host does not set is read from the defaults file of the
role it belongs to (roles/<role>/defaults/main.yml, the role named by the variable's prefix), templated for that
host when it is a template (cynic_instance_id_prefix is "{{ inventory_hostname }}-").
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

import jinja2
import jinja2.meta
import yaml
from ansible.errors import AnsibleError
from ansible.template import Templar, trust_as_template

ROLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'roles')

# The cluster's groups, as playbooks/site.yml and the roles name them.
LB_GROUP = 'cynic_lb'
DB_GROUP = 'cynic_db'
LLM_GROUP = 'cynic_llm'
APP_GROUP = 'cynic_app'

# HOST:PORT as the surrealdb and ollama roles accept it (an IPv6 host in brackets).
_HOST_PORT = re.compile(r'^(\[[0-9a-fA-F:]+\]|[^:\s]+):([0-9]+)$')
# A wildcard bind is where a service listens, not an address to reach it at. Its own host reaches it on
# loopback: 127.0.0.1 for the instances and Ollama; [::1] for SurrealDB's [::], as its role has always checked.
_WILDCARDS = ('0.0.0.0', '::')


class InventoryError(AnsibleError):
    """Bad or missing inventory data; each filter puts its own name in front of the message."""


def fail(message):
    raise InventoryError(message)


@functools.lru_cache(maxsize=None)
def _defaults_file(role):
    path = os.path.join(ROLES_DIR, role, 'defaults', 'main.yml')
    try:
        with open(path, encoding='utf-8') as handle:
            data = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as err:
        raise InventoryError('cannot read the defaults of role %s (%s): %s' % (role, path, err)) from None
    return data if isinstance(data, dict) else {}


@functools.lru_cache(maxsize=None)
def _role_of(key):
    """The role a variable belongs to: the longest role name that, with "_", starts it (nginx_lb_listen_port)."""
    roles = [name for name in os.listdir(ROLES_DIR) if key.startswith(name + '_')] if os.path.isdir(ROLES_DIR) else []
    if not roles:
        fail('no role of the collection owns the variable %s' % key)
    return max(roles, key=len)


def role_default(key):
    """The raw value of variable key in its role's defaults file (templates not rendered)."""
    defaults = _defaults_file(_role_of(key))
    if key not in defaults:
        fail('the role %s has no default for %s' % (_role_of(key), key))
    return defaults[key]


class RoleDefaults(Mapping):
    """The raw role defaults of the variables named by keys, read from the roles' files when first looked up."""

    def __init__(self, keys):
        self._keys = tuple(keys)

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        return role_default(key)

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)


def host_vars(hostvars, name):
    try:
        data = hostvars[name]
    except KeyError:
        data = None
    if not isinstance(data, Mapping):  # hostvars of a host the inventory does not hold
        fail('host %s is not in the inventory' % name)
    return data


def host_var(hostvars, name, key):
    """Variable key of host name: the host's own value, or else its role's default, rendered for that host."""
    data = host_vars(hostvars, name)
    if key in data:
        return data[key]
    value = role_default(key)
    if isinstance(value, str) and ('{{' in value or '{%' in value):
        value = _render(hostvars, name, key, value)
    return value


def _render(hostvars, name, key, template):
    # Templar takes plain dicts only: the variables the template names, as that host sees them.
    try:
        names = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(template))
    except jinja2.TemplateSyntaxError as err:
        raise InventoryError('the default of %s (%s) is not a valid template: %s' % (key, template, err)) from None
    data = host_vars(hostvars, name)
    variables = {'inventory_hostname': name}
    for var in sorted(names - {'inventory_hostname', key}):
        if var in data:
            variables[var] = data[var]
        elif var in _defaults_file(_role_of(key)):
            variables[var] = host_var(hostvars, name, var)
    try:
        return Templar(variables=variables).template(trust_as_template(template))
    except AnsibleError as err:
        raise InventoryError('the default of %s (%s) for host %s: %s' % (key, template, name, err)) from None


def port(value, what):
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if isinstance(value, bool) or not 1 <= number <= 65535 or str(value).strip() != str(number):
        fail('%s must be a port number (an int 1-65535), got %r' % (what, value))
    return number


def host_port(value, what):
    """(host, port) of a HOST:PORT setting, the host without brackets."""
    match = _HOST_PORT.match(str(value).strip())
    if match is None:
        fail('%s must be HOST:PORT, got %r' % (what, value))
    return match.group(1).strip('[]'), port(match.group(2), what)


def url_host(host):
    text = str(host)
    # Only an IPv6 literal holds a colon: a name or an IPv4 address cannot.
    if ':' in text and not text.startswith('['):
        return '[' + text + ']'
    return text


def is_loopback(host):
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: whatever it resolves to may be reachable
        return False


def _addresses(data, name, bind, v6_loopback='127.0.0.1'):
    """(how other hosts reach a service bound to bind on host name, how that host itself does)."""
    if bind in _WILDCARDS:
        return str(data.get('ansible_host') or name), (v6_loopback if bind == '::' else '127.0.0.1')
    return bind, bind


def surrealdb(hostvars, name):
    """Where SurrealDB on host name is reached (the surrealdb_endpoint filter's result)."""
    data = host_vars(hostvars, name)
    bind, number = host_port(host_var(hostvars, name, 'surrealdb_bind_address'),
                             'surrealdb_bind_address of host %s' % name)
    remote, local = _addresses(data, name, bind, v6_loopback='::1')
    tls = bool(host_var(hostvars, name, 'surrealdb_tls_certificate'))
    http = 'https' if tls else 'http'
    ca_file = str(host_var(hostvars, name, 'surrealdb_tls_ca') or '')
    return {
        'tls': tls,
        'port': number,
        'local_url': '%s://%s:%d' % (http, url_host(local), number),
        'url': '%s://%s:%d' % (http, url_host(remote), number),
        'rpc_url': '%s://%s:%d/rpc' % ('wss' if tls else 'ws', url_host(remote), number),
        # Where the surrealdb role puts the CA on the database host, for checks made there.
        'local_ca_path': ('%s/tls/ca.crt' % host_var(hostvars, name, 'surrealdb_config_dir')
                          if tls and ca_file else ''),
    }


def ollama(hostvars, name):
    data = host_vars(hostvars, name)
    bind, number = host_port(host_var(hostvars, name, 'ollama_host'), 'ollama_host of host %s' % name)
    remote, local = _addresses(data, name, bind)
    return {'host': name, 'url': 'http://%s:%d' % (url_host(remote), number),
            'local_url': 'http://%s:%d' % (url_host(local), number)}


def instances(hostvars, name):
    data = host_vars(hostvars, name)
    bind = str(host_var(hostvars, name, 'cynic_bind_address')).strip().strip('[]')
    remote, local = _addresses(data, name, bind)
    listed = host_var(hostvars, name, 'cynic_instances')
    if isinstance(listed, (str, Mapping)) or not isinstance(listed, (list, tuple)):
        fail('cynic_instances of host %s must be a list, got %r' % (name, listed))
    prefix = str(host_var(hostvars, name, 'cynic_instance_id_prefix'))
    out = []
    for instance in listed:
        if not isinstance(instance, Mapping) or 'id' not in instance or 'port' not in instance:
            fail('each of cynic_instances of host %s needs an id and a port, got %r' % (name, instance))
        number = port(instance['port'], 'the port of instance %s of host %s' % (instance['id'], name))
        out.append({'host': name, 'id': str(instance['id']), 'port': number,
                    'instance_id': prefix + str(instance['id']),
                    'url': 'http://%s:%d' % (url_host(remote), number),
                    'local_url': 'http://%s:%d' % (url_host(local), number)})
    return out


def _members(groups, group):
    members = groups.get(group) or []
    if isinstance(members, (str, Mapping)) or not isinstance(members, (list, tuple)):
        fail('group %s must be a list of host names, got %r' % (group, members))
    return list(members)


def topology(hostvars, groups, db_group=DB_GROUP, llm_group=LLM_GROUP, app_group=APP_GROUP):
    if not isinstance(hostvars, Mapping):
        fail('expected hostvars, got %s' % type(hostvars).__name__)
    if not isinstance(groups, Mapping):
        fail('expected the inventory groups, got %s' % type(groups).__name__)
    db_hosts = _members(groups, db_group)
    db = None
    if db_hosts:
        # ca_file: the controller path of the CA the instances verify SurrealDB against (cynic_surreal_ca_file).
        db = dict(surrealdb(hostvars, db_hosts[0]), host=db_hosts[0],
                  ca_file=str(host_var(hostvars, db_hosts[0], 'surrealdb_tls_ca') or ''))
    llms = [ollama(hostvars, name) for name in _members(groups, llm_group)]
    apps = [item for name in _members(groups, app_group) for item in instances(hostvars, name)]
    return {
        'surrealdb': db,
        'ollama': llms,
        # Every Ollama, in inventory order: the instances spread their LLM calls over them.
        'ollama_urls': [item['url'] for item in llms],
        'instances': apps,
        # nginx's server address:port: where other hosts reach each instance.
        'upstream': [urlsplit(item['url']).netloc for item in apps],
    }
