# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The stress playbook's checklist (playbooks/templates/stress-checklist.json.j2), rendered by
ansible-playbook from facts shaped like the cynic_stress and cynic_cluster_facts modules' own."""

from __future__ import annotations

import copy
import json
import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TEMPLATE = os.path.join(REPO_ROOT, 'playbooks', 'templates', 'stress-checklist.json.j2')
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
        'responses_without_instance': 0, 'status_codes': {'200': 1500}, 'errors_by_class': {},
        'q_score': {'count': 1500, 'mean': 50.0, 'min': 12.5, 'max': 80.0},
        'judgment_ids_count': 1650, 'latency_ms': {'intended': {'p50': 3.0, 'p95': 6.0, 'p99': 9.0, 'max': 20.0}},
    },
    '__stress_one': {'judgment_ids_count': 10},
    '__stress_store': {'surreal': {'reachable': True, 'error': None, 'duplicate_examples': []},
                       'missing_judgments': 0, 'judgments_checked': 1661, 'judgment_count': 1661,
                       'missing_judgment_ids': [], 'duplicate_cells': 0},
    '__stress_ref': {'before': {'status': 200, 'json': {'judgment_id': 'j-ref', 'q_score': 61.8}},
                     'after': {'status': 200, 'json': {'judgment_id': 'j-ref', 'q_score': 61.8}}},
    '__stress_journals': {'app1': {'path': '/var/lib/cynic/judgments.jsonl', 'present': True,
                                   'lines_before': 0, 'lines_after': 1661}},
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
