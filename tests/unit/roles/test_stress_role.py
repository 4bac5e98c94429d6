# -*- coding: utf-8 -*-
# Copyright: (c) 2026, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""playbooks/stress.yml for real, every host this machine (the load generator's virtualenv is this
one: --skip-tags loadgen), against a stand-in cluster: two instances and a balancer that judge a cell
once and journal it, and a SurrealDB that answers the storage queries. It exercises the role's
wiring: delegate_to the app and database hosts, the topology, the modules' verdicts, the report
files and the final failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PLAYBOOK = os.path.join(REPO_ROOT, 'playbooks', 'stress.yml')
VENV = os.path.dirname(os.path.dirname(sys.executable))
MARKER = '\n\n[cynic-stress '  # what cynic_stress appends to a corpus text to make it a new cell
INVENTORY = """
all:
  vars: {{ansible_connection: local, surrealdb_root_password: pw, cynic_home: "{home}"}}
  hosts:
    lb1: {{}}
    app1: {{cynic_instance_id_prefix: cynic-, cynic_instances: [{{id: 1, port: {port1}}}, {{id: 2, port: {port2}}}]}}
    db1: {{surrealdb_bind_address: "127.0.0.1:{surreal}"}}
  children:
    cynic_lb: {{hosts: {{lb1: {{}}}}}}
    cynic_app: {{hosts: {{app1: {{}}}}}}
    cynic_db: {{hosts: {{db1: {{}}}}}}
"""


class Cluster(object):
    """One judgment per cell, journaled once; what SurrealDB stores (``lose`` of them left out)."""

    def __init__(self, journal, lose=0):
        self.journal = journal
        self.lose = lose
        self.lock = threading.Lock()
        self.judgments = {}
        self.turn = 0

    def judge(self, cell):
        with self.lock:
            if cell['content'] not in self.judgments:
                jid = 'j-%d' % len(self.judgments)
                self.judgments[cell['content']] = jid
                with open(self.journal, 'a', encoding='utf-8') as f:
                    f.write(json.dumps({'judgment_id': jid}) + '\n')
            self.turn += 1
            return self.judgments[cell['content']], self.turn

    def stored(self):
        with self.lock:
            ids = sorted(self.judgments.values())
        return ids[self.lose:]


def failure_summary(output):
    """A failed play's output, its long module results shortened: what broke, not 100 KB of corpus."""
    lines = []
    for line in output.splitlines():
        head, sep, result = line.partition(' => ')
        if sep and head.startswith('fatal:'):
            try:
                result = json.loads(result)
            except ValueError:
                pass
            else:
                stdout = result.pop('module_stdout', None)
                if stdout is not None:
                    result['module_stdout'] = '%d characters: %r ... %r' % (len(stdout), stdout[:300], stdout[-300:])
                line = '%s => %s' % (head, json.dumps(result, indent=1))
        lines.append(line if len(line) < 3000 else line[:1500] + ' ... ' + line[-1500:])
    return '\n'.join(lines)[-8000:]


def q_score(content):
    """The same text scores the same with any marker: 0 to 99 from its characters."""
    return float(sum(map(ord, content.split(MARKER)[0])) % 100)


@pytest.fixture
def stress(tmp_path, http_server):
    aiohttp_web = pytest.importorskip('aiohttp.web')
    home = tmp_path / 'home'
    home.mkdir()

    def start(lose=0, *args):
        cluster = Cluster(str(home / 'judgments.jsonl'), lose=lose)

        def judge_as(instance):
            async def handler(server, request):
                cell = await request.json()
                jid, turn = cluster.judge(cell)
                name = instance or 'cynic-%d' % (turn % 2 + 1)  # the balancer alternates
                return aiohttp_web.json_response({'judgment_id': jid, 'q_score': q_score(cell['content'])},
                                                 headers={'X-Instance-ID': name})
            return handler

        def health_of(instance):
            async def handler(server, request):
                return aiohttp_web.json_response({'status': 'alive', 'instance_id': instance,
                                                  'storage': {'surreal': 'connected'}})
            return handler

        async def sql(server, request):
            statements = (await request.text()).rstrip(';').split(';\n')
            stored = cluster.stored()
            # count, cells stored twice, examples; with ids to check: the ids, and what each record supersedes
            results = [[{'count': len(stored)}], [], []] + ([stored, [[]] * len(stored)] if len(statements) == 5 else [])
            return aiohttp_web.json_response([{'status': 'OK', 'result': r} for r in results])

        instances = [http_server([('POST', '/judge', judge_as(name)), ('GET', '/health', health_of(name))])
                     for name in ('cynic-1', 'cynic-2')]
        balancer = http_server([('POST', '/judge', judge_as(None))])
        surreal = http_server([('POST', '/sql', sql)])
        (tmp_path / 'inventory.yml').write_text(INVENTORY.format(
            home=home, port1=instances[0].port, port2=instances[1].port, surreal=surreal.port))
        playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
        env = dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR='1')
        proc = subprocess.run(
            [playbook, '-i', str(tmp_path / 'inventory.yml'), PLAYBOOK, '--skip-tags', 'loadgen',
             '-e', 'ansible_become=false', '-e', 'loadgen_venv_path=%s' % VENV, '-e', 'stress_url=%s' % balancer.url,
             '-e', 'stress_report_dir=%s' % (tmp_path / 'reports'), '-e', 'stress_rate=40', '-e', 'stress_duration=2',
             '-e', 'stress_warmup=0.5', '-e', 'stress_single_duration=1', '-e', 'stress_rest_rate=120',
             # a shared machine may fall a little behind 40 req/s; the rate item is not what this tests
             '-e', 'stress_min_rate_ratio=0.5', *args],
            capture_output=True, text=True, cwd=tmp_path, env=env, check=False, timeout=600)
        output = proc.stdout + proc.stderr
        facts_file = tmp_path / 'reports' / 'stress-facts.json'
        assert facts_file.exists(), failure_summary(output)
        return proc.returncode, output, json.loads(facts_file.read_text()), cluster

    return start


def test_a_sound_cluster_passes_every_item(stress, tmp_path):
    rc, output, facts, cluster = stress()
    failed = [item['line'] for item in facts['checklist'] if not item['passed']]
    assert not failed and rc == 0, (failed, failure_summary(output))
    assert [item['key'] for item in facts['checklist']] == [
        'instances_healthy', 'load_spread', 'rate_sustained', 'error_rate', 'q_scores_held', 'no_data_loss',
        'no_duplicates', 'logs_in_cynic_home']
    assert 'every item of the checklist passed' in output
    assert facts['settings']['expected_instances'] == ['cynic-1', 'cynic-2']
    # what the role read on each host through delegate_to
    assert facts['health']['app1']['all_healthy'] and facts['health']['app1']['instance_ids'] == ['cynic-1', 'cynic-2']
    assert facts['storage']['judgments_checked'] == len(cluster.judgments) > 0
    assert facts['journals']['app1']['lines_after'] == len(cluster.judgments)
    assert facts['cluster_run']['q_vs_rest']['texts_compared'] > 0
    assert facts['single_run']['instances'] == {'cynic-1': facts['single_run']['ok']}
    assert (tmp_path / 'reports' / 'stress-report.md').read_text().startswith('<!--')


def test_a_lost_judgment_fails_the_play_after_the_report(stress, tmp_path):
    rc, output, facts, dummy = stress(1)
    failed = [item['key'] for item in facts['checklist'] if not item['passed']]
    assert failed == ['no_data_loss'], facts['checklist']
    assert rc != 0 and '1 item(s) of the checklist FAILED' in ' '.join(output.split()), failure_summary(output)
    assert 'No data loss: FAIL' in (tmp_path / 'reports' / 'stress-report.md').read_text()
