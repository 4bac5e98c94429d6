# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The unit_not_installed test. End to end, the molecule scenarios' first step is `--check` on fresh
containers, where every service task meets a unit that is not installed yet."""

from __future__ import annotations

import pytest
from ansible.module_utils.service import fail_if_missing

# pylint: disable=wrong-import-position
# The module, not its TestModule class: pytest would collect a class named Test* as tests.
from ansible_collections.cynic.cluster.plugins.test import unit_not_installed as plugin

unit_not_installed = plugin.unit_not_installed


class _FailingModule:
    """Just enough of AnsibleModule to capture what fail_json is given."""

    def fail_json(self, **result):
        raise _Failed(result)


class _Failed(Exception):
    def __init__(self, result):
        super().__init__(result)
        self.result = {'failed': True, 'changed': False, **result}


def _systemd_service_result_for_a_missing_unit(unit):
    # The very call systemd_service makes before it starts, restarts or reloads a unit.
    with pytest.raises(_Failed) as failure:
        fail_if_missing(_FailingModule(), False, unit, msg='host')
    return failure.value.result


def test_a_missing_unit_as_ansible_core_reports_it_is_recognised():
    assert unit_not_installed(_systemd_service_result_for_a_missing_unit('surrealdb.service'))


@pytest.mark.parametrize('result', [
    {'changed': True, 'status': {'ActiveState': 'active'}},  # success
    {'failed': True, 'msg': 'Unable to start service surrealdb.service: Job failed'},  # a real failure
    {'failed': True, 'msg': "Error loading unit file 'cynic@.service': bad setting"},
    {'failed': False, 'msg': 'Could not find the requested service x: host'},  # not a failure at all
    {'skipped': True},
    'not a result',
    None,
])
def test_anything_else_is_not(result):
    assert unit_not_installed(result) is False


def test_the_plugin_registers_its_name():
    assert plugin.TestModule().tests() == {'unit_not_installed': unit_not_installed}
