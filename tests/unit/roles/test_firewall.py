# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The firewall role's ruleset, rendered by ansible-playbook from the role's own template, defaults and vars for a
sample cluster (lb; data in cynic_db and cynic_llm; app1 and app2, one of them an IPv6-only peer; a monitor host),
its peers' addresses handed to Ansible as facts. Checked three ways: each group's rule holds exactly the expected
sources; the role itself does nothing when off and stops before any change when a peer has no facts; and, in
throwaway Debian 12 and 13 containers (docker, NET_ADMIN), nftables accepts and loads the rendered file, leaves
another tool's table alone, and a second container on the same network reaches the allowed ports while the others
drop its packets (a timeout, not a refusal)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import uuid

import pytest
import yaml

# pylint: disable=wrong-import-position
from ansible_collections.cynic.cluster.plugins.filter.firewall_rules import ROLE_DEFAULTS

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ROLE = os.path.join(REPO_ROOT, 'roles', 'firewall')
IMAGES = ['cynic-lab/debian12:latest', 'cynic-lab/debian13:latest']
ANY = {'ip': {'0.0.0.0/0'}, 'ip6': {'::/0'}}

# Facts reach Ansible the way setup's do, through an action's ansible_facts, so that the role reads them as
# ansible_facts of each peer.
FACTS_ACTION = '''
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        return {'changed': False, 'ansible_facts': self._task.args['facts']}
'''

# The role's defaults and vars are play vars (vars_files), as role defaults they are not host variables: a
# peer's firewall_address comes from the inventory only, as in the role.
RENDER = """
- hosts: all
  gather_facts: false
  vars_files: ["{role}/defaults/main.yml", "{role}/vars/main.yml"]
  tasks:
    - test_facts: {{facts: "{{{{ test_facts }}}}"}}
      when: test_facts is defined
    - ansible.builtin.template: {{src: "{role}/templates/cynic-cluster.nft.j2", dest: "{out}/{{{{ inventory_hostname }}}}.nft", mode: "0644"}}
      when: inventory_hostname in render_hosts
"""

EXTRA_RULES = [{'ports': [9180, '60000-60010'], 'proto': 'udp', 'sources': ['cynic_monitor', '192.0.2.7'], 'comment': 'mosh'}]


def inventory(addr):
    """The sample cluster; addr gives each host's addresses (the server and client containers' in the live test)."""
    def host(name, **hostvars):
        v4 = [a for a in addr[name] if ':' not in a]
        v6 = [a for a in addr[name] if ':' in a]
        return dict(hostvars, test_facts={'all_ipv4_addresses': v4, 'all_ipv6_addresses': v6 + ['fe80::99']})

    return {'all': {
        'vars': {'ansible_connection': 'local'},
        'children': {
            # HTTPS on (a certificate and its key): nginx listens on nginx_lb_https_port as well, 443 by default.
            'cynic_lb': {'hosts': {'lb': host('lb', nginx_lb_tls_certificate='lb.crt', nginx_lb_tls_key='lb.key')}},
            # SurrealDB on the private address, Ollama on every interface (IPv6 form): both open to the app hosts.
            'cynic_db': {'hosts': {'data': host('data', surrealdb_bind_address='%s:8000' % addr['data'][0],
                                                ollama_host='[::]:11434')}},
            'cynic_llm': {'hosts': {'data': {}}},
            'cynic_app': {'hosts': {
                'app1': host('app1', cynic_bind_address='0.0.0.0',
                             cynic_instances=[{'id': 1, 'port': 8001, 'side_ports': [9100]}, {'id': 2, 'port': 8002}]),
                'app2': host('app2', cynic_bind_address='::'),  # the cynic role's three default instances
            }},
            # No facts: its firewall_address is all there is.
            'cynic_monitor': {'hosts': {'mon1': {'firewall_address': ['10.9.0.0/24']}}},
        },
    }}


STATIC = {'lb': ['10.0.0.10', 'fd00::10'], 'data': ['10.0.0.11'], 'app1': ['10.0.0.21'], 'app2': ['fd00::22']}


def ansible_playbook(workdir, play, inv, extra_vars=None, args=(), expect_failure=False):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / 'action_plugins').mkdir(exist_ok=True)
    (workdir / 'action_plugins' / 'test_facts.py').write_text(FACTS_ACTION)
    (workdir / 'play.yml').write_text(play)
    (workdir / 'inventory.yml').write_text(json.dumps(inv))
    (workdir / 'extra.json').write_text(json.dumps(extra_vars or {}))
    argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', str(workdir / 'inventory.yml'),
            '-e', '@' + str(workdir / 'extra.json'), *args, str(workdir / 'play.yml')]
    env = dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR='1')
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=workdir, env=env, check=False)
    assert (proc.returncode != 0) == expect_failure, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout


def render(workdir, addr, hosts):
    out = workdir / 'out'
    out.mkdir(parents=True, exist_ok=True)
    ansible_playbook(workdir, RENDER.format(role=ROLE, out=out), inventory(addr),
                     {'render_hosts': hosts, 'firewall_extra_rules': EXTRA_RULES})
    return {h: (out / ('%s.nft' % h)).read_text() for h in hosts}


_RULE = re.compile(r'^\s*(?:(?P<family>ip6?) saddr \{ (?P<sources>[^}]*) \} |meta nfproto (?P<nfproto>ipv[46]) )?'
                   r'(?P<proto>tcp|udp) dport \{ (?P<ports>[^}]*) \} accept comment "(?P<name>[^"]+)"$')


def accepted(text):
    """{rule name: {'proto', 'ports', 'ip': sources, 'ip6': sources}} from the rendered accept lines."""
    out = {}
    for line in text.splitlines():
        m = _RULE.match(line)
        if m is None:
            continue
        rule = out.setdefault(m['name'], {'proto': m['proto'], 'ports': m['ports'], 'ip': set(), 'ip6': set()})
        assert (rule['proto'], rule['ports']) == (m['proto'], m['ports']), line  # one port set per rule
        if m['family']:
            rule[m['family']] |= set(m['sources'].split(', '))
        elif m['nfproto']:
            rule['ip' if m['nfproto'] == 'ipv4' else 'ip6'] |= ANY['ip' if m['nfproto'] == 'ipv4' else 'ip6']
        else:
            rule['ip'] |= ANY['ip']
            rule['ip6'] |= ANY['ip6']
    return out


@pytest.fixture(scope='module')
def rendered(tmp_path_factory):
    return render(tmp_path_factory.mktemp('firewall-render'), STATIC, ['lb', 'data', 'app1', 'app2'])


def rule(ports, ip=(), ip6=(), proto='tcp'):
    return {'proto': proto, 'ports': ports, 'ip': set(ip), 'ip6': set(ip6)}


SSH = rule('22', ['0.0.0.0/0'], ['::/0'])
EXTRA = rule('9180, 60000-60010', ['10.9.0.0/24', '192.0.2.7'], proto='udp')


def test_each_groups_rule_holds_exactly_the_expected_sources(rendered):
    app_sources = {'ip': {'10.0.0.21'}, 'ip6': {'fd00::22'}}  # app1 (IPv4) and app2 (IPv6 only)
    assert accepted(rendered['lb']) == {'ssh': SSH, 'cynic_lb': rule('80, 443', ['0.0.0.0/0'], ['::/0']), 'extra 0': EXTRA}
    assert accepted(rendered['data']) == {
        'ssh': SSH,
        'cynic_db': rule('8000', app_sources['ip'] | {'10.9.0.0/24'}, app_sources['ip6']),  # + the monitor host
        'cynic_llm': rule('11434', app_sources['ip'], app_sources['ip6']),
        'extra 0': EXTRA,
    }
    # The load balancer (both families, not its link-local address) and the monitor host, nobody else.
    lb_sources = (['10.0.0.10', '10.9.0.0/24'], ['fd00::10'])
    assert accepted(rendered['app1']) == {'ssh': SSH, 'cynic_app': rule('8001-8002, 9100', *lb_sources), 'extra 0': EXTRA}
    assert accepted(rendered['app2']) == {'ssh': SSH, 'cynic_app': rule('8001-8003', *lb_sources), 'extra 0': EXTRA}


def test_the_ruleset_replaces_its_own_table_only_and_drops_the_rest(rendered):
    for text in rendered.values():
        assert text.startswith('#\n# Ansible managed\n')  # no shebang: the unit loads it with nft -f
        assert 'flush ruleset' not in text
        statements = [line for line in text.splitlines() if line and not line.startswith('#')]
        assert statements[:3] == ['table inet cynic_cluster', 'delete table inet cynic_cluster', 'table inet cynic_cluster {']
        assert '        type filter hook input priority filter; policy drop;' in statements
        for base in ('iif "lo" accept', 'ct state established,related accept', 'meta l4proto { 1, 58 } accept'):
            assert any(line.strip().startswith(base) for line in statements), base


def test_the_other_roles_defaults_are_the_filters():
    def defaults(role):
        return yaml.safe_load(open(os.path.join(REPO_ROOT, 'roles', role, 'defaults', 'main.yml')))

    nginx_lb, surrealdb, ollama, cynic = (defaults(r) for r in ('nginx_lb', 'surrealdb', 'ollama', 'cynic'))
    assert ROLE_DEFAULTS == {
        'nginx_lb_listen_port': nginx_lb['nginx_lb_listen_port'],
        'nginx_lb_https_port': nginx_lb.get('nginx_lb_https_port', 443),
        'nginx_lb_tls_certificate': nginx_lb.get('nginx_lb_tls_certificate', ''),
        'nginx_lb_tls_key': nginx_lb.get('nginx_lb_tls_key', ''),
        'surrealdb_bind_address': surrealdb['surrealdb_bind_address'],
        'ollama_host': ollama['ollama_host'],
        'cynic_bind_address': cynic['cynic_bind_address'],
        'cynic_instances': cynic['cynic_instances'],
        'cynic_side_port_offsets': cynic['cynic_side_port_offsets'],
    }


ROLE_PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - test_facts: {facts: "{{ test_facts }}"}
      when: test_facts is defined
- hosts: data
  gather_facts: false
  roles:
    - role: cynic.cluster.firewall
"""


def test_off_the_role_does_nothing(tmp_path):
    # --check as well: whatever happens, the controller running the tests is not changed.
    out = ansible_playbook(tmp_path, ROLE_PLAY, inventory(STATIC), args=['--check'])
    recap = re.search(r'^data\s+: ok=(\d+)\s+changed=(\d+)', out, re.MULTILINE)
    assert recap.groups() == ('2', '0'), out  # the facts and the argument check, nothing of the role's own
    assert 'Install nftables' in out and 'skipping: [data]' in out


def test_a_peer_without_facts_stops_the_role_before_any_change_naming_it(tmp_path):
    inv = inventory(STATIC)
    del inv['all']['children']['cynic_app']['hosts']['app2']['test_facts']
    out = ansible_playbook(tmp_path, ROLE_PLAY, inv, {'firewall_enabled': True}, args=['--check'], expect_failure=True)
    assert 'host app2 (a cynic_app host, client of SurrealDB on data) has no facts' in out, out[-3000:]
    assert 'TASK [cynic.cluster.firewall : Install nftables' not in out


# --- nftables for real, in containers -----------------------------------------------------------------------

PORTS = [80, 8000, 8001, 9999, 11434]  # a server listens on each, whatever the ruleset opens

PROBE = textwrap.dedent('''
    import json, socket, sys, threading
    out = {}
    def probe(addr, port):
        try:
            socket.create_connection((addr, port), timeout=2).close()
            out['%s %d' % (addr, port)] = 'open'
        except socket.timeout:
            out['%s %d' % (addr, port)] = 'dropped'
        except OSError as exc:
            out['%s %d' % (addr, port)] = type(exc).__name__
    threads = [threading.Thread(target=probe, args=(a, int(p))) for a, p in (t.rsplit(' ', 1) for t in sys.argv[1:])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(out))
''')


def docker(*args, check=True, timeout=120):
    proc = subprocess.run(['docker', *args], capture_output=True, text=True, check=False, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError('docker %s: %s%s' % (' '.join(args), proc.stdout, proc.stderr))
    return proc


def docker_skip_reason(image):
    if shutil.which('docker') is None:
        return 'docker is not installed'
    if docker('info', check=False, timeout=30).returncode != 0:
        return 'docker is not running (docker info fails)'
    if docker('image', 'inspect', image, check=False).returncode != 0:
        return 'image %s is not built (make image)' % image
    return None


class Lab(object):
    """A server container (NET_ADMIN, nftables, a listener on each of PORTS) and a client container on a network
    of their own, IPv6 too when docker can."""

    def __init__(self, image, workdir):
        self.image = image
        self.workdir = workdir
        tag = '%s-%s' % (image.split('/')[-1].split(':')[0], uuid.uuid4().hex[:8])
        self.network = 'cynic-fw-test-%s' % tag
        self.server = self.network + '-server'
        self.client = self.network + '-client'
        self.ipv6 = False
        self.addr = {}

    def start(self):
        # A random ULA /64; without IPv6 support in the daemon, an IPv4-only network.
        h = uuid.uuid4().hex
        subnet = 'fd%s:%s:%s::/64' % (h[0:2], h[2:6], h[6:10])
        self.ipv6 = docker('network', 'create', '--ipv6', '--subnet', subnet, self.network, check=False).returncode == 0
        if not self.ipv6:
            docker('network', 'create', self.network)
        for name, caps in ((self.server, ['--cap-add', 'NET_ADMIN']), (self.client, [])):
            docker('run', '-d', '--rm', '--name', name, '--network', self.network, *caps, self.image, 'sleep', 'infinity')
            net = json.loads(docker('inspect', name).stdout)[0]['NetworkSettings']['Networks'][self.network]
            self.addr[name] = [a for a in (net['IPAddress'], net.get('GlobalIPv6Address')) if a]
        self.exec(self.server, 'apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive '
                               'apt-get install -y -q --no-install-recommends nftables >/dev/null', timeout=180)
        for port in PORTS:
            docker('exec', '-d', self.server, 'python3', '-m', 'http.server', '--bind', '::', str(port))
        # Another tool's table, with an accepting input chain of its own: it must survive every load.
        self.exec(self.server, "nft add table ip other_tool && nft add chain ip other_tool input "
                               "'{ type filter hook input priority 10; policy accept; }'")
        self.probe(self.server, ['::1 %d' % p for p in PORTS], expect='open')  # the listeners are up
        return self

    def exec(self, name, script, timeout=60):
        return docker('exec', name, 'bash', '-c', script, timeout=timeout).stdout

    def probe(self, name, targets, expect=None):
        attempts = 50 if expect else 1  # waiting for listeners to come up
        while True:
            attempts -= 1
            result = json.loads(docker('exec', name, 'python3', '-c', PROBE, *targets).stdout)
            if expect is None or set(result.values()) == {expect}:
                return result
            if attempts <= 0:
                raise AssertionError(result)

    def load(self, text):
        """Copy the ruleset in, check it with nft -c, load it; return the kernel's ruleset."""
        path = self.workdir / 'load.nft'
        path.write_text(text)
        docker('cp', str(path), '%s:/etc/cynic-cluster.nft' % self.server)
        self.exec(self.server, 'nft -c -f /etc/cynic-cluster.nft && nft -f /etc/cynic-cluster.nft')
        return self.exec(self.server, 'nft list ruleset')

    def stop(self):
        for name in (self.client, self.server):
            docker('rm', '-f', name, check=False)
        docker('network', 'rm', self.network, check=False)


@pytest.fixture(scope='module', params=IMAGES, ids=['debian12', 'debian13'])
def lab(request, tmp_path_factory):
    reason = docker_skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp('firewall-lab')
    lab = Lab(request.param, workdir)
    try:
        lab.start()
        # The server plays data, lb and app2 in turn; the client is app1, an app host and nothing else.
        addr = dict(STATIC, data=lab.addr[lab.server], app1=lab.addr[lab.client])
        lab.rulesets = render(workdir, addr, ['lb', 'data', 'app2'])
        yield lab
    finally:
        lab.stop()


def targets(lab, *ports):
    return ['%s %d' % (a, p) for a in lab.addr[lab.server] for p in ports]


def test_nftables_loads_the_ruleset_twice_and_keeps_the_other_tables(lab):
    first = lab.load(lab.rulesets['data'])
    again = lab.load(lab.rulesets['data'])  # a reload replaces the table: nothing doubles
    assert first == again
    assert 'table ip other_tool' in again and again.count('table inet cynic_cluster {') == 1
    assert 'policy drop;' in again


def test_the_database_host_answers_an_app_host_on_its_ports_only(lab):
    lab.load(lab.rulesets['data'])
    result = lab.probe(lab.client, targets(lab, 8000, 11434, 8001, 9999, 22))
    for addr in lab.addr[lab.server]:  # IPv4, and IPv6 when docker gives it
        assert [result['%s %d' % (addr, p)] for p in (8000, 11434)] == ['open', 'open'], result
        assert [result['%s %d' % (addr, p)] for p in (8001, 9999)] == ['dropped', 'dropped'], result
        # SSH is open and nothing listens: refused at once, not dropped
        assert result['%s 22' % addr] == 'ConnectionRefusedError', result


def test_the_ports_were_checked_over_ipv6_too(lab):
    if not lab.ipv6:
        pytest.skip('docker gave no IPv6 network (daemon without IPv6): the probes ran over IPv4 only')
    assert len(lab.addr[lab.server]) == len(lab.addr[lab.client]) == 2


def test_an_app_host_answers_the_load_balancer_only(lab):
    lab.load(lab.rulesets['app2'])  # app2's instances: 8001-8003, from lb (10.0.0.10, fd00::10) only
    result = lab.probe(lab.client, targets(lab, 8001, 8000))
    assert set(result.values()) == {'dropped'}, result


def test_the_load_balancer_answers_anyone(lab):
    lab.load(lab.rulesets['lb'])
    result = lab.probe(lab.client, targets(lab, 80, 8001))
    for addr in lab.addr[lab.server]:
        assert (result['%s 80' % addr], result['%s 8001' % addr]) == ('open', 'dropped'), result
