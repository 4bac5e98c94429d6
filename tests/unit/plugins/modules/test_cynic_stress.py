# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The cynic_stress module: a thin wrapper of the engine (thresholds, check mode, missing library)."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

web = pytest.importorskip('aiohttp.web')

# pylint: disable=wrong-import-position
from ansible_collections.cynic.cluster.plugins.modules import cynic_stress


async def judge(server, request):
    await request.read()
    number = server.stats['requests']
    await asyncio.sleep(0.002)
    return web.json_response({'judgment_id': 'j-%d' % number, 'q_score': 40.0 + number % 10},
                             headers={'X-Instance-ID': 'cynic-%d' % (number % 2 + 1)})


def test_documentation_matches_the_argument_spec(assert_documented_spec, module_doc):
    options = assert_documented_spec(cynic_stress)
    # the shared options come from the doc fragment, with this module's own default
    assert options['timeout']['default'] == 10 and options['validate_certs']['type'] == 'bool'
    attributes = module_doc(cynic_stress)['attributes']
    assert attributes['check_mode']['support'] == 'full' and 'planned' in attributes['check_mode']['details']
    assert attributes['platform']['platforms'] == 'posix'
    returned = yaml.safe_load(cynic_stress.RETURN)
    assert 'cynic_stress' in returned['ansible_facts']['contains']


def test_a_passing_run_returns_the_facts(http_server, run_module):
    server = http_server([('POST', '/judge', judge)])
    result, failed = run_module(cynic_stress.main, {
        'url': server.url, 'rate': 100, 'duration': 1, 'warmup': 0.2,
        'min_rate_ratio': 0.95, 'max_error_rate': 0.0, 'max_p99_ms': 5000,
        'expected_instances': ['cynic-1', 'cynic-2'], 'min_instance_share': 0.4,
        'q_score_min': 40, 'q_score_max': 49,
    })
    assert not failed, result
    assert result['changed'] is False
    facts = result['ansible_facts']['cynic_stress']
    assert (facts['planned'], facts['sent'], facts['ok']) == (100, 100, 100)
    assert facts['passed'] is True and facts['threshold_failures'] == []
    assert facts['thresholds']['min_instance_share'] == 0.4
    assert [(check['name'], check['passed']) for check in facts['checks']] == [
        ('min_rate_ratio', True), ('max_error_rate', True), ('max_p99_ms', True), ('min_instance_share', True),
        ('q_score_range', True)]
    assert len(facts['judgment_ids']) == 120
    assert server.stats['requests'] == 120


def test_broken_thresholds_fail_and_still_return_the_facts(http_server, run_module):
    server = http_server([('POST', '/judge', judge)])
    args = {
        'url': server.url, 'rate': 50, 'duration': 1, 'return_judgment_ids': False,
        'min_instance_share': 0.6, 'max_p95_ms': 0.001, 'max_p99_ms': 0.001,
        'expected_instances': ['cynic-1', 'cynic-9'], 'q_score_max': 10,
    }
    result, failed = run_module(cynic_stress.main, args)
    assert failed
    facts = result['ansible_facts']['cynic_stress']
    assert facts['sent'] == 50 and facts['ok'] == 50 and 'judgment_ids' not in facts
    assert facts['passed'] is False
    assert len(result['threshold_failures']) == 5
    # both instances below the share are one check with two sentences
    assert [check['name'] for check in facts['checks'] if not check['passed']] == [
        'max_p95_ms', 'max_p99_ms', 'min_instance_share', 'q_score_range']
    assert result['msg'].startswith('5 threshold(s) broken: ')
    for word in ('min_instance_share', 'max_p95_ms', 'max_p99_ms', 'cynic-9', 'q_score_max'):
        assert word in result['msg']

    args['fail_on_thresholds'] = False
    result, failed = run_module(cynic_stress.main, args)
    assert not failed
    assert result['ansible_facts']['cynic_stress']['passed'] is False


def test_q_scores_are_held_against_a_run_at_rest(http_server, run_module):
    """max_q_shift: each text's mean Q-Score (40 to 49 here, whatever the text) against a run at rest."""
    server = http_server([('POST', '/judge', judge)])
    cells = [{'name': name, 'cell': {'content': 'text ' + name, 'reality': 'CODE'}} for name in ('a', 'b', 'c')]
    base = {'url': server.url, 'rate': 60, 'duration': 0.5, 'cells': cells}
    result, failed = run_module(cynic_stress.main, base)
    assert not failed, result
    at_rest = result['ansible_facts']['cynic_stress']['q_by_text']

    result, failed = run_module(cynic_stress.main, dict(base, q_at_rest=at_rest, max_q_shift=9.5))
    assert not failed, result
    [check] = result['ansible_facts']['cynic_stress']['checks']
    assert check['name'] == 'max_q_shift' and check['passed'] is True and 0 <= check['value'] <= 9, check

    far = dict((name, [count, 0.0]) for name, (count, mean) in at_rest.items())
    result, failed = run_module(cynic_stress.main, dict(base, q_at_rest=far, max_q_shift=9.5))
    assert failed and result['msg'].startswith('1 threshold(s) broken: the Q-Score of the 3 texts judged in both runs')
    assert 'over max_q_shift 9.5' in result['msg']
    assert result['ansible_facts']['cynic_stress']['checks'][0]['value'] >= 40

    result, failed = run_module(cynic_stress.main, dict(base, max_q_shift=1))
    assert failed and 'max_q_shift 1.0: no Q-Score was compared with a run at rest' in result['msg'], result['msg']


def _undocumented(value, doc, where):
    """Keys of a returned dict that the RETURN entry ``doc`` (its ``contains``) does not name."""
    contains = doc.get('contains')
    if not contains or not isinstance(value, dict):
        return []
    missing = []
    for key, item in value.items():
        if key not in contains:
            missing.append(where + key)
        else:
            missing.extend(_undocumented(item, contains[key], where + key + '.'))
    return missing


def test_return_documents_every_returned_key(http_server, run_module):
    """Every key of the fact, at every level RETURN describes, is documented (ansible-test wants it)."""
    server = http_server([('POST', '/judge', judge)])
    result, failed = run_module(cynic_stress.main, {'url': server.url, 'rate': 50, 'duration': 0.5,
                                                    'max_p99_ms': 5000})
    assert not failed, result
    doc = yaml.safe_load(cynic_stress.RETURN)['ansible_facts']
    assert _undocumented(result['ansible_facts'], doc, '') == []
    facts = result['ansible_facts']['cynic_stress']
    # both latency sets are there, and the dropped requests' convention is stated in the docs
    assert facts['latency_ok_ms']['intended']['count'] == facts['ok'] == 25
    assert facts['counted_at_timeout'] == 0
    text = cynic_stress.DOCUMENTATION + cynic_stress.RETURN
    assert 'as if it had timed out' in text and 'counts 2xx answers only' in text


def test_check_mode_plans_and_sends_nothing(http_server, run_module):
    server = http_server([('POST', '/judge', judge)])
    result, failed = run_module(cynic_stress.main, {
        'url': server.url, 'rate': 250, 'duration': 2, 'warmup': 1, 'max_p99_ms': 0.001,
        '_ansible_check_mode': True,
    })
    assert not failed and result['changed'] is False
    facts = result['ansible_facts']['cynic_stress']
    assert facts['check_mode'] is True
    assert (facts['planned'], facts['warmup_planned'], facts['sent']) == (500, 250, 0)
    assert server.stats['requests'] == 0


def test_a_missing_aiohttp_is_a_clear_error(run_module, monkeypatch):
    monkeypatch.setattr(cynic_stress, 'HAS_AIOHTTP', False)
    result, failed = run_module(cynic_stress.main, {'url': 'http://127.0.0.1:1'})
    assert failed
    assert 'aiohttp' in result['msg'] and 'Failed to import the required Python library' in result['msg']


def test_bad_arguments_fail(run_module):
    result, failed = run_module(cynic_stress.main, {'url': 'http://127.0.0.1:1', 'rate': -5})
    assert failed and 'rate' in result['msg']
    result, failed = run_module(cynic_stress.main, {'url': '127.0.0.1:8080'})
    assert failed and 'http://' in result['msg']
    # limits no run could meet are refused before anything is sent, in check mode too
    result, failed = run_module(cynic_stress.main, {'url': 'http://127.0.0.1:1', 'q_score_min': 80,
                                                    'q_score_max': 20, '_ansible_check_mode': True})
    assert failed and 'no run could pass' in result['msg']
    result, failed = run_module(cynic_stress.main, {'url': 'http://127.0.0.1:1', 'max_error_rate': 5})
    assert failed and 'max_error_rate must be between 0 and 1' in result['msg']
    # a header the HTTP client would refuse on every request: refused once, by name, nothing sent
    result, failed = run_module(cynic_stress.main, {'url': 'http://127.0.0.1:1',
                                                    'headers': {'X-Trace': 'a\r\nX-Evil: 1'}})
    assert failed and 'header X-Trace' in result['msg'] and 'ansible_facts' not in result


async def levelled(server, request):
    """Answers at the level asked; every third MICRO answer is degraded to REFLEX."""
    doc = json.loads(await request.read())
    server.stats['bodies'].append(doc)
    micro = sum(1 for seen in server.stats['bodies'] if seen.get('level') == 'MICRO')
    degraded = doc.get('level') == 'MICRO' and micro % 3 == 0
    return web.json_response({'judgment_id': 'j-%d' % server.stats['requests'], 'q_score': 50.0,
                              'level_used': 'REFLEX' if degraded else doc.get('level'), 'degraded': degraded,
                              'llm_calls': 0 if degraded or doc.get('level') == 'REFLEX' else 1, 'supersedes': []})


MIX = [{'name': 'reflex', 'weight': 1, 'body': {'content': 'r {i}', 'level': 'REFLEX'}},
       {'name': 'micro', 'weight': 1, 'body': {'content': 'm {i}', 'level': 'MICRO'}}]


def test_a_mix_of_levels_with_a_degraded_share_limit(http_server, run_module):
    server = http_server([('POST', '/judge', levelled)])
    args = {'url': server.url, 'rate': 60, 'duration': 1, 'mix': MIX, 'max_degraded_share': 0.5}
    result, failed = run_module(cynic_stress.main, args)
    assert not failed, result
    facts = result['ansible_facts']['cynic_stress']
    doc = yaml.safe_load(cynic_stress.RETURN)['ansible_facts']
    assert _undocumented(result['ansible_facts'], doc, '') == []
    assert facts['kinds']['micro']['planned'] == facts['kinds']['reflex']['planned'] == 30
    assert facts['llm_asked'] == 30 and facts['degraded'] == facts['kinds']['micro']['degraded'] == 10
    assert facts['checks'][0]['name'] == 'max_degraded_share' and facts['checks'][0]['value'] == round(10 / 30.0, 5)
    assert [body['content'] for body in server.stats['bodies'][:2]] in (['r 0', 'm 1'], ['m 0', 'r 1'])

    result, failed = run_module(cynic_stress.main, dict(args, max_degraded_share=0.1))
    assert failed and 'over max_degraded_share 0.1' in result['msg']
    assert result['ansible_facts']['cynic_stress']['passed'] is False

    result, failed = run_module(cynic_stress.main, dict(args, _ansible_check_mode=True))
    assert not failed and result['ansible_facts']['cynic_stress']['kinds']['micro']['planned'] == 30


def test_a_mix_is_checked_and_conflicts_are_named(run_module):
    base = {'url': 'http://127.0.0.1:1', 'mix': MIX, '_ansible_check_mode': True}
    result, failed = run_module(cynic_stress.main, dict(base, body={'content': 'x'}))
    assert failed and 'mutually exclusive: mix|body' in result['msg'], result['msg']
    result, failed = run_module(cynic_stress.main, dict(base, cells=[{'content': 'x'}]))
    assert failed and 'mutually exclusive: mix|cells' in result['msg'], result['msg']
    result, failed = run_module(cynic_stress.main, dict(base, mix=[dict(MIX[0], weight=0)]))
    assert failed and 'mix entry 1 (reflex): weight must be a positive number' in result['msg'], result['msg']
    result, failed = run_module(cynic_stress.main, dict(base, mix=[{'name': 'a', 'weight': 1}]))
    assert failed and 'body' in result['msg'], result['msg']
    result, failed = run_module(cynic_stress.main, dict(base, mix=MIX + [MIX[0]]))
    assert failed and "the name 'reflex' is used twice" in result['msg']
    result, failed = run_module(cynic_stress.main, dict(base, method='GET'))
    assert failed and 'method GET sends none' in result['msg']
    result, failed = run_module(cynic_stress.main, dict(base, max_degraded_share=2))
    assert failed and 'max_degraded_share must be between 0 and 1' in result['msg']
