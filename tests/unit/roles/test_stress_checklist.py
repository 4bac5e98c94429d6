# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The stress role's checklist and report (roles/stress/tasks/report.yml and its templates), run by
ansible-playbook on this machine from recorded results: cynic_stress's facts judged by the load
engine's own checks (cynic_load.apply_thresholds, with the thresholds the role passes), cynic_cluster_facts'
facts, and the journal audit's output of real files. The checklist only reads verdicts, so each
fault below goes through the code that judges it."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys

import pytest
import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ROLE = os.path.join(REPO_ROOT, 'roles', 'stress')
AUDIT = os.path.join(ROLE, 'files', 'journal_audit.py')
IDS = ['cynic-1', 'cynic-2']
# Two instances on app1 (cynic-1, cynic-2 through the topology filter), SurrealDB on db1; never contacted.
INVENTORY = """
all:
  vars: {ansible_connection: local}
  hosts:
    lb1: {}
    app1: {cynic_instance_id_prefix: cynic-, cynic_instances: [{id: 1, port: 8001}, {id: 2, port: 8002}]}
    db1: {}
  children:
    cynic_lb: {hosts: {lb1: {}}}
    cynic_app: {hosts: {app1: {}}}
    cynic_db: {hosts: {db1: {}}}
"""
PLAY = """
- hosts: lb1
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: cynic.cluster.stress
        tasks_from: report.yml
"""
# The thresholds of the role's cluster run (tasks/load.yml), by the option names of cynic_stress.
THRESHOLD_OPTIONS = {'min_rate_ratio', 'max_error_rate', 'max_p99_ms', 'expected_instances', 'min_instance_share',
                     'q_score_min', 'q_score_max', 'max_duplicate_judgments', 'max_q_shift'}

LATENCY = {'count': 1500, 'p50': 3.0, 'p90': 5.0, 'p95': 6.0, 'p99': 9.0, 'p99_9': 15.0, 'max': 20.0, 'mean': 3.5}
RUN = {
    'target_rate': 150.0, 'duration_s': 10.0, 'warmup_s': 0.0,
    'sent': 1500, 'planned': 1500, 'errors': 0, 'dropped': 0, 'error_rate': 0.0, 'rate_ratio': 1.0,
    'achieved_rate': 150.0, 'ok_rate': 150.0, 'actual_duration_s': 10.0, 'max_in_flight': 256,
    'generator_saturated': False, 'saturation_reasons': [],
    'timeline': [{'second': n, 'sent': 150, 'ok': 150, 'errors': 0, 'dropped': 0, 'p50_ms': 3.0, 'p99_ms': 9.0,
                  'p50_ok_ms': 3.0, 'p99_ok_ms': 9.0} for n in range(10)],
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
    'latency_ms': {'intended': LATENCY, 'actual': LATENCY},
    'latency_ok_ms': {'intended': LATENCY, 'actual': LATENCY},
    # What the report shows besides the checklist
    'event_loop': 'uvloop', 'run_id': 'r1', 'wall_time_s': 15.2, 'median_second_p99_ms': 9.0, 'worst_second': None,
    'scheduler_lag_ms': {'p50': 0.1, 'p99': 0.5, 'max': 1.0}, 'peak_in_flight': 5, 'judgment_ids_sha256': 'ab12',
}

# Every item passes with these; each test breaks or bends one thing.
CLEAN = {
    'stress_rate': 150,
    'stress_min_instance_share': 0.375,
    'stress_min_rate_ratio': 0.99,
    'stress_max_error_rate': 0.01,
    'stress_max_p99_ms': None,
    'stress_max_q_shift': 1.0,
    'stress_rest_rate': 10,
    '__stress_health_by_host': {'app1': {
        'instances': [
            {'url': 'http://127.0.0.1:8001', 'instance_id': 'cynic-1', 'healthy': True, 'status': 'alive',
             'http_status': 200, 'storage': {'surreal': 'connected'}},
            {'url': 'http://127.0.0.1:8002', 'instance_id': 'cynic-2', 'healthy': True, 'status': 'alive',
             'http_status': 200, 'storage': {'surreal': 'connected'}}],
        'instance_count': 2, 'healthy_count': 2, 'all_healthy': True, 'instance_ids': IDS,
        'instance_ids_distinct': True}},
    '__stress_run': RUN,
    '__stress_one': dict(RUN, judgment_ids_count=10, run_id='r2'),
    '__stress_at_rest': {'judgment_ids_count': 0},
    '__stress_store': {'surreal': {'reachable': True, 'error': None, 'duplicate_examples': []},
                       'missing_judgments': 0, 'judgments_checked': 1661, 'judgment_count': 1661,
                       'missing_judgment_ids': [], 'duplicate_cells': 0},
    '__stress_ref': {'before': {'status': 200, 'json': {'judgment_id': 'j-ref', 'q_score': 61.8}},
                     'after': {'status': 200, 'json': {'judgment_id': 'j-ref', 'q_score': 61.8}}},
    # Each app host's journal: its lines before the run, and its content after (audited for real).
    '__stress_journals': {'app1': {'lines_before': 0, 'content': b''.join(
        b'{"judgment_id": "j-%d"}\n' % n for n in range(1661))}},
}


def thresholds_of(facts):
    """The thresholds the role gives cynic_stress for the cluster run (tasks/load.yml)."""
    from ansible_collections.cynic.cluster.plugins.module_utils import cynic_load

    return cynic_load.Thresholds(
        min_rate_ratio=facts['stress_min_rate_ratio'], max_error_rate=facts['stress_max_error_rate'],
        max_p99_ms=facts['stress_max_p99_ms'], expected_instances=IDS,
        min_instance_share=facts['stress_min_instance_share'], q_score_min=0, q_score_max=100,
        max_duplicate_judgments=0, max_q_shift=facts['stress_max_q_shift'])


def audit(tmp_path, host, content):
    """journal_audit.py's output and return code on a file holding content (None: no file)."""
    path = tmp_path / ('%s-judgments.jsonl' % host)
    if content is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(content)
    done = subprocess.run([sys.executable, AUDIT, str(path)], capture_output=True, text=True, check=False)
    return {'item': host, 'rc': done.returncode, 'stdout': done.stdout, 'stderr': done.stderr}


def recorded(tmp_path, facts):
    """The extra vars of the play: the settings and the role's registered results, shaped as the
    modules and tasks return them."""
    from ansible_collections.cynic.cluster.plugins.module_utils import cynic_load

    run = cynic_load.apply_thresholds(copy.deepcopy(facts['__stress_run']), thresholds_of(facts))
    out = {key: value for key, value in facts.items() if not key.startswith('__')}
    out.update({
        'stress_report_dir': str(tmp_path / 'reports'),
        'loadgen_venv_path': '/opt/cynic-loadgen/venv',  # the loadgen role's default, imported in a real run
        '__stress_cluster': {'ansible_facts': {'cynic_stress': run}},
        '__stress_single': ({'ansible_facts': {'cynic_stress': facts['__stress_one']}}
                            if facts['__stress_one'] is not None else {'skipped': True}),
        '__stress_rest': {'ansible_facts': {'cynic_stress': facts['__stress_at_rest']}},
        '__stress_reference_before': facts['__stress_ref']['before'],
        '__stress_reference_after': facts['__stress_ref']['after'],
        '__stress_health': {'results': [
            {'item': host, 'ansible_facts': {'cynic_cluster': health}} if health is not None
            else {'item': host, 'unreachable': True, 'msg': 'ssh: no route'}
            for host, health in facts['__stress_health_by_host'].items()]},
        '__stress_journal_before': {'results': [
            {'item': host, 'rc': 0, 'stdout': str(journal['lines_before'])}
            for host, journal in facts['__stress_journals'].items()]},
        '__stress_journal_after': {'results': [
            audit(tmp_path, host, journal['content']) for host, journal in facts['__stress_journals'].items()]},
        '__stress_storage': ({'ansible_facts': {'cynic_cluster': facts['__stress_store']}}
                             if facts['__stress_store'] is not None else {'unreachable': True, 'msg': 'down'}),
        '__stress_nproc': {'stdout': '2'},
    })
    return out


def play(tmp_path, extra):
    """ansible-playbook on the report tasks: (return code, stdout)."""
    (tmp_path / 'play.yml').write_text(PLAY)
    (tmp_path / 'inventory.yml').write_text(INVENTORY)
    (tmp_path / 'extra.json').write_text(json.dumps(extra))
    playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    env = dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR='1')
    proc = subprocess.run([playbook, '-i', str(tmp_path / 'inventory.yml'), '-e', '@' + str(tmp_path / 'extra.json'),
                           str(tmp_path / 'play.yml')], capture_output=True, text=True, cwd=tmp_path, env=env,
                          check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def checklist(tmp_path):
    """checklist(**changes) -> {key: (passed, line)} of the checklist the role wrote in stress-facts.json,
    from CLEAN updated by changes (a dict value is merged one level deep). The play must fail exactly
    when an item failed."""

    def render(**changes):
        facts = copy.deepcopy(CLEAN)
        for name, value in changes.items():
            if isinstance(value, dict) and isinstance(facts.get(name), dict):
                facts[name].update(value)
            else:
                facts[name] = value
        rc, output = play(tmp_path, recorded(tmp_path, facts))
        written = json.loads((tmp_path / 'reports' / 'stress-facts.json').read_text())
        items = {item['key']: (item['passed'], item['line']) for item in written['checklist']}
        everything_passed = all(passed for passed, dummy in items.values())
        assert written['passed'] is everything_passed
        assert (rc == 0) is everything_passed, output[-3000:]
        if not everything_passed:
            assert 'item(s) of the checklist FAILED' in output, output[-3000:]
        return items

    return render


def test_the_role_passes_every_threshold_the_checklist_reads():
    """The checklist reads cynic_stress's checks by name: the cluster run must set each threshold."""
    with open(os.path.join(ROLE, 'tasks', 'load.yml'), encoding='utf-8') as f:
        tasks = yaml.safe_load(f)
    cluster = [t for t in tasks if t.get('register') == '__stress_cluster']
    assert len(cluster) == 1
    options = cluster[0]['cynic.cluster.cynic_stress']
    assert THRESHOLD_OPTIONS <= set(options), THRESHOLD_OPTIONS - set(options)
    assert options['q_score_min'] == 0 and options['q_score_max'] == 100 and options['max_duplicate_judgments'] == 0
    assert options['fail_on_thresholds'] is False  # the report is written first


def test_a_clean_run_passes_every_item_and_each_fault_fails_its_own(checklist):
    items = checklist()
    assert all(passed for passed, dummy in items.values()), items
    assert len(items) == 8
    failed = checklist(__stress_run={'q_score': {'count': 1500, 'mean': 50.0, 'min': -1.0, 'max': 80.0}})
    assert [key for key, (passed, dummy) in failed.items() if not passed] == ['q_scores_held']
    assert 'q_score min -1.000 is below q_score_min 0' in failed['q_scores_held'][1]


def test_a_q_score_of_zero_is_in_range(checklist):
    # 0 is a legal Q-Score (a missing axiom makes Q 0), not a missing one
    items = checklist(__stress_run={'q_score': {'count': 1500, 'mean': 0.0, 'min': 0.0, 'max': 0.0}})
    assert items['q_scores_held'][0] is True, items['q_scores_held'][1]
    items = checklist(__stress_run={'q_score': {'count': 0, 'mean': None, 'min': None, 'max': None}})
    assert items['q_scores_held'][0] is False


def test_an_answer_200_without_a_q_score_fails_the_q_item(checklist):
    items = checklist(__stress_run={'q_score': {'count': 1499, 'mean': 50.0, 'min': 12.5, 'max': 80.0}})
    assert items['q_scores_held'][0] is False
    assert '1499 of 1500 answers 200 carried a Q-Score' in items['q_scores_held'][1]


def test_a_reference_cell_that_moved_fails_the_q_item(checklist):
    before = CLEAN['__stress_ref']['before']
    moved = {'before': before, 'after': {'status': 200, 'json': {'judgment_id': 'j-ref', 'q_score': 61.9}}}
    passed, line = checklist(__stress_ref=moved)['q_scores_held']
    assert passed is False and 'NOT the same' in line, line
    other = {'before': before, 'after': {'status': 200, 'json': {'judgment_id': 'j-new', 'q_score': 61.8}}}
    assert checklist(__stress_ref=other)['q_scores_held'][0] is False


def test_a_duplicate_judgment_in_the_answers_fails_no_duplicates_even_with_a_clean_store(checklist):
    twice = {'duplicates': dict(CLEAN['__stress_run']['duplicates'], judgments=1203, judgments_per_cell=1.0025,
                                duplicate_judgments=3, cells_judged_more_than_once=3)}
    passed, line = checklist(__stress_run=twice)['no_duplicates']
    assert passed is False, line
    assert '1203 judgments of 1200 distinct cells (1.0025 per cell, 3 duplicates)' in line, line
    # a run without the corpus audited nothing: that is not a pass
    passed, line = checklist(__stress_run={'duplicates': {}, 'workload': {}})['no_duplicates']
    assert passed is False and 'no audit (no corpus sent)' in line, line
    # nor is a run in which no cell was answered
    nothing = {'duplicates': dict(CLEAN['__stress_run']['duplicates'], cells_answered=0, judgments=0)}
    assert checklist(__stress_run=nothing)['no_duplicates'][0] is False


def test_a_cell_stored_twice_or_an_unreadable_store_fails(checklist):
    passed, line = checklist(__stress_store={'duplicate_cells': 2})['no_duplicates']
    assert passed is False and '2 cells stored more than once' in line, line
    items = checklist(__stress_store=None)
    assert items['no_data_loss'][0] is False and items['no_duplicates'][0] is False
    assert 'db1 gave no answer: down' in items['no_data_loss'][1], items['no_data_loss'][1]
    passed, line = checklist(__stress_store={'missing_judgments': 3, 'missing_judgment_ids': ['j-1', 'j-2', 'j-3']})[
        'no_data_loss']
    assert passed is False and '3 missing (for example j-1, j-2, j-3)' in line, line


def test_q_scores_that_move_under_load_fail_the_q_item(checklist):
    moved = dict(CLEAN['__stress_run']['q_vs_rest'], mean_abs_difference=1.5, max_abs_difference=9.0, moved=60)
    passed, line = checklist(__stress_run={'q_vs_rest': moved})['q_scores_held']
    assert passed is False, line
    assert 'a text moved by 1.5 points on average, 9.0 at most, 60 texts by more than 0.5' in line, line
    assert checklist(__stress_run={'q_vs_rest': moved}, stress_max_q_shift=2.0)['q_scores_held'][0] is True
    assert checklist(__stress_run={'q_vs_rest': {}})['q_scores_held'][0] is False


def test_the_error_rate_limit_is_inclusive_as_in_the_module(checklist):
    at_limit = {'errors': 15, 'error_rate': 0.01, 'status_codes': {'200': 1485, '503': 15},
                'q_score': {'count': 1485, 'mean': 50.0, 'min': 12.5, 'max': 80.0}}
    items = checklist(__stress_run=at_limit)
    assert items['error_rate'][0] is True, items['error_rate'][1]
    assert 'Error rate at most 1%' in items['error_rate'][1]
    # a limit of 0 means no error at all, and a clean run meets it
    assert checklist(stress_max_error_rate=0)['error_rate'][0] is True
    assert checklist(stress_max_error_rate=0, __stress_run=at_limit)['error_rate'][0] is False


def test_requests_dropped_at_the_cap_are_named_in_the_rate_item(checklist):
    slow = {'sent': 1200, 'dropped': 300, 'rate_ratio': 0.8, 'achieved_rate': 120.0, 'error_rate': 0.2}
    items = checklist(__stress_run=slow)
    assert items['rate_sustained'][0] is False
    assert '300 more dropped at the in-flight cap' in items['rate_sustained'][1]


def test_the_latency_item_judges_the_2xx_answers_too(checklist):
    """Fast errors keep the all-requests p99 low; the 2xx answers alone break the objective."""
    assert checklist(stress_max_p99_ms=100)['latency_p99'][0] is True
    slow_ok = {'errors': 600, 'latency_ok_ms': {'intended': {'count': 900, 'p50': 400.0, 'p95': 800.0,
                                                             'p99': 900.0, 'max': 950.0}}}
    passed, line = checklist(stress_max_p99_ms=100, __stress_run=slow_ok)['latency_p99']
    assert passed is False, line
    assert '9.0 ms over all 1500 requests' in line and '900.0 ms over the 900 2xx answers' in line, line
    no_ok = {'latency_ok_ms': {'intended': {'count': 0, 'p50': None, 'p95': None, 'p99': None, 'max': None}}}
    passed, line = checklist(stress_max_p99_ms=100, __stress_run=no_ok)['latency_p99']
    assert passed is False and 'none ms over the 0 2xx answers' in line, line
    dropped = {'dropped': 300, 'counted_at_timeout': 300,
               'latency_ms': {'intended': dict(LATENCY, p95=10000.5, p99=10001.0, max=10002.0), 'actual': LATENCY}}
    passed, line = checklist(stress_max_p99_ms=100, __stress_run=dropped)['latency_p99']
    assert passed is False and '300 never sent, counted at the 10.0 s timeout' in line, line


def test_the_load_spread_is_over_the_2xx_answers(checklist):
    """An instance that answers only errors has no share of the load, and the item names its errors."""
    one_broken = {'instances': {'cynic-1': 800}, 'instance_shares': {'cynic-1': 1.0},
                  'instance_errors': {'cynic-2': 700}, 'errors': 700}
    passed, line = checklist(__stress_run=one_broken)['load_spread']
    assert passed is False, line
    assert 'Share of the 2xx answers by X-Instance-ID: cynic-1 100.0% (800), cynic-2 0.0% (0)' in line, line
    assert 'Error answers by instance (not in the shares): {"cynic-2": 700}.' in line, line
    assert 'instance cynic-2 gave 0.0000 of the 2xx answers (and 700 answers that were errors)' in line, line


def test_an_unhealthy_or_unknown_or_silent_instance_fails_the_health_item(checklist):
    health = copy.deepcopy(CLEAN['__stress_health_by_host']['app1'])
    health['instances'][1].update(healthy=False, status='starting', http_status=503)
    health.update(healthy_count=1, all_healthy=False)
    passed, line = checklist(__stress_health_by_host={'app1': health})['instances_healthy']
    assert passed is False and '1 of 2 instances healthy' in line, line
    stranger = copy.deepcopy(CLEAN['__stress_health_by_host']['app1'])
    stranger['instance_ids'] = ['cynic-1', 'other-2']
    passed, line = checklist(__stress_health_by_host={'app1': stranger})['instances_healthy']
    assert passed is False and 'DO NOT match' in line, line
    passed, line = checklist(__stress_health_by_host={'app1': None})['instances_healthy']
    assert passed is False and 'app1 gave no answer: ssh: no route' in line, line


def test_a_journal_whose_lines_do_not_all_parse_fails_the_logs_item(checklist):
    torn = b''.join(b'{"judgment_id": "j-%d"}\n' % n for n in range(1656))
    torn += b'{"judgment_id": "j-1"}\n{"judgment_id": "j-2"}\n{"ju\n{"judgment_id": "j-x"}\n{"judgment_id": "j-y"}'
    passed, line = checklist(__stress_journals={'app1': {'lines_before': 0, 'content': torn}})['logs_in_cynic_home']
    assert passed is False
    assert '1 unparseable' in line and '2 duplicate ids' in line and 'torn last line' in line, line


def test_journals_that_grew_less_than_the_judgments_or_are_missing_fail_the_logs_item(checklist):
    short = {'app1': {'lines_before': 100, 'content': CLEAN['__stress_journals']['app1']['content']}}
    passed, line = checklist(__stress_journals=short)['logs_in_cynic_home']
    assert passed is False and 'grew by 1561 lines for 1660 judgments' in line, line
    passed, line = checklist(__stress_journals={'app1': {'lines_before': 0, 'content': None}})['logs_in_cynic_home']
    assert passed is False and 'MISSING' in line, line


def test_the_report_shows_both_latency_sets_and_the_dropped(tmp_path, http_server):
    """The report, rendered from the facts of a real run of the engine that dropped requests at the
    in-flight cap and got errors: it names both latency sets, the requests counted at the timeout,
    the spread over the 2xx answers and the engine's checks."""
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
    facts.update({'__stress_run': run, '__stress_one': copy.deepcopy(run), 'stress_duration': 1, 'stress_warmup': 0,
                  'stress_url': server.url, 'stress_max_p99_ms': 100})
    rc, output = play(tmp_path, recorded(tmp_path, facts))
    assert rc != 0, output[-3000:]  # this run breaks its thresholds
    text = (tmp_path / 'reports' / 'stress-report.md').read_text()
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
    assert '| `max_error_rate` | 0.01 | **FAIL**: error rate ' in text
    assert '| one instance: cynic-1 (`http://127.0.0.1:8001`) |' in text


def test_the_journal_audit_parses_every_line(tmp_path):
    journal = tmp_path / 'judgments.jsonl'
    journal.write_bytes(b'{"judgment_id": "a"}\n{"judgment_id": "b"}\nnot json\n{"q": 1}\n'
                        b'{"judgment_id": "a"}\n{"judgment_id": "c"')
    done = subprocess.run([sys.executable, AUDIT, str(journal)], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    assert {k: result[k] for k in ('lines', 'unparseable', 'without_judgment_id', 'duplicate_ids', 'torn_tail',
                                   'passed')} == {
        'lines': 6, 'unparseable': 2, 'without_judgment_id': 1, 'duplicate_ids': 1, 'torn_tail': True, 'passed': False}
    assert [e['line'] for e in result['examples']] == [3, 4, 5, 6]
    missing = subprocess.run([sys.executable, AUDIT, str(tmp_path / 'none')], capture_output=True, text=True, check=False)
    assert missing.returncode == 1 and 'error' in json.loads(missing.stdout)


@pytest.mark.parametrize('content, passed', [
    (b'{"judgment_id": "a"}\n{"judgment_id": "b"}\n', True),
    (b'', False),  # an empty journal holds no judgment
    (b'{"judgment_id": "a"}\n{"judgment_id": "b"}', False),  # torn last line
    (b'{"judgment_id": "a"}\n{"judgment_id": "a"}\n', False),
])
def test_the_journal_audit_gives_its_verdict(tmp_path, content, passed):
    journal = tmp_path / 'judgments.jsonl'
    journal.write_bytes(content)
    done = subprocess.run([sys.executable, AUDIT, str(journal)], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)['passed'] is passed
