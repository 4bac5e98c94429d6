# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The stress playbook's checklist (playbooks/templates/stress-checklist.json.j2), rendered by
ansible-playbook from facts shaped like the cynic_stress and cynic_cluster_facts modules' own."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TEMPLATE = os.path.join(REPO_ROOT, 'playbooks', 'templates', 'stress-checklist.json.j2')
AUDIT = os.path.join(REPO_ROOT, 'playbooks', 'files', 'journal_audit.py')
PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        content: "{{{{ lookup('ansible.builtin.template', '{template}') }}}}"
        dest: {out}
"""
IDS = ['cynic-1', 'cynic-2']

# Every item passes with these; each test breaks or bends one thing.
CLEAN = {
    '_stress_rate': 150,
    '_stress_expected_ids': IDS,
    '_stress_min_instance_share': 0.375,
    '_stress_min_rate_ratio': 0.99,
    '_stress_max_error_rate': 0.01,
    '_stress_max_p99_ms': None,
    '__stress_health_by_host': {'app1': {'instances': [
        {'url': 'http://127.0.0.1:8001', 'instance_id': 'cynic-1', 'healthy': True, 'status': 'alive',
         'http_status': 200, 'storage': {'surreal': 'connected'}},
        {'url': 'http://127.0.0.1:8002', 'instance_id': 'cynic-2', 'healthy': True, 'status': 'alive',
         'http_status': 200, 'storage': {'surreal': 'connected'}}]}},
    '__stress_run': {
        'sent': 1500, 'planned': 1500, 'errors': 0, 'dropped': 0, 'error_rate': 0.0, 'rate_ratio': 1.0,
        'achieved_rate': 150.0, 'ok_rate': 150.0, 'actual_duration_s': 10.0, 'max_in_flight': 256,
        'generator_saturated': False, 'saturation_reasons': [],
        'timeline': [{'sent': 150, 'ok': 150}] * 10,
        'instances': {'cynic-1': 750, 'cynic-2': 750}, 'instance_shares': {'cynic-1': 0.5, 'cynic-2': 0.5},
        'instance_errors': {}, 'responses_without_instance': 0, 'status_codes': {'200': 1500}, 'errors_by_class': {},
        'q_score': {'count': 1500, 'mean': 50.0, 'min': 12.5, 'max': 80.0}, 'timeout_s': 10.0,
        'judgment_ids_count': 1650, 'counted_at_timeout': 0,
        'workload': {'corpus_cells': 120, 'distinct_cells': 1200, 'requests': 1650, 'repeat_requests': 450,
                     'concurrent_repeats': 220, 'repeat_share': 0.25, 'concurrent_share': 0.5, 'marked': True},
        'duplicates': {'cells_answered': 1200, 'cells_answered_more_than_once': 400, 'judgments': 1200,
                       'judgments_per_cell': 1.0, 'duplicate_judgments': 0, 'cells_judged_more_than_once': 0,
                       'cells_on_several_instances': 150, 'counted_from': 'distinct judgment_id values of the 200 answers'},
        'q_vs_rest': {'texts_compared': 120, 'mean_abs_difference': 0.2, 'max_abs_difference': 0.9, 'moved': 3,
                      'tolerance': 0.5,
                      'at_rest': {'count': 120, 'mean': 55.1, 'min': 20.0, 'p10': 30.0, 'p50': 55.0, 'p90': 80.0, 'max': 90.0},
                      'under_load': {'count': 120, 'mean': 55.0, 'min': 20.0, 'p10': 30.0, 'p50': 55.0, 'p90': 80.0,
                                     'max': 90.0}},
        'latency_ms': {'intended': {'count': 1500, 'p50': 3.0, 'p95': 6.0, 'p99': 9.0, 'max': 20.0}},
        'latency_ok_ms': {'intended': {'count': 1500, 'p50': 3.0, 'p95': 6.0, 'p99': 9.0, 'max': 20.0}},
    },
    '__stress_one': {'judgment_ids_count': 10},
    '__stress_at_rest': {'judgment_ids_count': 0},
    '_stress_max_q_shift': 1.0,
    '_stress_rest_rate': 10,
    '_stress_corpus_file': '/x/playbooks/files/stress_corpus.jsonl',
    '__stress_store': {'surreal': {'reachable': True, 'error': None, 'duplicate_examples': []},
                       'missing_judgments': 0, 'judgments_checked': 1661, 'judgment_count': 1661,
                       'missing_judgment_ids': [], 'duplicate_cells': 0},
    '__stress_ref': {'before': {'status': 200, 'json': {'judgment_id': 'j-ref', 'q_score': 61.8}},
                     'after': {'status': 200, 'json': {'judgment_id': 'j-ref', 'q_score': 61.8}}},
    '__stress_journals': {'app1': {'path': '/var/lib/cynic/judgments.jsonl', 'present': True,
                                   'lines_before': 0, 'lines_after': 1661, 'audit_passed': True,
                                   'audit': {'lines': 1661, 'unparseable': 0, 'without_judgment_id': 0,
                                             'duplicate_ids': 0, 'torn_tail': False, 'examples': []}}},
}


@pytest.fixture
def checklist(tmp_path, run_playbook):
    """checklist(**changes) -> {key: (passed, line)} of the checklist rendered with CLEAN updated by
    changes (a dict value is merged one level deep)."""

    def render(**changes):
        facts = copy.deepcopy(CLEAN)
        for name, value in changes.items():
            if isinstance(value, dict) and isinstance(facts.get(name), dict):
                facts[name].update(value)
            else:
                facts[name] = value
        (tmp_path / 'facts.json').write_text(json.dumps(facts))
        out = tmp_path / 'checklist.json'
        run_playbook(PLAYBOOK.format(template=TEMPLATE, out=out), None, '-e', '@' + str(tmp_path / 'facts.json'))
        return {item['key']: (item['passed'], item['line']) for item in json.loads(out.read_text())}

    return render


def test_a_clean_run_passes_every_item_and_each_fault_fails_its_own(checklist):
    items = checklist()
    assert all(passed for passed, dummy in items.values()), items
    assert len(items) == 8
    failed = checklist(__stress_run={'q_score': {'count': 1500, 'mean': 50.0, 'min': -1.0, 'max': 80.0}})
    assert [key for key, (passed, dummy) in failed.items() if not passed] == ['q_scores_held']


def test_a_q_score_of_zero_is_in_range(checklist):
    # 0 is a legal Q-Score (a missing axiom makes Q 0), not a missing one
    items = checklist(__stress_run={'q_score': {'count': 1500, 'mean': 0.0, 'min': 0.0, 'max': 0.0}})
    assert items['q_scores_held'][0] is True, items['q_scores_held'][1]
    items = checklist(__stress_run={'q_score': {'count': 0, 'mean': None, 'min': None, 'max': None}})
    assert items['q_scores_held'][0] is False


def test_a_duplicate_judgment_in_the_answers_fails_no_duplicates_even_with_a_clean_store(checklist):
    twice = {'duplicates': dict(CLEAN['__stress_run']['duplicates'], judgments=1203, judgments_per_cell=1.0025,
                                duplicate_judgments=3, cells_judged_more_than_once=3)}
    passed, line = checklist(__stress_run=twice)['no_duplicates']
    assert passed is False, line
    assert '1203 judgments of 1200 distinct cells (1.0025 per cell, 3 duplicates)' in line, line
    # a run without the corpus audited nothing: that is not a pass
    passed, line = checklist(__stress_run={'duplicates': {}, 'workload': {}})['no_duplicates']
    assert passed is False and 'no audit (no corpus sent)' in line, line


def test_q_scores_that_move_under_load_fail_the_q_item(checklist):
    moved = dict(CLEAN['__stress_run']['q_vs_rest'], mean_abs_difference=1.5, max_abs_difference=9.0, moved=60)
    passed, line = checklist(__stress_run={'q_vs_rest': moved})['q_scores_held']
    assert passed is False, line
    assert 'a text moved by 1.5 points on average, 9.0 at most, 60 texts by more than 0.5' in line, line
    assert checklist(__stress_run={'q_vs_rest': moved}, _stress_max_q_shift=2.0)['q_scores_held'][0] is True
    assert checklist(__stress_run={'q_vs_rest': {}})['q_scores_held'][0] is False


def test_the_error_rate_limit_is_inclusive_as_in_the_module(checklist):
    at_limit = {'errors': 15, 'error_rate': 0.01, 'status_codes': {'200': 1485, '503': 15}}
    items = checklist(__stress_run=at_limit)
    assert items['error_rate'][0] is True, items['error_rate'][1]
    assert 'Error rate at most 1%' in items['error_rate'][1]
    # a limit of 0 means no error at all, and a clean run meets it
    assert checklist(_stress_max_error_rate=0)['error_rate'][0] is True
    assert checklist(_stress_max_error_rate=0, __stress_run=at_limit)['error_rate'][0] is False


def test_requests_dropped_at_the_cap_are_named_in_the_rate_item(checklist):
    slow = {'sent': 1200, 'dropped': 300, 'rate_ratio': 0.8, 'achieved_rate': 120.0, 'error_rate': 0.2}
    items = checklist(__stress_run=slow)
    assert items['rate_sustained'][0] is False
    assert '300 more dropped at the in-flight cap' in items['rate_sustained'][1]


def test_the_latency_item_judges_the_2xx_answers_too(checklist):
    """Fast errors keep the all-requests p99 low; the 2xx answers alone break the objective."""
    assert checklist(_stress_max_p99_ms=100)['latency_p99'][0] is True
    slow_ok = {'errors': 600, 'latency_ok_ms': {'intended': {'count': 900, 'p50': 400.0, 'p95': 800.0,
                                                             'p99': 900.0, 'max': 950.0}}}
    passed, line = checklist(_stress_max_p99_ms=100, __stress_run=slow_ok)['latency_p99']
    assert passed is False, line
    assert '9.0 ms over all 1500 requests' in line and '900.0 ms over the 900 2xx answers' in line, line
    no_ok = {'latency_ok_ms': {'intended': {'count': 0, 'p50': None, 'p95': None, 'p99': None, 'max': None}}}
    passed, line = checklist(_stress_max_p99_ms=100, __stress_run=no_ok)['latency_p99']
    assert passed is False and 'none ms over the 0 2xx answers' in line, line
    dropped = {'dropped': 300, 'counted_at_timeout': 300,
               'latency_ms': {'intended': {'count': 1500, 'p50': 3.0, 'p95': 10000.5, 'p99': 10001.0, 'max': 10002.0}}}
    passed, line = checklist(_stress_max_p99_ms=100, __stress_run=dropped)['latency_p99']
    assert passed is False and '300 never sent, counted at the 10.0 s timeout' in line, line


def test_the_load_spread_is_over_the_2xx_answers(checklist):
    """An instance that answers only errors has no share of the load, and the item names its errors."""
    one_broken = {'instances': {'cynic-1': 800}, 'instance_shares': {'cynic-1': 1.0},
                  'instance_errors': {'cynic-2': 700}, 'errors': 700}
    passed, line = checklist(__stress_run=one_broken)['load_spread']
    assert passed is False, line
    assert 'Share of the 2xx answers by X-Instance-ID: cynic-1 100.0% (800), cynic-2 0.0% (0)' in line, line
    assert 'Error answers by instance (not in the shares): {"cynic-2": 700}.' in line, line


REPORT = os.path.join(REPO_ROOT, 'playbooks', 'templates', 'stress-report.md.j2')
REPORT_PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.set_fact:
        __stress_checklist: "{{{{ lookup('ansible.builtin.template', '{checklist}') | from_json }}}}"
    - ansible.builtin.template:
        src: {report}
        dest: {out}
        mode: '0644'
"""


def test_the_report_shows_both_latency_sets_and_the_dropped(tmp_path, run_playbook, http_server):
    """The report, rendered from the facts of a real run of the engine that dropped requests at the
    in-flight cap and got errors: it names both latency sets, the requests counted at the timeout,
    and the spread over the 2xx answers."""
    aiohttp_web = pytest.importorskip('aiohttp.web')
    from ansible_collections.cynic.cluster.plugins.module_utils import cynic_load

    async def handler(server, request):
        await request.read()
        await asyncio.sleep(0.05)
        number = server.stats['requests']
        return aiohttp_web.json_response({'judgment_id': 'j-%d' % number, 'q_score': 50.0},
                                         status=503 if number % 4 == 0 else 200,
                                         headers={'X-Instance-ID': IDS[number % 2]})

    server = http_server([('POST', '/judge', handler)])
    run = cynic_load.run_load(cynic_load.LoadConfig(server.url, rate=100, duration=1, max_in_flight=2, timeout=0.5))
    assert run['dropped'] > 0 and run['errors'] > 0, run
    facts = copy.deepcopy(CLEAN)
    facts.update({
        '__stress_run': run, '__stress_one': copy.deepcopy(run), '_stress_duration': 1, '_stress_warmup': 0,
        '_stress_url': server.url, '_stress_lb': 'localhost', '__stress_nproc': {'stdout': '2'},
        '_stress_python': sys.executable, '_stress_db': 'db1', '_stress_max_p99_ms': 100,
        '_stress_single_target': {'instance_id': 'cynic-1', 'url': server.url},
        '__stress_plot': {'rc': 1, 'stderr': 'no matplotlib here'},
    })
    (tmp_path / 'facts.json').write_text(json.dumps(facts))
    out = tmp_path / 'report.md'
    run_playbook(REPORT_PLAY.format(checklist=TEMPLATE, report=REPORT, out=out), None,
                 '-e', '@' + str(tmp_path / 'facts.json'))
    text = out.read_text()
    print(text)
    assert '| requests counted at the timeout (never sent) | %d | %d |' % (run['dropped'], run['dropped']) in text
    assert 'latency p99, ms, 2xx answers only (from intended start) | %.1f |' % (
        run['latency_ok_ms']['intended']['p99']) in text
    assert 'latency p99, ms, all requests (from intended start) | %.1f |' % run['latency_ms']['intended']['p99'] in text
    assert '(%d never sent,\ncounted at the 0.5 s timeout)' % run['dropped'] in text
    assert '| 2xx answers | share of the 2xx answers | minimum | error answers (not in the share) |' in text
    assert '| p50 ms, 2xx | p99 ms, 2xx |' in text
    assert '**Worst second**: second %d, p50' % run['worst_second']['second'] in text
    assert 'over all %d requests (%d never sent, counted at the 0.5 s timeout' % (run['planned'], run['dropped']) in text


def test_a_journal_whose_lines_do_not_all_parse_fails_the_logs_item(checklist):
    torn = {'app1': {**CLEAN['__stress_journals']['app1'], 'audit_passed': False,
                     'audit': {'lines': 1661, 'unparseable': 1, 'without_judgment_id': 0, 'duplicate_ids': 2,
                               'torn_tail': True, 'examples': [{'line': 7, 'problem': 'unparseable', 'text': '{"ju'}]}}}
    passed, line = checklist(__stress_journals=torn)['logs_in_cynic_home']
    assert passed is False
    assert '1 unparseable' in line and '2 duplicate ids' in line and 'torn last line' in line, line


def test_the_journal_audit_parses_every_line(tmp_path):
    journal = tmp_path / 'judgments.jsonl'
    journal.write_bytes(b'{"judgment_id": "a"}\n{"judgment_id": "b"}\nnot json\n{"q": 1}\n'
                        b'{"judgment_id": "a"}\n{"judgment_id": "c"')
    done = subprocess.run([sys.executable, str(AUDIT), str(journal)], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    assert {k: result[k] for k in ('lines', 'unparseable', 'without_judgment_id', 'duplicate_ids', 'torn_tail')} == {
        'lines': 6, 'unparseable': 2, 'without_judgment_id': 1, 'duplicate_ids': 1, 'torn_tail': True}
    assert [e['line'] for e in result['examples']] == [3, 4, 5, 6]
    missing = subprocess.run([sys.executable, str(AUDIT), str(tmp_path / 'none')], capture_output=True, text=True, check=False)
    assert missing.returncode == 1 and 'error' in json.loads(missing.stdout)
