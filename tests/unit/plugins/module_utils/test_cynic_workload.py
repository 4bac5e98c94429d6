# -*- coding: utf-8 -*-
# Copyright: (c) 2026, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The workload over a corpus (which cell each request sends) and the duplicates audit, alone and
through the engine against local servers that do and do not judge a repeated cell twice."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

web = pytest.importorskip('aiohttp.web')

# pylint: disable=wrong-import-position
from ansible_collections.cynic.cluster.plugins.module_utils import cynic_load as cl
from ansible_collections.cynic.cluster.plugins.module_utils import cynic_workload as cw

COLLECTION = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(cl.__file__))))
CORPUS_FILE = os.path.join(COLLECTION, 'roles', 'stress', 'files', 'stress_corpus.jsonl')
CORPUS = [
    {'name': 'py', 'cell': {'content': 'def f(x):\n    return "a\\\\b" + x', 'reality': 'CODE'}},
    {'name': 'fr', 'cell': {'content': 'Très bien, « merci » 🙂', 'reality': 'SOCIAL', 'analysis': 'PERCEIVE'}},
    {'name': 'sol', 'cell': {'content': 'transfer 5 SOL', 'reality': 'SOLANA', 'budget_usd': 0.01}},
]


def test_the_plan_is_reproducible_and_repeats_only_cells_already_sent():
    one = cw.Workload(CORPUS, 20000, 'run-a', repeat_share=0.25, concurrent_share=0.5)
    two = cw.Workload(CORPUS, 20000, 'run-a', repeat_share=0.25, concurrent_share=0.5)
    assert one.keys == two.keys
    assert one.keys != cw.Workload(CORPUS, 20000, 'run-b', repeat_share=0.25).keys
    seen = set()
    for index, key in enumerate(one.keys):
        if key not in seen:
            assert key == len(seen), 'fresh cells come in order'
            seen.add(key)
        else:
            assert len(seen) - key <= cw.REPEAT_WINDOW, (index, key)
    work = one.describe()
    assert work['requests'] == 20000 and work['distinct_cells'] == len(seen) == 20000 - work['repeat_requests']
    assert 0.23 < work['repeat_requests'] / 20000 < 0.27, work
    assert 0.45 < work['concurrent_repeats'] / work['repeat_requests'] < 0.55, work
    assert cw.Workload(CORPUS, 500, 'r').describe()['repeat_requests'] == 0


def test_bodies_are_the_corpus_cells_with_a_run_marker():
    work = cw.Workload(CORPUS, 300, 'run-x', repeat_share=0.5)
    texts = {entry['name']: entry['cell'] for entry in CORPUS}
    for index in range(300):
        doc = json.loads(work.body(index))
        cell = texts[work.name_of_request(index)]
        assert doc['content'] == cell['content'] + '\n\n[cynic-stress run-x %d]' % work.keys[index]
        assert dict(doc, content=cell['content']) == cell
    assert work.body(0).decode('utf-8').count('🙂') in (0, 1)  # UTF-8 as is, not \\u escapes
    # the same cell, the same bytes; another cell of the same text, other bytes
    key = work.keys
    repeat = next(i for i in range(1, 300) if key[i] in key[:i])
    first = key.index(key[repeat])
    assert work.body(repeat) == work.body(first)
    unmarked = cw.Workload(CORPUS, 30, 'run-x', mark=False)
    assert {json.loads(unmarked.body(i))['content'] for i in range(30)} == {e['cell']['content'] for e in CORPUS}
    assert unmarked.describe()['distinct_cells'] == 3


@pytest.mark.parametrize('corpus, message', [
    ([], 'non-empty list'),
    ([{'name': 'a', 'cell': {'content': 1}}], 'string "content"'),
    ([{'name': 'a', 'cell': {'content': 'x'}}, {'name': 'a', 'cell': {'content': 'y'}}], 'used twice'),
    ('not a list', 'non-empty list'),
])
def test_a_bad_corpus_is_refused_with_its_reason(corpus, message):
    with pytest.raises(cw.WorkloadError, match=message):
        cw.normalize_corpus(corpus)
    with pytest.raises(cl.LoadError, match=message):
        cl.LoadConfig('http://127.0.0.1:1', cells=corpus)


def test_bad_shares_and_methods_are_refused():
    for share in (-0.1, 1.0, float('nan')):
        with pytest.raises(cl.LoadError, match='repeat_share'):
            cl.LoadConfig('http://127.0.0.1:1', cells=CORPUS, repeat_share=share)
    with pytest.raises(cl.LoadError, match='concurrent_share'):
        cl.LoadConfig('http://127.0.0.1:1', cells=CORPUS, concurrent_share=1.5)
    with pytest.raises(cl.LoadError, match='sends none'):
        cl.LoadConfig('http://127.0.0.1:1', cells=CORPUS, method='GET')
    with pytest.raises(cl.LoadError, match='needs cells'):
        cl.LoadConfig('http://127.0.0.1:1', q_at_rest={'py': [1, 50.0]})
    assert cw.load_corpus('\n' + json.dumps(CORPUS[0]) + '\n\n')[0]['name'] == 'py'
    with pytest.raises(cw.WorkloadError, match='line 2 is not JSON'):
        cw.load_corpus(json.dumps(CORPUS[0]) + '\n{oops\n')


def _score(content):
    return float(int(hashlib.sha256(content.split('\n\n[cynic-stress')[0].encode()).hexdigest(), 16) % 100)


def consensus_judge(server, instances=('cynic-1', 'cynic-2')):
    """Like the reference node: a cell already judged answers with its judgment (one per cell)."""
    ids = {}

    async def handler(srv, request):
        doc = json.loads(await request.read())
        judgment = ids.setdefault(doc['content'], 'j-%d' % len(ids))
        return web.json_response({'judgment_id': judgment, 'q_score': _score(doc['content'])},
                                 headers={'X-Instance-ID': instances[srv.stats['requests'] % len(instances)]})
    return server([('POST', '/judge', handler)])


def no_consensus_judge(server, with_ids=True):
    """Like the upstream kernel: every request is a new judgment, whatever the cell."""
    async def handler(srv, request):
        doc = json.loads(await request.read())
        answer = {'q_score': _score(doc['content'])}
        if with_ids:
            answer['judgment_id'] = 'k-%d' % srv.stats['requests']
        return web.json_response(answer, headers={'X-Instance-ID': 'cynic-%d' % (srv.stats['requests'] % 3)})
    return server([('POST', '/judge', handler)])


def _run(server, **kwargs):
    config = cl.LoadConfig(server.url, rate=kwargs.pop('rate', 400), duration=kwargs.pop('duration', 1.0),
                           cells=kwargs.pop('cells', CORPUS), **kwargs)
    return cl.run_load(config, thresholds=cl.Thresholds(max_duplicate_judgments=0))


def test_a_cluster_with_consensus_has_one_judgment_per_cell(http_server):
    facts = _run(consensus_judge(http_server), repeat_share=0.3, warmup=0.25)
    dup, work = facts['duplicates'], facts['workload']
    assert work['requests'] == 500 and work['repeat_requests'] > 100, work
    assert facts['ok'] == 400 and dup['cells_answered'] == work['distinct_cells'], (dup, work)
    assert dup['judgments'] == dup['cells_answered'] and dup['duplicate_judgments'] == 0 and dup['judgments_per_cell'] == 1
    assert dup['cells_answered_more_than_once'] > 50 and dup['cells_judged_more_than_once'] == 0
    # repeats answered by the other instance (the handler alternates): the spread is seen per cell
    assert dup['cells_on_several_instances'] > 0
    assert dup['q_score_spread_of_repeated_cells']['max'] == 0
    assert facts['passed'] is True, facts['threshold_failures']
    assert sorted(facts['q_by_text']) == ['fr', 'py', 'sol']
    assert 'judgments per cell' in cl.format_summary(facts)


def test_a_build_without_consensus_is_audited_from_its_answers(http_server):
    facts = _run(no_consensus_judge(http_server), repeat_share=0.3)
    dup = facts['duplicates']
    # every answer a judgment of its own: the duplicates are exactly the repeats answered
    assert dup['judgments'] == facts['ok'] == 400
    assert dup['duplicate_judgments'] == 400 - dup['cells_answered'] > 60, dup
    assert dup['cells_judged_more_than_once'] == dup['cells_answered_more_than_once'] > 0
    assert facts['passed'] is False and 'duplicate judgments' in facts['threshold_failures'][0]


def test_answers_without_ids_count_one_judgment_each(http_server):
    facts = _run(no_consensus_judge(http_server, with_ids=False), repeat_share=0.3)
    dup = facts['duplicates']
    assert dup['judgments'] == 400 and dup['duplicate_judgments'] == 400 - dup['cells_answered']
    assert 'carry no judgment_id' in dup['counted_from']


def test_q_scores_at_rest_and_under_load_are_compared_text_by_text(http_server):
    server = consensus_judge(http_server)
    rest = _run(server, rate=30, duration=0.5)
    load = _run(server, repeat_share=0.3, q_at_rest=rest['q_by_text'])
    vs = load['q_vs_rest']
    assert vs['texts_compared'] == 3 and vs['mean_abs_difference'] == 0 and vs['moved'] == 0, vs
    assert vs['at_rest'] == vs['under_load']
    shifted = dict((name, [count, mean + 2.0]) for name, (count, mean) in rest['q_by_text'].items())
    vs = cw.compare_q_scores(shifted, load['q_by_text'])
    assert vs['mean_abs_difference'] == 2.0 and vs['moved'] == 3, vs


def test_the_cli_judges_a_corpus_file(http_server, tmp_path):
    server = consensus_judge(http_server)
    corpus = tmp_path / 'cells.jsonl'
    corpus.write_text(''.join(json.dumps(entry, ensure_ascii=False) + '\n' for entry in CORPUS), encoding='utf-8')
    cli = os.path.join(COLLECTION, 'tools', 'cynic-stress')
    proc = subprocess.run([sys.executable, cli, server.url, '-r', '200', '-d', '0.5', '-q', '--json',
                           '--corpus', str(corpus), '--repeat-share', '0.3', '--max-duplicate-judgments', '0'],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts['duplicates']['duplicate_judgments'] == 0 and facts['workload']['corpus_cells'] == 3
    proc = subprocess.run([sys.executable, cli, server.url, '-n', '--corpus', str(tmp_path / 'missing.jsonl')],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and 'missing.jsonl' in proc.stderr


def test_the_shipped_corpus_loads_and_plans():
    with open(CORPUS_FILE, encoding='utf-8') as handle:
        corpus = cw.load_corpus(handle.read())
    work = cw.Workload(corpus, 9000, 'r', repeat_share=0.25)
    assert len({work.name_of_request(i) for i in range(9000)}) == len(corpus)
    for index in range(0, 9000, 97):
        assert json.loads(work.body(index))['content'].startswith(corpus[work.corpus_index(work.keys[index])]['cell']['content'])


def upgrading_judge(server, supersede=True):
    """Like the node of the LLM tier: the first judgment of a cell is degraded; the next request for
    it judges again (new id) and, when ``supersede``, names the degraded one in ``supersedes``."""
    cells = {}

    async def handler(srv, request):
        doc = json.loads(await request.read())
        ids = cells.setdefault(doc['content'], [])
        if len(ids) < 2:
            ids.append('u-%d' % srv.stats['requests'])
        answer = {'judgment_id': ids[-1], 'q_score': _score(doc['content']), 'degraded': len(ids) == 1,
                  'level_used': 'REFLEX' if len(ids) == 1 else 'MICRO',
                  'supersedes': ids[:-1] if supersede else []}
        return web.json_response(answer, headers={'X-Instance-ID': 'cynic-1'})
    return server([('POST', '/judge', handler)]), cells


def test_an_upgraded_degraded_judgment_is_not_a_duplicate(http_server):
    server, cells = upgrading_judge(http_server)
    facts = _run(server, repeat_share=0.3)
    dup = facts['duplicates']
    upgraded = sum(1 for ids in cells.values() if len(ids) == 2)
    assert upgraded > 20, cells
    assert dup['upgraded_judgments'] == upgraded and dup['duplicate_judgments'] == 0, dup
    assert dup['judgments'] == dup['cells_answered'] and dup['cells_judged_more_than_once'] == 0
    assert facts['passed'] is True, facts['threshold_failures']

    # the same second judgments without supersedes: duplicates, as before
    server, cells = upgrading_judge(http_server, supersede=False)
    dup = _run(server, repeat_share=0.3)['duplicates']
    assert dup['upgraded_judgments'] == 0
    assert dup['duplicate_judgments'] == sum(1 for ids in cells.values() if len(ids) == 2) > 20, dup


def _longest_run(sequence, kind):
    longest = current = 0
    for item in sequence:
        current = current + 1 if item == kind else 0
        longest = max(longest, current)
    return longest


@pytest.mark.parametrize('weights, total', [
    ([1, 1], 101), ([3, 1], 400), ([2, 1, 1], 1000), ([0.5, 7, 1.7, 10], 999), ([1, 1, 1], 2), ([5, 3, 2], 7)])
def test_a_mix_gives_exact_shares_spread_evenly(weights, total):
    entries = [{'name': 'k%d' % number, 'weight': weight, 'body': {'content': 'x', 'level': 'MICRO'}}
               for number, weight in enumerate(weights)]
    mix = cw.Mix(entries, 10, total, 'run-a')
    sequence = list(mix.kinds_array())
    warm, measured = sequence[:10], sequence[10:]
    whole = float(sum(weights))
    for number, weight in enumerate(weights):
        # largest remainder: each count within one request of its exact quota, and they add up
        assert abs(mix.planned[number] - total * weight / whole) < 1
        assert measured.count(number) == mix.planned[number]
        assert warm.count(number) == mix.warmup_planned[number]
        # every prefix of the window holds close to its share: no burst of one kind
        seen = 0
        for step, kind in enumerate(measured, 1):
            seen += kind == number
            assert abs(seen - mix.planned[number] * step / total) < 2, (number, step)
    assert sum(mix.planned) == total and sum(mix.warmup_planned) == 10
    if weights == [1, 1]:
        assert _longest_run(measured, 0) == _longest_run(measured, 1) == 1
    if weights == [3, 1]:
        assert _longest_run(measured, 1) == 1 and _longest_run(measured, 0) == 3
    # reproducible from the run id
    assert list(cw.Mix(entries, 10, total, 'run-a').kinds_array()) == sequence


def test_ties_are_broken_by_the_seed():
    entries = [{'name': name, 'weight': 1, 'body': {}} for name in 'abcdefgh']
    firsts = set(cw.Mix(entries, 0, 8, 'run-%d' % number).kinds_array()[0] for number in range(40))
    assert len(firsts) > 1  # another run id, another order of the tied kinds
    assert cw.Mix(entries, 0, 3, 'r', seed=7).planned == cw.Mix(entries, 0, 3, 'other', seed=7).planned


@pytest.mark.parametrize('entries, message', [
    ([], 'non-empty list'),
    ('micro', 'non-empty list'),
    ([{'name': 'a', 'weight': 1, 'body': {}}, {'name': 'a', 'weight': 2, 'body': {}}], "name 'a' is used twice"),
    ([{'name': 'a', 'weight': 0, 'body': {}}], r'mix entry 1 \(a\): weight must be a positive number, got 0'),
    ([{'name': 'a', 'weight': float('nan'), 'body': {}}], 'weight must be a positive number'),
    ([{'name': 'a', 'weight': True, 'body': {}}], 'weight must be a positive number'),
    ([{'name': 'a', 'weight': '2', 'body': {}}], 'weight must be a positive number'),
    ([{'name': '', 'weight': 1, 'body': {}}], 'needs a name'),
    ([{'name': 'a', 'weight': 1, 'body': 'text'}], 'body must be an object'),
    ([{'name': 'a', 'weight': 1, 'body': {}, 'level': 'MICRO'}], r'unknown key\(s\) level'),
    (['a'], 'must be an object'),
])
def test_a_bad_mix_is_refused_with_its_reason(entries, message):
    with pytest.raises(cw.WorkloadError, match=message):
        cw.Mix(entries, 0, 10, 'r')


def test_mixes_from_the_command_line_forms():
    base = {'content': 'Test code {i}', 'reality': 'CODE'}
    kinds = cw.mix_from_specs(['fast=3:REFLEX', 'deep=0.5:MACRO'], base)
    assert kinds == [{'name': 'fast', 'weight': 3.0, 'body': dict(base, level='REFLEX')},
                     {'name': 'deep', 'weight': 0.5, 'body': dict(base, level='MACRO')}]
    assert 'level' not in base
    for bad in ('fast', 'fast=3', 'fast=x:MICRO', '=1:MICRO', 'fast=1:'):
        with pytest.raises(cw.WorkloadError, match='NAME=WEIGHT:LEVEL'):
            cw.mix_from_specs([bad], base)
    assert cw.load_mix(json.dumps(kinds)) == kinds
    with pytest.raises(cw.WorkloadError, match='the mix file is not JSON'):
        cw.load_mix('[{')
    with pytest.raises(cw.WorkloadError, match='weight must be a positive number'):
        cw.load_mix('[{"name": "a", "weight": -1, "body": {}}]')
