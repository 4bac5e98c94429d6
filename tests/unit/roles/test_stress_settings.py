# -*- coding: utf-8 -*-
# Copyright: (c) 2026, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The stress role's settings: argument specs that match the defaults, the former playbook's
cynic_stress_* names refused with their successor's, bad values and inventories refused before
anything runs, check mode that plans and sends nothing (playbooks/stress.yml on this machine, every
host local, no cluster), and `--tags loadgen` selecting the load generator's virtualenv alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ROLE = os.path.join(REPO_ROOT, 'roles', 'stress')
PLAYBOOK = os.path.join(REPO_ROOT, 'playbooks', 'stress.yml')
VENV = os.path.dirname(os.path.dirname(sys.executable))
INVENTORY = """
all:
  vars: {{ansible_connection: local, surrealdb_root_password: pw, cynic_home: "{home}"}}
  hosts:
    lb1: {{}}
    app1: {{cynic_instance_id_prefix: cynic-, cynic_instances: [{{id: 1, port: {port}}}]}}
    db1: {{surrealdb_bind_address: "127.0.0.1:{port}"}}
  children:
    cynic_lb: {{hosts: {{lb1: {{}}}}}}
    cynic_app: {{hosts: {{app1: {{}}}}}}
    cynic_db: {{hosts: {{db1: {{}}}}}}
"""
FORMER = ['rate', 'duration', 'warmup', 'single', 'single_duration', 'repeat_share', 'rest_rate', 'max_q_shift',
          'corpus_file', 'min_rate_ratio', 'max_error_rate', 'min_instance_share', 'max_p99_ms', 'max_in_flight',
          'timeout', 'url', 'report_dir']


def _load(*parts):
    with open(os.path.join(ROLE, *parts), encoding='utf-8') as f:
        return yaml.safe_load(f)


def test_every_setting_has_a_spec_with_the_default_of_defaults_main():
    defaults = _load('defaults', 'main.yml')
    specs = _load('meta', 'argument_specs.yml')['argument_specs']['main']['options']
    assert set(specs) == set(defaults)
    assert {name: spec.get('default') for name, spec in specs.items()} == defaults
    assert all(name.startswith('stress_') for name in defaults)
    # every setting of the former playbook has its successor
    assert {'stress_' + name for name in FORMER} <= set(defaults)


@pytest.fixture
def stress(tmp_path, closed_port):
    """stress(*args) -> (rc, output) of playbooks/stress.yml against local hosts; instances and
    SurrealDB on a port that refuses connections."""
    (tmp_path / 'inventory.yml').write_text(INVENTORY.format(home=tmp_path / 'home', port=closed_port))
    playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    env = dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR='1')

    def run(*args, inventory=None):
        if inventory is not None:
            (tmp_path / 'inventory.yml').write_text(inventory)
        proc = subprocess.run([playbook, '-i', str(tmp_path / 'inventory.yml'), PLAYBOOK, '-e', 'ansible_become=false',
                               '-e', 'stress_report_dir=%s' % (tmp_path / 'reports'), *args],
                              capture_output=True, text=True, cwd=tmp_path, env=env, check=False, timeout=300)
        return proc.returncode, ' '.join((proc.stdout + proc.stderr).split())

    return run


def test_a_former_setting_fails_naming_its_successor(stress):
    rc, output = stress('--check', '-e', 'cynic_stress_rate=300', '-e', 'cynic_stress_report_dir=/tmp')
    assert rc != 0
    assert 'stress_rate (was cynic_stress_rate), stress_report_dir (was cynic_stress_report_dir)' in output, output[-3000:]
    assert 'Show the plan' not in output  # refused first


@pytest.mark.parametrize('setting', ['stress_rate=0', 'stress_max_error_rate=1', 'stress_min_instance_share=1.5',
                                     'stress_repeat_share=-0.1', 'stress_timeout=0', 'stress_max_p99_ms=0'])
def test_a_bad_value_fails_before_anything_runs(stress, setting):
    rc, output = stress('--check', '-e', setting)
    assert rc != 0
    assert 'the rates, the durations, stress_max_in_flight and stress_timeout must be positive numbers' in output, (
        output[-3000:])
    assert 'Install the load generator' not in output and 'loadgen :' not in output.replace(
        "loadgen : Validating arguments", '')


def test_a_value_of_the_wrong_type_fails_the_argument_spec(stress):
    rc, output = stress('--check', '-e', 'stress_rate=fast')
    assert rc != 0 and 'stress_rate' in output and 'float' in output, output[-3000:]


def test_an_inventory_without_a_load_balancer_host_fails(stress):
    rc, output = stress('--check', inventory='all: {hosts: {app1: {}}, children: {cynic_app: {hosts: {app1: {}}}}}')
    assert rc != 0 and 'the inventory needs a host in cynic_lb' in output, output[-3000:]


def test_an_inventory_without_app_hosts_fails(stress):
    rc, output = stress('--check', inventory='all: {vars: {ansible_connection: local}, children: '
                                             '{cynic_lb: {hosts: {lb1: {}}}, cynic_db: {hosts: {db1: {}}}}}')
    assert rc != 0 and 'the inventory needs a host in cynic_db and hosts in cynic_app' in output, output[-3000:]


def test_check_mode_plans_and_sends_nothing(stress, tmp_path):
    """The whole role in check mode, every host this machine, the load generator's virtualenv this
    one (--skip-tags loadgen): it plans, reads health and storage (nothing answers), writes nothing."""
    rc, output = stress('--check', '--skip-tags', 'loadgen', '-e', 'loadgen_venv_path=%s' % VENV,
                        '-e', 'stress_duration=5')
    assert rc == 0, output[-3000:]
    assert 'Check mode: planned 750 requests (+750 warm-up)' in output, output[-3000:]
    assert 'nothing was sent and no report was written' in output
    assert not (tmp_path / 'reports').exists()


def test_tags_loadgen_selects_the_virtualenv_alone():
    """scripts/bench*.py install the load generator with `playbooks/stress.yml --tags loadgen`."""
    playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    proc = subprocess.run([playbook, '-i', os.path.join(REPO_ROOT, 'inventories', 'example'), PLAYBOOK,
                           '--list-tasks', '--tags', 'loadgen'], capture_output=True, text=True, check=True)
    tasks = [line.strip() for line in proc.stdout.splitlines() if 'TAGS:' in line]
    assert any(line.startswith("Install the load generator's virtualenv from wheels") for line in tasks), proc.stdout
    assert any(line.startswith('cynic.cluster.loadgen : Check that the virtualenv') for line in tasks), proc.stdout
    stress = [line for line in tasks if line.startswith('cynic.cluster.stress :')]
    validation = "cynic.cluster.stress : Validating arguments against arg spec 'main'"
    assert [line.split(' - ')[0] for line in stress] == [validation], proc.stdout
