# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The internal role cynic.cluster._service, run by ansible-playbook against this machine, and the cynic role's
restart path that uses it.

systemd is not running here: ``systemctl`` on the PATH is a stand-in that keeps the units' state in a JSON file and
logs what it was asked to do, answering ``show`` and ``is-enabled`` the way systemd does (a unit it does not hold is
``LoadState=not-found``, as for a unit not installed yet). The module under test is the real
ansible.builtin.systemd_service. Unit files are only ever written in --check, so /etc/systemd/system is not touched.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

SYSTEMCTL = '''#!{python}
import json, os, sys
path = os.environ['FAKE_SYSTEMD_STATE']
with open(path) as f:
    units = json.load(f)
args = [a for a in sys.argv[1:] if not a.startswith('-')]
with open(path + '.log', 'a') as log:
    log.write(' '.join(args) + '\\n')
if not args or args[0] == 'daemon-reload':
    sys.exit(0)
cmd, unit = args[0], (args[1:] or [''])[0]
u = units.get(unit)
if cmd == 'show':
    print('Id=%s\\nLoadState=%s\\nActiveState=%s' % (unit, 'loaded' if u else 'not-found', u['active'] if u else 'inactive'))
    sys.exit(0)
if u is None:
    print('Unit %s not found.' % unit, file=sys.stderr)
    sys.exit(1 if cmd == 'is-enabled' else 5)
if cmd == 'is-enabled':
    print('enabled' if u['enabled'] else 'disabled')
    sys.exit(0 if u['enabled'] else 1)
u.update({{'start': {{'active': 'active'}}, 'restart': {{'active': 'active'}}, 'reload': {{}},
          'stop': {{'active': 'inactive'}}, 'enable': {{'enabled': True}}, 'disable': {{'enabled': False}}}}[cmd])
with open(path, 'w') as f:
    json.dump(units, f)
'''

ACTIONS = ('daemon-reload', 'start', 'restart', 'reload', 'stop', 'enable', 'disable')


class Host(object):
    """ansible-playbook against this machine, with the stand-in systemctl first on the PATH."""

    def __init__(self, tmp_path, units=None):
        self.dir = tmp_path
        (tmp_path / 'bin').mkdir(exist_ok=True)
        stub = tmp_path / 'bin' / 'systemctl'
        stub.write_text(SYSTEMCTL.format(python=sys.executable))
        stub.chmod(0o755)
        self.state = tmp_path / 'units.json'
        self.state.write_text(json.dumps(units or {}))

    @property
    def units(self):
        return json.loads(self.state.read_text())

    def calls(self):
        """What systemctl was asked to change, in order (its reads, show and is-enabled, left out)."""
        log = self.dir / 'units.json.log'
        lines = log.read_text().splitlines() if log.exists() else []
        return [line for line in lines if line.split(' ')[0] in ACTIONS]

    def play(self, play, extra_vars=None, args=(), expect_failure=False, inventory='app1 ansible_connection=local\n'):
        (self.dir / 'play.yml').write_text(textwrap.dedent(play))
        (self.dir / 'inventory.ini').write_text(inventory)
        (self.dir / 'extra.json').write_text(json.dumps(extra_vars or {}))
        argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', str(self.dir / 'inventory.ini'),
                '-e', '@' + str(self.dir / 'extra.json'), *args, str(self.dir / 'play.yml')]
        env = dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR='1',
                   PATH=str(self.dir / 'bin') + os.pathsep + os.environ['PATH'], FAKE_SYSTEMD_STATE=str(self.state),
                   ANSIBLE_ROLES_PATH=str(self.dir / 'roles'))
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=self.dir, env=env, check=False)
        assert (proc.returncode != 0) == expect_failure, proc.stdout[-4000:] + proc.stderr[-2000:]
        return proc.stdout


def recap(out):
    """{'ok': n, 'changed': n, 'failed': n, ...} of the one host."""
    line = re.search(r'^app1\s+:(.*)$', out, re.M).group(1)
    return {k: int(v) for k, v in re.findall(r'(\w+)=(\d+)', line)}


ENTRY = """
- hosts: app1
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: cynic.cluster._service
        tasks_from: {entry}
"""

START = ENTRY.format(entry='start') + """
      vars:
        _service_units: [cynic-test-a.service]

    - name: Show the registered result
      ansible.builtin.debug:
        msg: "RESULT changed={{ __service_systemd is changed }} failed={{ __service_systemd is failed }}"
"""


@pytest.mark.parametrize('play', [
    "- hosts: app1\n  gather_facts: false\n  roles: [cynic.cluster._service]\n",
    "- hosts: app1\n  gather_facts: false\n  tasks:\n    - ansible.builtin.include_role: {name: cynic.cluster._service}\n",
])
def test_the_role_refuses_to_run_on_its_own(tmp_path, play):
    out = Host(tmp_path).play(play, expect_failure=True)
    text = ' '.join(out.split())
    assert 'cynic.cluster._service is internal to the collection\'s service roles and does nothing on its own. ' \
           'Call one of its entry points with include_role and tasks_from (user, unit, start' in text, out
    assert Host(tmp_path).calls() == []


@pytest.mark.parametrize(('entry', 'extra', 'message'), [
    ('start', {}, 'missing required arguments: _service_units'),
    ('start', {'_service_units': ['cynic-test-a.service']}, None),
    ('user', {'_service_user': 'x'}, 'missing required arguments: _service_group, _service_home'),
    ('unit', {'_service_unit_files': [{'template': 'a.j2'}], '_service_notify': 'h'},
     'missing required arguments: dest found in _service_unit_files'),
    ('ready', {'_service_name': 'x', '_service_ready_targets': [{'url': 'http://127.0.0.1:1/'}],
               '_service_ready_retries': 1, '_service_ready_delay': 0},
     'missing required arguments: unit found in _service_ready_targets'),
    ('ready', {'_service_name': 'x', '_service_ready_targets': [{'url': 'http://127.0.0.1:1/', 'unit': 'x'}],
               '_service_ready_retries': 'many', '_service_ready_delay': 0},
     "argument '_service_ready_retries' is of type str and we were unable to convert to int"),
])
def test_a_wrong_call_is_a_clear_error_before_anything_runs(tmp_path, entry, extra, message):
    host = Host(tmp_path, {'cynic-test-a.service': {'active': 'active', 'enabled': True}})
    if message is None:  # the counter-check: a well-formed call passes
        host.play(ENTRY.format(entry=entry), extra)
        return
    out = host.play(ENTRY.format(entry=entry), extra, expect_failure=True)
    assert 'Validating arguments against arg spec' in out, out[-3000:]
    assert message in ' '.join(out.split()), out[-3000:]
    assert host.calls() == []


def test_a_unit_file_outside_the_systemd_directory_is_refused(tmp_path):
    out = Host(tmp_path).play(ENTRY.format(entry='unit'), {
        '_service_unit_files': [{'template': 'a.j2', 'dest': '/etc/a.service'}], '_service_notify': 'h'},
        expect_failure=True)
    assert '_service: each dest of _service_unit_files must be /etc/systemd/system/UNIT or a drop-in ' \
           '/etc/systemd/system/UNIT.d/NAME.conf (got /etc/a.service).' in ' '.join(out.split()), out[-3000:]


def test_check_mode_plans_the_start_of_a_unit_not_installed_yet(tmp_path):
    host = Host(tmp_path)  # systemd holds no unit at all: a host never deployed
    out = host.play(START, args=['--check'])
    assert 'RESULT changed=True failed=False' in out, out[-3000:]
    assert recap(out)['failed'] == 0 and recap(out)['changed'] == 1, out[-3000:]
    assert host.calls() == []  # check mode: neither a daemon-reload nor a start


def test_outside_check_mode_a_unit_not_installed_is_a_failure(tmp_path):
    host = Host(tmp_path)
    out = host.play(START, expect_failure=True)
    assert 'Could not find the requested service cynic-test-a.service: host' in out, out[-3000:]
    assert 'RESULT' not in out


def test_check_mode_still_fails_on_any_other_error(tmp_path):
    host = Host(tmp_path)
    host.state.write_text('not json: systemctl show fails')  # systemctl itself breaks, the unit is not the reason
    out = host.play(START, args=['--check'], expect_failure=True)
    assert 'Could not find the requested service' not in out, out[-3000:]


def test_start_enables_and_starts_then_changes_nothing(tmp_path):
    host = Host(tmp_path, {'cynic-test-a.service': {'active': 'inactive', 'enabled': False}})
    out = host.play(START)
    assert 'RESULT changed=True failed=False' in out, out[-3000:]
    assert host.calls() == ['daemon-reload', 'enable cynic-test-a.service', 'start cynic-test-a.service']
    assert host.units == {'cynic-test-a.service': {'active': 'active', 'enabled': True}}
    out = host.play(START)
    assert 'RESULT changed=False failed=False' in out and recap(out)['changed'] == 0, out[-3000:]
    assert host.calls()[3:] == ['daemon-reload']


@pytest.mark.parametrize('entry', ['restart', 'reload'])
def test_restart_and_reload(tmp_path, entry):
    units = {'cynic-test-a.service': {'active': 'active', 'enabled': True},
             'cynic-test-b.service': {'active': 'active', 'enabled': True}}
    host = Host(tmp_path, units)
    play = ENTRY.format(entry=entry) + '      vars: {_service_units: [cynic-test-a.service, cynic-test-b.service]}\n'
    out = host.play(play)
    assert recap(out)['changed'] == 1, out[-3000:]
    assert host.calls() == ['daemon-reload', '%s cynic-test-a.service' % entry, '%s cynic-test-b.service' % entry]
    # --check on a host never deployed (a handler notified by a unit file just planned): planned, not failed
    host.state.write_text('{}')
    out = host.play(play, args=['--check'])
    assert recap(out)['failed'] == 0 and recap(out)['changed'] == 1, out[-3000:]


# A role of its own, beside the collection's internal role as the service roles are (roles/_service), with a
# template and a handler written as theirs are.
DEMO_HANDLERS = """---
- name: Restart the demo
  ansible.builtin.include_tasks: "{{ role_path }}/../_service/tasks/restart.yml"
  vars:
    _service_units: [cynic-lifecycle-test.service]
  listen: demo restart
"""

DEMO_TASKS = """---
- name: Write the demo's unit and drop-in
  ansible.builtin.import_role:
    name: cynic.cluster._service
    tasks_from: unit
  vars:
    _service_unit_files:
      - {template: demo.service.j2, dest: /etc/systemd/system/cynic-lifecycle-test.service}
      - {template: demo.conf.j2, dest: /etc/systemd/system/cynic-lifecycle-test.service.d/demo.conf}
    _service_notify: demo restart
"""


def test_unit_files_come_from_the_calling_role_and_notify_its_handler(tmp_path):
    roles = tmp_path / 'roles'
    for sub in ('tasks', 'templates', 'handlers'):
        (roles / 'demo' / sub).mkdir(parents=True)
    (roles / '_service').symlink_to(os.path.join(REPO_ROOT, 'roles', '_service'))
    (roles / 'demo' / 'tasks' / 'main.yml').write_text(DEMO_TASKS)
    (roles / 'demo' / 'handlers' / 'main.yml').write_text(DEMO_HANDLERS)
    (roles / 'demo' / 'templates' / 'demo.service.j2').write_text('[Service]\nExecStart=/bin/true {{ demo_word }}\n')
    (roles / 'demo' / 'templates' / 'demo.conf.j2').write_text('[Service]\nNice={{ demo_nice }}\n')
    host = Host(tmp_path)
    play = "- hosts: app1\n  gather_facts: false\n  vars: {demo_word: hello, demo_nice: 5}\n  roles: [demo]\n"
    out = host.play(play, args=['--check', '--diff'])
    assert '+ExecStart=/bin/true hello' in out and '+Nice=5' in out, out[-4000:]
    assert 'RUNNING HANDLER [demo : Restart the demo]' in out, out[-4000:]
    handler = out.split('RUNNING HANDLER [demo : Make the units restarted]', 1)[1]
    assert 'changed: [app1] => (item=cynic-lifecycle-test.service)' in handler, out[-4000:]
    assert recap(out)['failed'] == 0
    assert not os.path.exists('/etc/systemd/system/cynic-lifecycle-test.service')
    assert not os.path.exists('/etc/systemd/system/cynic-lifecycle-test.service.d')


READY = ENTRY.format(entry='ready') + """
      vars:
        _service_name: demo
        _service_ready_targets: {targets}
        _service_ready_json: {{status: alive}}
        _service_ready_retries: 2
        _service_ready_delay: 0
"""


def _health(body, status=200):
    async def handler(server, request):  # pylint: disable=unused-argument
        from aiohttp import web
        return web.json_response(body, status=status)
    return handler


def test_the_readiness_gate_waits_for_status_and_json_and_names_what_is_not_ready(tmp_path, http_server, closed_port):
    alive = http_server([('GET', '/health', _health({'status': 'alive'}))])
    waking = http_server([('GET', '/health', _health({'status': 'waking'}))])
    host = Host(tmp_path)
    ok = [{'url': '%s/health' % alive.url, 'unit': 'demo-a.service'}]
    host.play(READY.format(targets=json.dumps(ok)))
    targets = ok + [{'url': 'http://127.0.0.1:%d/health' % closed_port, 'unit': 'demo-b.service', 'label': 'demo B'},
                    {'url': '%s/health' % waking.url, 'unit': 'demo-c.service'}]
    out = host.play(READY.format(targets=json.dumps(targets)), expect_failure=True)
    text = ' '.join(out.split())
    assert 'demo: demo B, demo-c.service on app1 did not become ready in 2 polls 0 s apart, wanting status 200 ' \
           'and JSON {"status": "alive"}. Last answers: demo B at http://127.0.0.1:%d/health: status -1' % closed_port \
           in text, out[-3000:]
    assert 'demo-c.service at %s/health: status 200' % waking.url in text
    assert 'journalctl -u demo-b.service -n 30:' in text and 'journalctl -u demo-c.service -n 30:' in text
    assert 'journalctl -u demo-a.service' not in text
    # In check mode nothing was started: nothing to wait for.
    out = host.play(READY.format(targets=json.dumps(targets)), args=['--check'])
    assert recap(out)['failed'] == 0


# The cynic role's run step with three instances: 1 and 2 deployed and running, 3 new (its unit is the template
# cynic@.service, loaded but never started). Each instance answers /health as itself.
RUN = """
- hosts: app1
  gather_facts: false
  tasks:
    - name: A change of code or shared settings (in the role, install.yml or configure.yml)
      ansible.builtin.debug:
        msg: shared change
      changed_when: true
      notify: cynic.cluster.cynic rolling restart
      when: shared_change

    - ansible.builtin.import_role:
        name: cynic.cluster.cynic
        tasks_from: run.yml

    - name: Restart every instance in turn (forced), as playbooks/rolling_update.yml does
      ansible.builtin.include_role:
        name: cynic.cluster.cynic
        tasks_from: rolling_restart.yml
      when: forced
"""

DEPLOYED = {'cynic@1.service': {'active': 'active', 'enabled': True},
            'cynic@2.service': {'active': 'active', 'enabled': True},
            'cynic@3.service': {'active': 'inactive', 'enabled': False}}


@pytest.fixture
def instances(http_server):
    return [{'id': i, 'port': http_server([('GET', '/health', _health({'instance_id': 'app1-%d' % i}))]).port}
            for i in (1, 2, 3)]


def run_vars(instances, shared_change=False, own=(), forced=False):
    return {'cynic_instances': instances, 'cynic_rolling_pause': 0, 'cynic_ready_delay': 0,
            'shared_change': shared_change, 'forced': forced,
            # what configure.yml registers for the instances' own environment files
            '__cynic_instance_env': {'results': [{'item': i, 'changed': i['id'] in own} for i in instances]}}


def events(out):
    """[(task, [items])] of the restarts and readiness waits, in the order they ran (tasks and handlers alike)."""
    found = []
    for head, body in re.findall(r'^(?:TASK|RUNNING HANDLER) \[cynic.cluster.cynic : ([^\]]*)\] \**\n(.*?)(?=^\S*(?:TASK|RUNNING|PLAY))',
                                 out, re.S | re.M):
        if head in ('Make the units restarted', 'Wait until each answers ready'):
            found.append((head.split()[-1], re.findall(r'^(?:ok|changed): \[app1\] => \(item=([^)]*)\)', body, re.M)))
    return found


@pytest.mark.parametrize(('shared_change', 'own', 'forced', 'in_run', 'forced_roll'), [
    (False, (), False, [], []),
    (False, (2,), False, [2], []),  # its own settings: that instance alone
    (True, (), False, [1, 2], []),  # shared: every instance in turn, except 3, which has just started
    (True, (2,), False, [1, 2], []),  # both: in order, and 2 only once
    (False, (), True, [], [1, 2]),  # forced, as today: the instance just started is not restarted again
    (True, (), True, [1, 2], []),  # forced after a rolling restart in the same run: none twice
])
def test_the_cynic_instances_restart_by_one_path(tmp_path, instances, shared_change, own, forced, in_run, forced_roll):
    host = Host(tmp_path, DEPLOYED)
    out = host.play(RUN, run_vars(instances, shared_change, own, forced))
    calls = host.calls()
    assert [c for c in calls if c.split(' ')[0] not in ('restart', 'daemon-reload')] == \
        ['enable cynic@3.service', 'start cynic@3.service'], calls
    assert [c for c in calls if c.startswith('restart ')] == \
        ['restart cynic@%d.service' % i for i in in_run + forced_roll], calls

    # each restarted instance is ready again before the next one goes; then the role waits for all of them
    def rolled(ids):
        return [e for i in ids for e in (('restarted', ['cynic@%d.service' % i]), ('ready', ['cynic@%d' % i]))]
    assert events(out) == rolled(in_run) + [('ready', ['cynic@1', 'cynic@2', 'cynic@3'])] + rolled(forced_roll), out
    assert recap(out)['failed'] == 0


def test_check_mode_on_a_host_never_deployed_plans_the_starts_and_no_restart(tmp_path, instances):
    host = Host(tmp_path)  # no unit installed
    out = host.play(RUN, run_vars(instances, shared_change=True, own=(1, 2, 3)), args=['--check'])
    assert recap(out)['failed'] == 0, out[-3000:]
    assert host.calls() == []
    assert 'restart_instance.yml' not in out  # every instance is a start to come, none a restart
    for i in (1, 2, 3):
        assert 'changed: [app1] => (item=cynic@%d.service)' % i in out
