# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""wheel_venv's controller download (the production path: no wheelhouse given), run for real by
ansible-playbook on this machine against its package index."""

from __future__ import annotations

import json
import os
import platform
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PLAYBOOK = """
- hosts: all
  gather_facts: true
  tasks:
    - ansible.builtin.include_role:
        name: cynic.cluster.wheel_venv
        tasks_from: download.yml
      vars:
        wheel_venv_path: /opt/example/venv
        wheel_venv_packages: [orjson]
        wheel_venv_download: [orjson]
        wheel_venv_cache_dir: {cache}
    - ansible.builtin.copy:
        content: "{{{{ __wheel_venv_download.cmd | to_json }}}}"
        dest: {out}
"""


def test_wheels_are_fetched_for_the_hosts_linux_platform_not_the_controllers(tmp_path, run_playbook):
    out = tmp_path / 'argv.json'
    run_playbook(PLAYBOOK.format(cache=tmp_path / 'cache', out=out))
    argv = json.loads(out.read_text())
    arch = platform.machine()
    # pip does not widen a manylinux tag by itself: every glibc level is named
    for tag in ('manylinux_2_17', 'manylinux_2_28', 'manylinux_2_36', 'manylinux2014'):
        assert '--platform=%s_%s' % (tag, arch) in argv, argv
    assert '--python-version' in argv and '--only-binary=:all:' in argv
    wheels = os.listdir(tmp_path / 'cache' / ('wheels_opt_example_venv-py%d.%d' % sys.version_info[:2]))
    assert len(wheels) == 1 and wheels[0].startswith('orjson-'), wheels
    assert 'manylinux' in wheels[0] and wheels[0].endswith('_%s.whl' % arch), wheels
