# -*- coding: utf-8 -*-
# Copyright: (c) 2026, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The playbook settings renamed from cynic_* names (issue 15): the old name fails at once naming the
new one, before any cluster host is touched; the new name passes the check and is the one the play uses.

The playbooks run for real (ansible-playbook, not --syntax-check) against small inventories: one whose
cluster host cannot be reached (a check that came too late would show UNREACHABLE, not its message),
and one whose groups are empty (the check passes and every later play matches no host).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PLAYBOOKS = os.path.join(REPO_ROOT, 'playbooks')
GROUPS = ('cynic_lb', 'cynic_db', 'cynic_llm', 'cynic_app')

# (playbook, old name, new name, a good value)
RENAMED = [
    ('site.yml', 'cynic_app_serial', 'site_app_serial', '2'),
    ('rolling_update.yml', 'cynic_rolling_force', 'rolling_update_force', 'true'),
    ('teardown.yml', 'cynic_teardown_purge_data', 'teardown_purge_data', 'true'),
]


@pytest.fixture(scope='module')
def collections(tmp_path_factory):
    """A collections path holding this checkout as cynic.cluster, for the playbooks' roles."""
    top = tmp_path_factory.mktemp('collections')
    (top / 'ansible_collections' / 'cynic').mkdir(parents=True)
    (top / 'ansible_collections' / 'cynic' / 'cluster').symlink_to(REPO_ROOT)
    return str(top)


@pytest.fixture
def play(tmp_path, collections):
    """``play(playbook, host_vars=None, *extra) -> CompletedProcess``. With host_vars (a dict) the
    inventory holds one host, in every cluster group, that nothing can connect to; without, the groups
    are empty."""
    def run(playbook, host_vars=None, *extra):
        hosts = {} if host_vars is None else {
            'app1': dict({'ansible_connection': 'ssh', 'ansible_host': '127.0.0.1', 'ansible_port': 1}, **host_vars)}
        inventory = {'all': {'children': {group: {'hosts': hosts} for group in GROUPS}}}
        (tmp_path / 'inventory.yml').write_text(json.dumps(inventory))  # JSON is YAML
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_NOCOLOR='1',
                   ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_TIMEOUT='5')
        return subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'),
             '-i', str(tmp_path / 'inventory.yml'), *extra, os.path.join(PLAYBOOKS, playbook)],
            capture_output=True, text=True, cwd=tmp_path, env=env, check=False, timeout=300)
    return run


def plays(playbook):
    with open(os.path.join(PLAYBOOKS, playbook), encoding='utf-8') as handle:
        return yaml.safe_load(handle)


def refused(result, old, new):
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert '%s was renamed %s' % (old, new) in out, out[-3000:]
    # Refused on the controller, before the first cluster play reached the host.
    assert 'UNREACHABLE' not in out and 'app1' not in result.stdout.split('PLAY RECAP')[-1], out[-3000:]


@pytest.mark.parametrize(('playbook', 'old', 'new', 'value'), RENAMED)
def test_the_old_name_given_with_e_is_refused(play, playbook, old, new, value):
    refused(play(playbook, {}, '-e', '%s=%s' % (old, value)), old, new)


@pytest.mark.parametrize(('playbook', 'old', 'new', 'value'), RENAMED)
def test_the_old_name_set_in_the_inventory_is_refused(play, playbook, old, new, value):
    result = play(playbook, {old: value})
    refused(result, old, new)
    assert 'in the inventory of app1' in result.stdout, result.stdout[-3000:]


@pytest.mark.parametrize(('playbook', 'old', 'new', 'value'), RENAMED)
def test_the_new_name_is_accepted(play, playbook, old, new, value):
    result = play(playbook, None, '-e', '%s=%s' % (new, value))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert re.search(r'localhost\s+: ok=2\s', result.stdout), result.stdout[-3000:]  # both checks ran


@pytest.mark.parametrize('playbook', [playbook for playbook, _old, _new, _value in RENAMED])
def test_without_any_setting_the_checks_pass(play, playbook):
    # The default path: ansible-core 2.19 templates fail_msg even when the assertion holds, so a message
    # naming an unset setting fails the run though nothing is wrong.
    result = play(playbook, None)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert re.search(r'localhost\s+: ok=2\s', result.stdout), result.stdout[-3000:]


@pytest.mark.parametrize(('playbook', 'setting', 'value', 'message'), [
    ('site.yml', 'site_app_serial', '0', 'site_app_serial must be a number of hosts'),
    ('site.yml', 'site_app_serial', 'two', 'site_app_serial must be a number of hosts'),
    ('rolling_update.yml', 'rolling_update_force', 'maybe', 'rolling_update_force must be true or false, got maybe'),
    ('teardown.yml', 'teardown_purge_data', 'ture', 'teardown_purge_data must be true or false, got ture'),
])
def test_a_bad_value_is_refused_before_any_host(play, playbook, setting, value, message):
    result = play(playbook, {}, '-e', '%s=%s' % (setting, value))
    assert result.returncode != 0 and message in result.stdout, (result.stdout + result.stderr)[-3000:]
    assert 'UNREACHABLE' not in result.stdout, result.stdout[-3000:]


def test_site_app_serial_accepts_a_percentage_and_a_list(play):
    for value in ('50%', '[1, "50%"]'):
        result = play('site.yml', None, '-e', '{"site_app_serial": %s}' % json.dumps(yaml.safe_load(value)))
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def test_the_plays_use_the_new_names():
    for playbook, old, new, _value in RENAMED:
        first, *rest = plays(playbook)
        # The old name only in the first play, the controller's check that refuses it.
        assert first['hosts'] == 'localhost' and old in json.dumps(first) and new in json.dumps(first)
        assert old not in json.dumps(rest) and new in json.dumps(rest), playbook
    cynic = [p for p in plays('site.yml') if p.get('roles') == [{'role': 'cynic.cluster.cynic'}]]
    assert [p['serial'] for p in cynic] == ['{{ site_app_serial | default(1) }}']
    forced = [t for p in plays('rolling_update.yml') for t in p.get('tasks', [])
              if t.get('ansible.builtin.include_role', {}).get('tasks_from') == 'rolling_restart.yml']
    assert [t['when'] for t in forced] == ['rolling_update_force | default(false) | bool']
    purge = [t['vars']['service_teardown_purge_data'] for p in plays('teardown.yml') for t in p.get('tasks', [])
             if 'service_teardown_purge_data' in t.get('vars', {})]
    assert purge == ['{{ teardown_purge_data | default(false) | bool }}'] * 3


def test_the_rolling_drill_runs_the_rolling_update_forced():
    imports = [p for p in plays(os.path.join('drills', 'rolling_update.yml')) if 'ansible.builtin.import_playbook' in p]
    assert [(p['ansible.builtin.import_playbook'], p['vars']) for p in imports] == [
        ('../rolling_update.yml', {'rolling_update_force': True})]
