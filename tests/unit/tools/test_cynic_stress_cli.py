# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""tools/cynic-stress: a thin wrapper of the engine, run as a program."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

web = pytest.importorskip('aiohttp.web')

# pylint: disable=wrong-import-position
from ansible_collections.cynic.cluster.plugins.module_utils import cynic_load

COLLECTION = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(cynic_load.__file__))))
CLI = os.path.join(COLLECTION, 'tools', 'cynic-stress')


async def judge(server, request):
    await request.read()
    return web.json_response({'judgment_id': 'j-%d' % server.stats['requests'], 'q_score': 61.8},
                             headers={'X-Instance-ID': 'cynic-1'})


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, kwargs.pop('cli', CLI)] + list(args), capture_output=True, text=True,
                          timeout=60, check=False, **kwargs)


def test_json_output_is_the_module_fact(http_server):
    server = http_server([('POST', '/judge', judge)])
    proc = run_cli(server.url, '--rate', '50', '--duration', '1.5', '--json', '--max-p99-ms', '5000')
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert (facts['planned'], facts['sent'], facts['ok']) == (75, 75, 75)
    assert facts['latency_ok_ms']['intended']['count'] == facts['latency_ms']['intended']['count'] == 75
    assert facts['passed'] is True and facts['q_score']['mean'] == 61.8
    assert len(facts['timeline']) == 2 and len(facts['judgment_ids']) == 75
    # the live progress line, once per second, then the final one
    lines = [line for line in proc.stderr.splitlines() if line.startswith('[')]
    assert len(lines) == 2 and 'in flight' in lines[0] and 'p99' in lines[0] and 'done' in lines[-1]


def test_broken_thresholds_exit_1_with_a_table(http_server):
    server = http_server([('POST', '/judge', judge)])
    proc = run_cli(server.url, '-r', '40', '-d', '0.5', '-q', '--max-p95-ms', '0.0001',
                   '--expected-instance', 'cynic-2', '-H', 'X-Trace: 1')
    assert proc.returncode == 1, proc.stderr
    assert 'FAILED thresholds' in proc.stdout and 'max_p95_ms' in proc.stdout and 'cynic-2' in proc.stdout
    assert 'intended' in proc.stdout and '2xx, intended' in proc.stdout and proc.stderr == ''


def test_the_summary_shows_both_latency_sets_and_the_dropped(http_server):
    """2 in flight against a 0.2 s server: most requests are dropped, and the table says where they went."""
    async def slow(server, request):
        await request.read()
        await asyncio.sleep(0.2)
        return web.json_response({'judgment_id': 'j-%d' % server.stats['requests'], 'q_score': 1.0},
                                 status=200 if server.stats['requests'] % 2 else 503,
                                 headers={'X-Instance-ID': 'cynic-1'})

    server = http_server([('POST', '/judge', slow)])
    proc = run_cli(server.url, '-r', '50', '-d', '1', '-c', '2', '-t', '1', '-q')
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout)
    rows = dict((line.split()[0] + ' ' + line.split()[1], line.split()) for line in proc.stdout.splitlines()
                if line.startswith('    all,') or line.startswith('    2xx,'))
    assert sorted(rows) == ['2xx, actual', '2xx, intended', 'all, actual', 'all, intended'], proc.stdout
    dropped = int(proc.stdout.split('planned / sent / dropped')[1].split('/')[2].split()[0])
    assert dropped >= 30  # the p50 of all requests is a dropped one, at the 1 s timeout
    assert rows['all, actual'][2] == '1000.0' and rows['all, actual'][-1] == '50'
    assert float(rows['2xx, actual'][2]) < 1000.0  # the answers themselves came after about 0.2 s
    assert 'all counts %d request(s) never sent' % dropped in proc.stdout and 'timed out: 1 s' in proc.stdout
    assert 'instances (error answers)' in proc.stdout


def test_dry_run_and_bad_arguments(http_server):
    server = http_server([('POST', '/judge', judge)])
    proc = run_cli(server.url, '-r', '10', '-d', '3', '--dry-run', '--json')
    assert proc.returncode == 0 and json.loads(proc.stdout)['planned'] == 30
    assert server.stats['requests'] == 0
    proc = run_cli('127.0.0.1:80', '-n')
    assert proc.returncode == 2 and 'http://' in proc.stderr
    proc = run_cli(server.url, '-H', 'no-colon', '-n')
    assert proc.returncode == 2 and 'NAME:VALUE' in proc.stderr
    proc = run_cli(server.url, '-n', '--q-score-min', '80', '--q-score-max', '20')
    assert proc.returncode == 2 and 'no run could pass' in proc.stderr, proc.stderr


def test_engine_from_the_installed_collection(http_server):
    """Copied away from the checkout, the script imports the engine from ansible_collections."""
    server = http_server([('POST', '/judge', judge)])
    where = tempfile.mkdtemp(prefix='cynic-cli-')
    try:
        copy = os.path.join(where, 'cynic-stress')
        shutil.copy(CLI, copy)
        top = os.path.dirname(os.path.dirname(os.path.dirname(COLLECTION)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([top] + sys.path))
        proc = run_cli(server.url, '-r', '20', '-d', '0.5', '-q', '--json', cli=copy, env=env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)['sent'] == 10
        proc = run_cli(server.url, '-n', cli=copy, env=dict(os.environ, PYTHONPATH=''))
        assert proc.returncode != 0 and 'cannot find the engine' in proc.stderr
    finally:
        shutil.rmtree(where, ignore_errors=True)


async def levelled(server, request):
    """Answers at the level asked, every MACRO answer degraded to REFLEX."""
    doc = json.loads(await request.read())
    server.stats['bodies'].append(doc)
    degraded = doc.get('level') == 'MACRO'
    return web.json_response({'judgment_id': 'j-%d' % server.stats['requests'], 'q_score': 50.0,
                              'level_used': 'REFLEX' if degraded else doc['level'], 'degraded': degraded,
                              'llm_calls': 0 if degraded or doc['level'] == 'REFLEX' else 1, 'supersedes': []})


def test_a_mix_of_levels_from_the_command_line(http_server, tmp_path):
    server = http_server([('POST', '/judge', levelled)])
    proc = run_cli(server.url, '-r', '40', '-d', '1', '-q', '--json', '--mix', 'fast=2:REFLEX',
                   '--mix', 'deep=1:MICRO', '--mix', 'deeper=1:MACRO', '--max-degraded-share', '0.4')
    assert proc.returncode == 1, proc.stderr  # half of the LLM answers degraded
    facts = json.loads(proc.stdout)
    assert dict((name, kind['planned']) for name, kind in facts['kinds'].items()) == {
        'fast': 20, 'deep': 10, 'deeper': 10}
    assert facts['llm_asked'] == 20 and facts['degraded'] == 10 and facts['degraded_share'] == 0.5
    assert facts['checks'][0]['name'] == 'max_degraded_share' and not facts['checks'][0]['passed']
    # the default body with the level of each kind
    default = json.loads(cynic_load.DEFAULT_BODY)
    assert sorted(set(body['level'] for body in server.stats['bodies'])) == ['MACRO', 'MICRO', 'REFLEX']
    assert all(set(body) == set(default) | {'level'} for body in server.stats['bodies'])

    mix = tmp_path / 'mix.json'
    mix.write_text(json.dumps([{'name': 'only', 'weight': 1, 'body': {'content': 'x {i}', 'level': 'MICRO'}}]))
    proc = run_cli(server.url, '-r', '20', '-d', '0.5', '-q', '--mix-file', str(mix), '--max-degraded-share', '0')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'kind only' in proc.stdout and 'LLM asked / degraded       10 / 0' in proc.stdout

    for bad, message in ((['--mix', 'fast=two:REFLEX'], 'NAME=WEIGHT:LEVEL'),
                         (['--mix', 'a=1:MICRO', '--corpus', str(mix)], 'not allowed with argument'),
                         (['--mix', 'a=1:MICRO', '--mix-file', str(mix)], 'not allowed with argument'),
                         (['--mix-file', str(tmp_path / 'nope.json')], 'nope.json'),
                         (['--max-degraded-share', '1.5'], 'max_degraded_share must be between 0 and 1')):
        proc = run_cli(server.url, '-n', *bad)
        assert proc.returncode == 2 and message in proc.stderr, (bad, proc.stderr)


def test_q_scores_against_a_run_at_rest_from_the_command_line(http_server, tmp_path):
    server = http_server([('POST', '/judge', judge)])
    corpus = tmp_path / 'cells.jsonl'
    corpus.write_text(''.join(json.dumps({'name': name, 'cell': {'content': name}}) + '\n' for name in 'abc'))
    proc = run_cli(server.url, '-r', '30', '-d', '0.5', '-q', '--json', '--corpus', str(corpus))
    assert proc.returncode == 0, proc.stderr
    rest = tmp_path / 'rest.json'
    rest.write_text(proc.stdout)  # the whole --json output of the run at rest
    proc = run_cli(server.url, '-r', '30', '-d', '0.5', '-q', '--json', '--corpus', str(corpus),
                   '--q-at-rest', str(rest), '--max-q-shift', '0.5')
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)['q_vs_rest']['mean_abs_difference'] == 0  # the server's q_score is constant
    far = dict((name, [count, 0.0]) for name, (count, mean) in json.loads(rest.read_text())['q_by_text'].items())
    rest.write_text(json.dumps(far))  # q_by_text alone
    proc = run_cli(server.url, '-r', '30', '-d', '0.5', '-q', '--corpus', str(corpus), '--q-at-rest', str(rest),
                   '--max-q-shift', '0.5')
    assert proc.returncode == 1 and 'over max_q_shift 0.5' in proc.stdout, proc.stdout
    rest.write_text('[1, 2]')
    proc = run_cli(server.url, '-n', '--corpus', str(corpus), '--q-at-rest', str(rest))
    assert proc.returncode == 2 and 'neither the --json facts' in proc.stderr, proc.stderr
