#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: cynic_cluster_facts
short_description: Health of every CYNIC instance and the state of the judgments stored in SurrealDB
version_added: 0.1.0
description:
  - Fetches C(/health) from every CYNIC instance by its own address (not through the balancer) and reports each
    instance's status and id, whether all are healthy and whether their instance ids are distinct.
  - Asks SurrealDB, through its HTTP C(POST /sql) endpoint, how many judgments are stored and how many cells are
    stored more than once (there must be none, one record per cell).
  - Given the judgment ids that the service answered with 200 (directly or from the facts of
    M(cynic.cluster.cynic_stress)), reports how many of them SurrealDB lacks (the no-data-loss check).
  - Reads the Prometheus series of every instance whose name starts with one of O(metric_prefixes) (the LLM tier's
    by default) from its O(metrics_path); an instance whose metrics cannot be read (for example 403 from an address
    that C(CYNIC_METRICS_ALLOW) does not allow) is reported, not fatal.
  - A judgment that a later one replaced (listed in the O(superseded_field) of a stored judgment, a degraded
    judgment judged again at its level) is not counted as missing.
  - Only reads; uses the Python standard library (through C(ansible.module_utils.urls)), so it runs on any host.
  - Unreachable instances or an unreachable SurrealDB do not fail the task; they are reported in the facts.
notes:
  - The missing-judgment check reads every judgment id of the table in one query (C(SELECT VALUE judgment_id FROM
    judgment)), and every superseded list (C(SELECT VALUE supersedes FROM judgment)), and compares sets on the managed
    host; raise O(timeout) for very large tables.
  - All SurrealDB queries go in one C(POST /sql) request with the headers C(Accept), C(Surreal-NS) and C(Surreal-DB).
author:
  - CYNIC cluster team (@cynic-cluster)
extends_documentation_fragment:
  - cynic.cluster.attributes
  - cynic.cluster.http_client
attributes:
  check_mode:
    details: The module only reads, so it does the same in check mode.
options:
  instances:
    description:
      - Base URLs of the instances, for example V(http://127.0.0.1:8001).
      - Mutually exclusive with O(ports).
    type: list
    elements: str
  host:
    description:
      - Host of the instances when they are given by O(ports).
    type: str
    default: 127.0.0.1
  ports:
    description:
      - Ports of the instances on O(host).
    type: list
    elements: int
  scheme:
    description:
      - Scheme of the instances given by O(ports).
    type: str
    choices: [http, https]
    default: http
  health_path:
    description:
      - Path of the health endpoint.
    type: str
    default: /health
  metrics_path:
    description:
      - Path of the Prometheus metrics endpoint of the instances.
    type: str
    default: /metrics
  metric_prefixes:
    description:
      - The series of O(metrics_path) to return, by the start of their metric name; V([]) reads no metrics.
    type: list
    elements: str
    default: [cynic_llm_]
  accept_degraded:
    description:
      - Count an instance that answers C(degraded) (the LLM is unreachable, REFLEX judgments still work) as healthy.
    type: bool
    default: true
  timeout:
    default: 5
  ca_path:
    description:
      - PEM file of the CA to check C(https) certificates against, on the host the module runs on (for example the
        test CA of a SurrealDB with its own certificate). Without it, the host's trust store.
    type: path
  use_proxy:
    description:
      - Use the proxy of the environment. Off by default since the instances and SurrealDB are internal addresses.
    type: bool
    default: false
  surreal_url:
    description:
      - Base URL of SurrealDB's HTTP endpoint, for example V(http://127.0.0.1:8000). Without it SurrealDB is not
        queried.
    type: str
  surreal_user:
    description:
      - SurrealDB user (Basic authentication).
    type: str
    default: root
  surreal_password:
    description:
      - Password of O(surreal_user).
    type: str
  surreal_namespace:
    description:
      - SurrealDB namespace (header C(Surreal-NS)).
    type: str
    default: cynic
  surreal_database:
    description:
      - SurrealDB database (header C(Surreal-DB)).
    type: str
    default: cynic
  surreal_table:
    description:
      - Table of the judgments.
    type: str
    default: judgment
  cell_field:
    description:
      - Field of a judgment that holds its cell id.
    type: str
    default: cell_id
  judgment_id_field:
    description:
      - Field of a judgment that holds the judgment id that the service answers with.
    type: str
    default: judgment_id
  superseded_field:
    description:
      - Field of a judgment that lists the ids of the judgments it replaced. Those ids are not counted as missing.
      - Empty to leave superseded judgments out of the check (a store of a build without the field).
    type: str
    default: supersedes
  judgment_ids:
    description:
      - Judgment ids that must all be stored (or superseded by one that is).
    type: list
    elements: str
  stress_facts:
    description:
      - The C(cynic_stress) fact of a M(cynic.cluster.cynic_stress) run; its C(judgment_ids) are checked like
        O(judgment_ids) (the run must have kept them, C(return_judgment_ids=true)).
    type: dict
  max_missing_examples:
    description:
      - How many missing judgment ids and duplicated cells to list as examples.
    type: int
    default: 20
seealso:
  - module: cynic.cluster.cynic_stress
'''

EXAMPLES = r'''
- name: Read the state of the cluster
  cynic.cluster.cynic_cluster_facts:
    host: 127.0.0.1
    ports: [8001, 8002, 8003]
    surreal_url: http://127.0.0.1:8000
    surreal_password: "{{ cynic_surreal_password }}"

- name: Every instance is up with its own id and no cell is stored twice
  ansible.builtin.assert:
    that:
      - ansible_facts['cynic_cluster']['all_healthy']
      - ansible_facts['cynic_cluster']['instance_ids_distinct']
      - ansible_facts['cynic_cluster']['duplicate_cells'] == 0

- name: Load the cluster
  cynic.cluster.cynic_stress:
    url: http://127.0.0.1:8080
    rate: 100
    duration: 30

- name: No judgment answered with 200 was lost
  cynic.cluster.cynic_cluster_facts:
    instances:
      - http://10.0.0.11:8001
      - http://10.0.0.12:8001
    surreal_url: http://10.0.0.10:8000
    surreal_password: "{{ cynic_surreal_password }}"
    stress_facts: "{{ ansible_facts['cynic_stress'] }}"

- name: Assert that nothing is missing
  ansible.builtin.assert:
    that:
      - ansible_facts['cynic_cluster']['missing_judgments'] == 0
'''

RETURN = r'''
ansible_facts:
  description:
    - The facts of the cluster (the C(cynic_cluster) fact).
  returned: always
  type: dict
  contains:
    cynic_cluster:
      description: State of the instances and of the stored judgments.
      returned: always
      type: dict
      contains:
        instances:
          description:
            - One entry per instance, with C(url), C(reachable), C(http_status), C(status), C(instance_id),
              C(version), C(uptime_s), C(storage), C(llm), C(judgments_total), C(healthy) and C(error) (null when
              none).
            - C(metrics) - the series of O(metrics_path) whose name starts with one of O(metric_prefixes), by series as
              written with its labels (for example C(cynic_llm_calls_total{outcome="ok",server="http://a:11434"})),
              each with its value (a number; C(NaN), C(+Inf) and C(-Inf) as strings); null when they were not read.
            - C(metrics_error) - why the metrics could not be read (for example C(HTTP 403)), null when they were or
              when O(metric_prefixes) is empty.
          type: list
          elements: dict
          returned: always
        instance_count:
          description: Number of instances checked.
          type: int
          returned: always
        healthy_count:
          description: Number of healthy instances.
          type: int
          returned: always
        all_healthy:
          description: Whether every instance answered 200 with C(alive) (or C(degraded), see O(accept_degraded)). True
            when no instance was given.
          type: bool
          returned: always
        instance_ids:
          description:
            - The instance ids reported by the instances, in the order of the instances.
            - Null for an instance that could not be read, or that reported an id which is not a string.
          type: list
          elements: str
          returned: always
        instance_ids_distinct:
          description: Whether every instance reported an id and no two reported the same.
          type: bool
          returned: always
        duplicate_instance_ids:
          description: Instance ids reported by more than one instance.
          type: list
          elements: str
          returned: always
        surreal:
          description:
            - C(queried) (whether O(surreal_url) was given), C(reachable) (whether SurrealDB answered at all; a refused
              login is reachable, with an C(error)), C(error), C(judgment_count), C(duplicate_cells) and
              C(duplicate_examples) (C(cell_id) and C(copies) of up to O(max_missing_examples) cells stored more than
              once).
          type: dict
          returned: always
        judgment_count:
          description: Judgments stored in SurrealDB; null when SurrealDB was not queried or did not answer the queries.
          type: int
          returned: always
        duplicate_cells:
          description: Cells stored more than once; null when SurrealDB was not queried or did not answer the queries.
          type: int
          returned: always
        judgments_checked:
          description: Distinct judgment ids checked against SurrealDB.
          type: int
          returned: always
        missing_judgments:
          description: How many of the checked judgment ids SurrealDB lacks; null when nothing was checked.
          type: int
          returned: always
        missing_judgment_ids:
          description: Up to O(max_missing_examples) of the missing judgment ids.
          type: list
          elements: str
          returned: always
        superseded_judgments:
          description:
            - How many of the checked judgment ids are not stored but listed in the O(superseded_field) of a stored
              judgment (replaced on purpose, not lost); null when nothing was checked.
          type: int
          returned: always
'''

import http.client
import json
import math
import re
import socket
import urllib.error

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.urls import open_url
from ansible_collections.cynic.cluster.plugins.module_utils.cynic_module_args import http_client_spec
from ansible_collections.cynic.cluster.plugins.module_utils.cynic_stdout import whole_results

_IDENTIFIER = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
_HEALTH_FIELDS = ('status', 'instance_id', 'version', 'uptime_s', 'storage', 'llm', 'judgments_total')
# What a server that is down, or dies while answering, raises: refused or reset connections
# (URLError, OSError), timeouts, and replies that are not HTTP or end early (HTTPException).
_UNREACHABLE = (urllib.error.URLError, socket.timeout, OSError, ValueError, http.client.HTTPException)
_METRIC_NAME = re.compile(r'[a-zA-Z_:][a-zA-Z0-9_:]*')


class SurrealError(Exception):
    """SurrealDB answered with an error (``reachable``) or could not be reached."""

    def __init__(self, message, reachable=True):
        super(SurrealError, self).__init__(message)
        self.reachable = reachable


def _get(url, params, data=None, headers=None, method='GET', **kwargs):
    """(status, body text) of one request; HTTP errors answer too, transport errors raise."""
    try:
        resp = open_url(url, data=data, headers=headers, method=method, timeout=params['timeout'],
                        validate_certs=params['validate_certs'], use_proxy=params['use_proxy'],
                        ca_path=params['ca_path'], use_netrc=False, follow_redirects='none', **kwargs)
        return resp.getcode(), to_text(resp.read(), errors='surrogate_or_replace')
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read()
        except Exception:  # pylint: disable=broad-except
            body = b''
        return exc.code, to_text(body, errors='surrogate_or_replace')


def instance_urls(params):
    if params['instances']:
        return [url.rstrip('/') for url in params['instances']]
    return ['%s://%s:%d' % (params['scheme'], params['host'], port) for port in params['ports'] or []]


def check_instance(url, params):
    info = dict(url=url, reachable=False, http_status=None, healthy=False, error=None)
    for field in _HEALTH_FIELDS:
        info[field] = None
    try:
        status, body = _get(url + params['health_path'], params, headers={'Accept': 'application/json'})
    except _UNREACHABLE as exc:
        info['error'] = '%s: %s' % (type(exc).__name__, exc)
        return info
    info['reachable'] = True
    info['http_status'] = status
    try:
        doc = json.loads(body)
    except ValueError:
        info['error'] = 'the health answer is not JSON'
        return info
    if not isinstance(doc, dict):
        info['error'] = 'the health answer is not a JSON object'
        return info
    for field in _HEALTH_FIELDS:
        info[field] = doc.get(field)
    if not isinstance(info['instance_id'], (str, type(None))):
        # Compared across instances (duplicates): only a string identifies one.
        info['error'] = 'the health answer has an instance_id that is not a string: %r' % (info['instance_id'],)
        info['instance_id'] = None
        return info
    accepted = ('alive', 'degraded') if params['accept_degraded'] else ('alive',)
    info['healthy'] = status == 200 and info['status'] in accepted
    if not info['healthy']:
        info['error'] = 'HTTP %s, status %s' % (status, info['status'])
    return info


def _series_end(line, start):
    """Index just past the ``}`` closing the labels that open at ``start``; quoted values may hold
    any character, escaped. None when the labels never close."""
    quoted = False
    index = start + 1
    while index < len(line):
        char = line[index]
        if quoted:
            if char == '\\':
                index += 1
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == '}':
            return index + 1
        index += 1
    return None


def parse_metrics(text, prefixes):
    """{series with its labels: value} of the Prometheus text lines whose metric name starts with a prefix."""
    out = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith('#'):
            continue
        match = _METRIC_NAME.match(line)
        if not match or not any(match.group(0).startswith(prefix) for prefix in prefixes):
            continue
        end = match.end()
        if end < len(line) and line[end] == '{':
            end = _series_end(line, end)
            if end is None:
                continue
        fields = line[end:].split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if not math.isfinite(value):
            out[line[:end]] = fields[0]  # NaN and infinities are no JSON numbers
        elif value.is_integer() and abs(value) < 2 ** 53:
            out[line[:end]] = int(value)  # counters and gauges of whole numbers, as written
        else:
            out[line[:end]] = value
    return out


def read_metrics(url, params):
    """(the series of the instance's metrics, None) or (None, why they could not be read)."""
    try:
        status, body = _get(url + params['metrics_path'], params, headers={'Accept': 'text/plain'})
    except _UNREACHABLE as exc:
        return None, '%s: %s' % (type(exc).__name__, exc)
    if status != 200:
        return None, 'HTTP %s: %s' % (status, body.strip()[:200])
    return parse_metrics(body, params['metric_prefixes']), None


def surreal_query(params, statements):
    """Run SurrealQL statements through POST /sql and return the result of each."""
    headers = {
        'Accept': 'application/json',
        'Content-Type': 'text/plain',
        'Surreal-NS': params['surreal_namespace'],
        'Surreal-DB': params['surreal_database'],
    }
    query = ';\n'.join(statements) + ';'
    try:
        status, body = _get(params['surreal_url'].rstrip('/') + '/sql', params, data=query.encode('utf-8'),
                            headers=headers, method='POST', url_username=params['surreal_user'],
                            url_password=params['surreal_password'], force_basic_auth=True)
    except _UNREACHABLE as exc:
        raise SurrealError('SurrealDB is not reachable: %s: %s' % (type(exc).__name__, exc), reachable=False) from exc
    if status != 200:
        raise SurrealError('SurrealDB answered HTTP %s: %s' % (status, body[:500]))
    try:
        doc = json.loads(body)
    except ValueError:
        raise SurrealError('SurrealDB answered something that is not JSON: %s' % body[:200]) from None
    if not isinstance(doc, list) or len(doc) != len(statements):
        raise SurrealError('SurrealDB answered %r, expected %d statement results' % (body[:200], len(statements)))
    results = []
    for statement, item in zip(statements, doc):
        if not isinstance(item, dict) or item.get('status') != 'OK':
            detail = item.get('result') if isinstance(item, dict) else item
            raise SurrealError('SurrealDB refused "%s": %s' % (statement, detail))
        results.append(item.get('result'))
    return results


def _group_all_count(result):
    """The value of ``SELECT count() ... GROUP ALL``: [{"count": n}], or [] for no row."""
    if not result:
        return 0
    row = result[0]
    if isinstance(row, dict):
        return int(row.get('count') or 0)
    return int(row)


def _superseded_ids(values):
    """The ids of every stored judgment's superseded list (NONE for a judgment without one)."""
    out = set()
    for value in values or []:
        if isinstance(value, list):
            out.update(to_text(old) for old in value if old is not None)
        elif value is not None:
            out.add(to_text(value))
    return out


def check_surreal(params, wanted_ids):
    table = params['surreal_table']
    cell = params['cell_field']
    jid = params['judgment_id_field']
    replaced = params['superseded_field']
    limit = max(params['max_missing_examples'], 0)
    grouped = '(SELECT %s, count() AS n FROM %s GROUP BY %s)' % (cell, table, cell)
    statements = [
        'SELECT count() FROM %s GROUP ALL' % table,
        'SELECT count() FROM %s WHERE n > 1 GROUP ALL' % grouped,
        'SELECT %s AS cell_id, n AS copies FROM %s WHERE n > 1 LIMIT %d' % (cell, grouped, limit),
    ]
    if wanted_ids:
        statements.append('SELECT VALUE %s FROM %s' % (jid, table))
        if replaced:
            statements.append('SELECT VALUE %s FROM %s' % (replaced, table))
    results = surreal_query(params, statements)
    out = dict(
        judgment_count=_group_all_count(results[0]),
        duplicate_cells=_group_all_count(results[1]),
        duplicate_examples=(results[2] or [])[:limit] if limit else [],
        missing=None,
        superseded=None,
    )
    if wanted_ids:
        stored = set(to_text(value) for value in (results[3] or []) if value is not None)
        absent = wanted_ids - stored
        superseded = absent & _superseded_ids(results[4]) if replaced else set()
        out['missing'] = sorted(absent - superseded)
        out['superseded'] = len(superseded)
    return out


def argument_spec():
    spec = http_client_spec(timeout=5)
    spec.update(
        instances=dict(type='list', elements='str'),
        host=dict(type='str', default='127.0.0.1'),
        ports=dict(type='list', elements='int'),
        scheme=dict(type='str', choices=['http', 'https'], default='http'),
        health_path=dict(type='str', default='/health'),
        metrics_path=dict(type='str', default='/metrics'),
        metric_prefixes=dict(type='list', elements='str', default=['cynic_llm_']),
        accept_degraded=dict(type='bool', default=True),
        ca_path=dict(type='path'),
        use_proxy=dict(type='bool', default=False),
        surreal_url=dict(type='str'),
        surreal_user=dict(type='str', default='root'),
        surreal_password=dict(type='str', no_log=True),
        surreal_namespace=dict(type='str', default='cynic'),
        surreal_database=dict(type='str', default='cynic'),
        surreal_table=dict(type='str', default='judgment'),
        cell_field=dict(type='str', default='cell_id'),
        judgment_id_field=dict(type='str', default='judgment_id'),
        superseded_field=dict(type='str', default='supersedes'),
        judgment_ids=dict(type='list', elements='str'),
        stress_facts=dict(type='dict'),
        max_missing_examples=dict(type='int', default=20),
    )
    return spec


def main():
    whole_results()  # the judgment ids it may return run to megabytes
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[('instances', 'ports')],
        required_one_of=[('instances', 'ports', 'surreal_url')],
        supports_check_mode=True,
    )
    params = module.params
    for key in ('surreal_table', 'cell_field', 'judgment_id_field'):
        if not _IDENTIFIER.match(params[key]):
            module.fail_json(msg='%s must be a plain SurrealQL identifier, got %r' % (key, params[key]))
    if params['superseded_field'] and not _IDENTIFIER.match(params['superseded_field']):
        module.fail_json(msg='superseded_field must be a plain SurrealQL identifier (or empty), got %r'
                         % params['superseded_field'])
    for key in ('health_path', 'metrics_path'):
        if not params[key].startswith('/'):
            module.fail_json(msg='%s must start with "/"' % key)

    instances = [check_instance(url, params) for url in instance_urls(params)]
    for item in instances:
        item['metrics'] = item['metrics_error'] = None
        if not params['metric_prefixes']:
            continue
        if not item['reachable']:
            item['metrics_error'] = 'not read: the instance is not reachable'
            continue
        item['metrics'], item['metrics_error'] = read_metrics(item['url'], params)
    ids = [item['instance_id'] for item in instances]
    seen = {}
    for value in ids:
        if value is not None:
            seen[value] = seen.get(value, 0) + 1
    duplicates = sorted(value for value, count in seen.items() if count > 1)
    facts = dict(
        instances=instances,
        instance_count=len(instances),
        healthy_count=sum(1 for item in instances if item['healthy']),
        all_healthy=all(item['healthy'] for item in instances),
        instance_ids=ids,
        instance_ids_distinct=None not in ids and not duplicates,
        duplicate_instance_ids=duplicates,
        surreal=dict(queried=False, reachable=None, error=None, judgment_count=None, duplicate_cells=None,
                     duplicate_examples=[]),
        judgment_count=None,
        duplicate_cells=None,
        judgments_checked=0,
        missing_judgments=None,
        missing_judgment_ids=[],
        superseded_judgments=None,
    )

    wanted = set(params['judgment_ids'] or [])
    stress = params['stress_facts']
    if stress is not None:
        if 'judgment_ids' in stress:
            wanted.update(to_text(value) for value in stress['judgment_ids'] or [])
        elif stress.get('judgment_ids_count'):
            module.warn('stress_facts holds no judgment_ids (the run had return_judgment_ids=false): '
                        'its %s judgments cannot be checked' % stress.get('judgment_ids_count'))

    if params['surreal_url']:
        surreal = facts['surreal']
        surreal['queried'] = True
        try:
            result = check_surreal(params, wanted)
        except SurrealError as exc:
            surreal['reachable'] = exc.reachable
            surreal['error'] = str(exc)
        else:
            surreal.update(reachable=True, judgment_count=result['judgment_count'],
                           duplicate_cells=result['duplicate_cells'],
                           duplicate_examples=result['duplicate_examples'])
            facts['judgment_count'] = result['judgment_count']
            facts['duplicate_cells'] = result['duplicate_cells']
            if result['missing'] is not None:
                facts['judgments_checked'] = len(wanted)
                facts['missing_judgments'] = len(result['missing'])
                facts['missing_judgment_ids'] = result['missing'][:max(params['max_missing_examples'], 0)]
                facts['superseded_judgments'] = result['superseded']
    elif wanted:
        module.warn('judgment ids were given but no surreal_url: nothing was checked')

    module.exit_json(changed=False, ansible_facts=dict(cynic_cluster=facts))


if __name__ == '__main__':
    main()
