# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The cynic_cluster_facts module against fake /health servers and SurrealDB /sql endpoints."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml

web = pytest.importorskip('aiohttp.web')

# pylint: disable=wrong-import-position
from ansible_collections.cynic.cluster.plugins.modules import cynic_cluster_facts

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
STANDIN = os.path.join(REPO_ROOT, 'tests', 'standins', 'surreal', 'surreal')
PASSWORD = 'S3cret-pass'


def health(status, instance_id, http_status=200):
    async def handler(server, request):  # pylint: disable=unused-argument
        doc = {'status': status, 'instance_id': instance_id, 'version': '0.1.0', 'uptime_s': 12.5,
               'storage': {'surreal': 'connected'}, 'llm': {'ollama': 'reachable', 'models': []},
               'judgments_total': 7}
        return web.json_response(doc, status=http_status)
    return handler


def instance(http_server, status='alive', instance_id='cynic-1', http_status=200):
    return http_server([('GET', '/health', health(status, instance_id, http_status))])


def _split(text):
    return [part.strip() for part in text.split(';') if part.strip()]


def surreal_sql(execute, user='root', password=PASSWORD):
    """A /sql endpoint with SurrealDB's authentication and namespace headers; ``execute(statement)``
    gives each statement's result (or raises ValueError for an error result)."""
    expected = 'Basic ' + base64.b64encode(('%s:%s' % (user, password)).encode()).decode()

    async def handler(server, request):
        if request.headers.get('Authorization') != expected:
            return web.json_response({'code': 401, 'details': 'Authentication failed'}, status=401)
        if (request.headers.get('Surreal-NS'), request.headers.get('Surreal-DB')) != ('cynic', 'cynic'):
            return web.json_response({'code': 400, 'details': 'Specify a namespace and a database'}, status=400)
        if 'application/json' not in request.headers.get('Accept', ''):
            return web.Response(status=415)
        text = (await request.read()).decode()
        server.stats['bodies'].append(text)
        out = []
        for statement in _split(text):
            try:
                out.append({'status': 'OK', 'time': '10µs', 'result': await execute(statement)})
            except ValueError as exc:
                out.append({'status': 'ERR', 'time': '10µs', 'result': str(exc)})
        return web.json_response(out)
    return handler


def fake_engine(records):
    """Answers exactly the statements that the module sends, from a list of (cell_id, judgment_id)
    or (cell_id, judgment_id, supersedes)."""
    grouped = '(SELECT cell_id, count() AS n FROM judgment GROUP BY cell_id)'

    async def execute(statement):
        counts = {}
        for cell, *_rest in records:
            counts[cell] = counts.get(cell, 0) + 1
        dupes = sorted((cell, n) for cell, n in counts.items() if n > 1)
        if statement == 'SELECT count() FROM judgment GROUP ALL':
            return [{'count': len(records)}] if records else []
        if statement == 'SELECT count() FROM %s WHERE n > 1 GROUP ALL' % grouped:
            return [{'count': len(dupes)}] if dupes else []
        if statement.startswith('SELECT cell_id AS cell_id, n AS copies FROM %s WHERE n > 1 LIMIT ' % grouped):
            limit = int(statement.rsplit(' ', 1)[1])
            return [{'cell_id': cell, 'copies': n} for cell, n in dupes][:limit]
        if statement == 'SELECT VALUE judgment_id FROM judgment':
            return [record[1] for record in records]
        if statement == 'SELECT VALUE supersedes FROM judgment':
            return [record[2] if len(record) > 2 else None for record in records]  # NONE: no such field
        raise ValueError('Parse error: unexpected statement %r' % statement)
    return execute


RECORDS = [('c1', 'j1'), ('c2', 'j2'), ('c3', 'j3'), ('c3', 'j3b'), ('c4', 'j4')]


def test_documentation_matches_the_argument_spec(assert_documented_spec, module_doc):
    options = assert_documented_spec(cynic_cluster_facts)
    assert options['timeout']['default'] == 5
    assert module_doc(cynic_cluster_facts)['attributes']['diff_mode']['support'] == 'none'
    assert cynic_cluster_facts.argument_spec()['surreal_password']['no_log'] is True
    assert 'cynic_cluster' in yaml.safe_load(cynic_cluster_facts.RETURN)['ansible_facts']['contains']


def test_health_of_every_instance(http_server, run_module, closed_port):
    one = instance(http_server, 'alive', 'cynic-1')
    two = instance(http_server, 'degraded', 'cynic-2')
    three = instance(http_server, 'unavailable', 'cynic-3', http_status=503)
    result, failed = run_module(cynic_cluster_facts.main, {'instances': [one.url, two.url + '/', three.url]})
    assert not failed and result['changed'] is False
    facts = result['ansible_facts']['cynic_cluster']
    assert [item['status'] for item in facts['instances']] == ['alive', 'degraded', 'unavailable']
    assert [item['http_status'] for item in facts['instances']] == [200, 200, 503]
    assert [item['healthy'] for item in facts['instances']] == [True, True, False]
    assert facts['instances'][1]['url'] == two.url
    assert facts['instances'][0]['judgments_total'] == 7
    assert facts['all_healthy'] is False and facts['healthy_count'] == 2
    assert facts['instance_ids'] == ['cynic-1', 'cynic-2', 'cynic-3'] and facts['instance_ids_distinct'] is True
    assert facts['surreal']['queried'] is False and facts['missing_judgments'] is None

    # by host and ports, with one port that nothing listens on; degraded refused on demand
    ports = [one.port, two.port, closed_port]
    result, failed = run_module(cynic_cluster_facts.main, {'host': '127.0.0.1', 'ports': ports,
                                                           'accept_degraded': False, 'timeout': 2})
    facts = result['ansible_facts']['cynic_cluster']
    assert [item['healthy'] for item in facts['instances']] == [True, False, False]
    assert facts['instances'][2]['reachable'] is False and facts['instances'][2]['error']
    assert facts['instance_ids'] == ['cynic-1', 'cynic-2', None]
    assert facts['instance_ids_distinct'] is False


class _RawServer(object):
    """A TCP server that answers every connection with the same bytes, then closes it."""

    def __init__(self, reply):
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(8)
        self.url = 'http://127.0.0.1:%d' % self.sock.getsockname()[1]
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, dummy = self.sock.accept()
            except OSError:  # closed by the test
                return
            with conn:
                conn.recv(65536)
                conn.sendall(self.reply)


def test_instances_that_answer_badly_are_reported_not_raised(http_server, run_module):
    not_http = _RawServer(b'SSH-2.0-OpenSSH_9.2\r\n')
    cut_short = _RawServer(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"st')
    odd_id = http_server([('GET', '/health', health('alive', ['cynic', 1]))])
    good = instance(http_server, 'alive', 'cynic-1')
    try:
        result, failed = run_module(cynic_cluster_facts.main, {
            'instances': [not_http.url, cut_short.url, odd_id.url, good.url], 'timeout': 5})
    finally:
        not_http.sock.close()
        cut_short.sock.close()
    assert not failed, result
    facts = result['ansible_facts']['cynic_cluster']
    print([item['error'] for item in facts['instances']])
    assert [item['healthy'] for item in facts['instances']] == [False, False, False, True]
    assert 'BadStatusLine' in facts['instances'][0]['error']
    assert 'IncompleteRead' in facts['instances'][1]['error']
    assert 'not a string' in facts['instances'][2]['error']
    assert facts['instance_ids'] == [None, None, None, 'cynic-1']
    assert facts['healthy_count'] == 1 and facts['duplicate_instance_ids'] == []


def test_duplicate_instance_ids_are_reported(http_server, run_module):
    one = instance(http_server, 'alive', 'cynic-1')
    two = instance(http_server, 'alive', 'cynic-1')
    result, dummy = run_module(cynic_cluster_facts.main, {'instances': [one.url, two.url]})
    facts = result['ansible_facts']['cynic_cluster']
    assert facts['all_healthy'] is True
    assert facts['instance_ids_distinct'] is False and facts['duplicate_instance_ids'] == ['cynic-1']


def test_surreal_counts_duplicates_and_missing_judgments(http_server, run_module):
    surreal = http_server([('POST', '/sql', surreal_sql(fake_engine(RECORDS)))])
    one = instance(http_server, 'alive', 'cynic-1')
    stress = {'judgment_ids': ['j1', 'j2', 'j5'], 'judgment_ids_count': 3}
    args = {'instances': [one.url], 'surreal_url': surreal.url, 'surreal_password': PASSWORD,
            'judgment_ids': ['j3', 'j9'], 'stress_facts': stress, '_ansible_check_mode': True}
    result, failed = run_module(cynic_cluster_facts.main, args)
    assert not failed, result
    facts = result['ansible_facts']['cynic_cluster']
    assert facts['surreal']['reachable'] is True and facts['surreal']['error'] is None
    assert facts['judgment_count'] == 5
    assert facts['duplicate_cells'] == 1
    assert facts['surreal']['duplicate_examples'] == [{'cell_id': 'c3', 'copies': 2}]
    assert facts['judgments_checked'] == 5
    assert facts['missing_judgments'] == 2 and facts['missing_judgment_ids'] == ['j5', 'j9']
    assert PASSWORD not in json.dumps(result)
    assert len(surreal.stats['bodies']) == 1  # one round trip

    # an empty table, without ids to check
    empty = http_server([('POST', '/sql', surreal_sql(fake_engine([])))])
    result, dummy = run_module(cynic_cluster_facts.main, {'surreal_url': empty.url, 'surreal_password': PASSWORD})
    facts = result['ansible_facts']['cynic_cluster']
    assert (facts['judgment_count'], facts['duplicate_cells'], facts['missing_judgments']) == (0, 0, None)
    assert 'VALUE' not in empty.stats['bodies'][0]


def test_surreal_errors_are_reported_not_raised(http_server, run_module, closed_port):
    surreal = http_server([('POST', '/sql', surreal_sql(fake_engine(RECORDS)))])
    result, failed = run_module(cynic_cluster_facts.main, {'surreal_url': surreal.url, 'surreal_password': 'wrong'})
    assert not failed
    facts = result['ansible_facts']['cynic_cluster']
    assert facts['surreal']['reachable'] is True and '401' in facts['surreal']['error']
    assert facts['judgment_count'] is None

    result, failed = run_module(cynic_cluster_facts.main, {'surreal_url': 'http://127.0.0.1:%d' % closed_port,
                                                           'surreal_password': PASSWORD})
    facts = result['ansible_facts']['cynic_cluster']
    assert facts['surreal']['reachable'] is False and 'not reachable' in facts['surreal']['error']

    result, failed = run_module(cynic_cluster_facts.main, {'surreal_url': surreal.url, 'surreal_password': PASSWORD,
                                                           'cell_field': 'cell_id; REMOVE TABLE judgment'})
    assert failed and 'identifier' in result['msg']

    result, failed = run_module(cynic_cluster_facts.main, {'surreal_url': surreal.url, 'surreal_password': PASSWORD,
                                                           'surreal_table': 'verdicts'})
    facts = result['ansible_facts']['cynic_cluster']
    assert 'Parse error' in facts['surreal']['error']


def test_arguments_are_checked(run_module):
    result, failed = run_module(cynic_cluster_facts.main, {})
    assert failed and 'one of the following is required' in result['msg']
    result, failed = run_module(cynic_cluster_facts.main, {'instances': ['http://a'], 'ports': [1]})
    assert failed and 'mutually exclusive' in result['msg']


def test_real_surrealql_engine(http_server, run_module):
    """The same statements on SurrealDB's own engine (the surrealdb-embedded wheel, in memory)."""
    surrealdb = pytest.importorskip('surrealdb', reason='the surrealdb SDK with surrealdb-embedded is not installed')
    pytest.importorskip('surrealdb_embedded', reason='surrealdb-embedded is not installed')
    state = {}

    async def execute(statement):
        if 'db' not in state:
            state['db'] = surrealdb.AsyncSurreal('mem://')
            await state['db'].connect()
            await state['db'].use('cynic', 'cynic')
            for cell, jid in RECORDS:
                await state['db'].query("CREATE judgment SET cell_id = '%s', judgment_id = '%s'" % (cell, jid))
        try:
            return await state['db'].query(statement)
        except Exception as exc:  # pylint: disable=broad-except
            raise ValueError(str(exc)) from exc

    surreal = http_server([('POST', '/sql', surreal_sql(execute))])
    result, failed = run_module(cynic_cluster_facts.main, {'surreal_url': surreal.url, 'surreal_password': PASSWORD,
                                                           'judgment_ids': ['j1', 'j3b', 'j7']})
    assert not failed
    facts = result['ansible_facts']['cynic_cluster']
    assert facts['surreal']['error'] is None, facts['surreal']
    assert (facts['judgment_count'], facts['duplicate_cells']) == (5, 1)
    assert facts['surreal']['duplicate_examples'] == [{'cell_id': 'c3', 'copies': 2}]
    assert (facts['missing_judgments'], facts['missing_judgment_ids']) == (1, ['j7'])


def _http(url, data=None, headers=None):
    request = urllib.request.Request(url, data=data, headers=headers or {}, method='POST' if data else 'GET')
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.skipif(not os.path.isfile(STANDIN),
                    reason='the SurrealDB stand-in tests/standins/surreal/surreal does not exist (yet)')
def test_against_the_surrealdb_standin(run_module, free_port):
    """One run against the project's SurrealDB stand-in, started as the role starts `surreal start`."""
    for name in ('surrealdb_embedded', 'cbor2'):
        pytest.importorskip(name, reason='the stand-in needs %s in this python' % name)
    home = tempfile.mkdtemp(prefix='cynic-surreal-')
    url = 'http://127.0.0.1:%d' % free_port
    env = dict(os.environ, SURREAL_USER='root', SURREAL_PASS=PASSWORD, CYNIC_STANDIN_PYTHON=sys.executable)
    log = open(os.path.join(home, 'log'), 'wb')
    proc = subprocess.Popen([sys.executable, STANDIN, 'start', '--bind', '127.0.0.1:%d' % free_port,
                             'surrealkv://' + os.path.join(home, 'data')], env=env, stdout=log, stderr=log)
    try:
        deadline = time.time() + 30
        while not (_listening(free_port) and _http(url + '/health')[0] == 200):
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                with open(os.path.join(home, 'log'), 'rb') as handle:
                    pytest.fail('the stand-in did not start: %s' % handle.read()[-2000:])
            time.sleep(0.1)
        auth = 'Basic ' + base64.b64encode(('root:%s' % PASSWORD).encode()).decode()
        headers = {'Accept': 'application/json', 'Authorization': auth, 'Surreal-NS': 'cynic', 'Surreal-DB': 'cynic'}
        statements = ["CREATE judgment:%s SET cell_id = '%s', judgment_id = '%s'" % (cell, cell, jid)
                      for cell, jid in RECORDS if jid != 'j3b']
        statements.append("CREATE judgment SET cell_id = 'c3', judgment_id = 'j3b'")
        status, body = _http(url + '/sql', ';\n'.join(statements).encode(), headers)
        assert status == 200, body

        result, failed = run_module(cynic_cluster_facts.main, {'surreal_url': url, 'surreal_password': PASSWORD,
                                                               'judgment_ids': ['j1', 'j4', 'nope']})
        assert not failed
        facts = result['ansible_facts']['cynic_cluster']
        assert facts['surreal']['error'] is None, facts['surreal']
        assert (facts['judgment_count'], facts['duplicate_cells']) == (5, 1)
        assert (facts['missing_judgments'], facts['missing_judgment_ids']) == (1, ['nope'])
        result, dummy = run_module(cynic_cluster_facts.main, {'surreal_url': url, 'surreal_password': 'wrong'})
        surreal = result['ansible_facts']['cynic_cluster']['surreal']
        assert surreal['reachable'] is True and surreal['error'], surreal
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def _listening(port):
    try:
        socket.create_connection(('127.0.0.1', port), 0.2).close()
        return True
    except OSError:
        return False


def test_the_fake_engine_rejects_unknown_statements():
    with pytest.raises(ValueError):
        asyncio.run(fake_engine(RECORDS)('DELETE judgment'))


METRICS = """# HELP cynic_llm_calls_total LLM calls by server and outcome.
# TYPE cynic_llm_calls_total counter
cynic_llm_calls_total{server="http://127.0.0.1:11434",outcome="ok"} 12
cynic_llm_calls_total{server="http://a b/{x}",outcome="timeout"} 1.0
cynic_llm_slot_wait_seconds_total 0.25 1700000000000
cynic_llm_calls_waiting 0
cynic_llm_server_up{server="http://127.0.0.1:11434"} NaN
cynic_judgments_total 99
cynic_llm_broken{server="unclosed} 3
process_cpu_seconds_total 4.5
"""


def with_metrics(http_server, metrics_status=200):
    async def metrics(server, request):  # pylint: disable=unused-argument
        if metrics_status != 200:
            return web.Response(status=metrics_status, text='forbidden: not in CYNIC_METRICS_ALLOW')
        return web.Response(text=METRICS, content_type='text/plain')
    return http_server([('GET', '/health', health('alive', 'cynic-%d' % metrics_status, 200)),
                        ('GET', '/metrics', metrics)])


def test_the_llm_series_of_every_instance(http_server, run_module, closed_port):
    open_one = with_metrics(http_server)
    closed_one = with_metrics(http_server, 403)
    down = 'http://127.0.0.1:%d' % closed_port
    result, failed = run_module(cynic_cluster_facts.main, {'instances': [open_one.url, closed_one.url, down]})
    assert not failed, result
    first, second, third = result['ansible_facts']['cynic_cluster']['instances']
    assert first['metrics'] == {
        'cynic_llm_calls_total{server="http://127.0.0.1:11434",outcome="ok"}': 12,
        'cynic_llm_calls_total{server="http://a b/{x}",outcome="timeout"}': 1,
        'cynic_llm_slot_wait_seconds_total': 0.25,
        'cynic_llm_calls_waiting': 0,
        'cynic_llm_server_up{server="http://127.0.0.1:11434"}': 'NaN',
    }
    assert first['metrics_error'] is None and first['healthy'] is True
    # a 403 (CYNIC_METRICS_ALLOW) is reported, and the instance is still judged by its health
    assert second['metrics'] is None and second['metrics_error'].startswith('HTTP 403: forbidden')
    assert second['healthy'] is True
    assert third['metrics'] is None and 'not reachable' in third['metrics_error']

    result, dummy = run_module(cynic_cluster_facts.main, {'instances': [open_one.url],
                                                          'metric_prefixes': ['process_', 'cynic_judgments']})
    assert result['ansible_facts']['cynic_cluster']['instances'][0]['metrics'] == {
        'cynic_judgments_total': 99, 'process_cpu_seconds_total': 4.5}
    requests = open_one.stats['requests']
    result, dummy = run_module(cynic_cluster_facts.main, {'instances': [open_one.url], 'metric_prefixes': []})
    item = result['ansible_facts']['cynic_cluster']['instances'][0]
    assert (item['metrics'], item['metrics_error']) == (None, None)
    assert open_one.stats['requests'] == requests + 1  # the health only
    result, failed = run_module(cynic_cluster_facts.main, {'instances': [open_one.url], 'metrics_path': 'metrics'})
    assert failed and 'metrics_path must start with "/"' in result['msg']


def test_superseded_judgments_are_not_missing(http_server, run_module):
    """j2 was a degraded judgment: the cell was judged again (j2b) and the store kept j2b only."""
    records = [('c1', 'j1', []), ('c2', 'j2b', ['j2']), ('c3', 'j3')]
    surreal = http_server([('POST', '/sql', surreal_sql(fake_engine(records)))])
    args = {'surreal_url': surreal.url, 'surreal_password': PASSWORD, 'judgment_ids': ['j1', 'j2', 'j2b', 'j9']}
    result, failed = run_module(cynic_cluster_facts.main, args)
    assert not failed, result
    facts = result['ansible_facts']['cynic_cluster']
    assert facts['surreal']['error'] is None, facts['surreal']
    assert (facts['missing_judgments'], facts['missing_judgment_ids']) == (1, ['j9'])
    assert facts['superseded_judgments'] == 1 and facts['judgments_checked'] == 4
    assert _split(surreal.stats['bodies'][0])[4] == 'SELECT VALUE supersedes FROM judgment'

    # without the field, the replaced judgment is missing
    result, dummy = run_module(cynic_cluster_facts.main, dict(args, superseded_field=''))
    facts = result['ansible_facts']['cynic_cluster']
    assert (facts['missing_judgment_ids'], facts['superseded_judgments']) == (['j2', 'j9'], 0)
    assert len(_split(surreal.stats['bodies'][1])) == 4
    result, failed = run_module(cynic_cluster_facts.main, dict(args, superseded_field='supersedes; DELETE judgment'))
    assert failed and 'superseded_field must be a plain SurrealQL identifier' in result['msg']
    # nothing checked: no 4th or 5th statement, and nothing to say about superseded ones
    result, dummy = run_module(cynic_cluster_facts.main, {'surreal_url': surreal.url, 'surreal_password': PASSWORD})
    assert result['ansible_facts']['cynic_cluster']['superseded_judgments'] is None
    assert len(_split(surreal.stats['bodies'][-1])) == 3


def test_prometheus_lines_are_parsed_by_name_and_labels():
    parsed = cynic_cluster_facts.parse_metrics(METRICS + 'cynic_llm_x{a="q\\"}"} +Inf\ncynic_llm_y 1e3\n',
                                               ['cynic_llm_'])
    assert parsed['cynic_llm_x{a="q\\"}"}'] == '+Inf'
    assert parsed['cynic_llm_y'] == 1000
    assert not [key for key in parsed if 'broken' in key or key.startswith('process')]
