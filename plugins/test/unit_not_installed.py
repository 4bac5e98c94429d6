# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
name: unit_not_installed
short_description: Did a systemd_service task fail only because its unit is not installed?
version_added: 1.0.0
description:
  - True when the result of an M(ansible.builtin.systemd_service) task failed because systemd has no such unit,
    false for any other result.
  - The roles use it for C(--check) on a host that was never deployed, in one place - the internal role
    C(cynic.cluster._service), which starts, restarts and reloads every role's units. There the unit file or the
    package that brings the unit is part of the plan, not yet on the host, so systemd cannot plan the service's
    start. In check mode that failure is a start to come; outside check mode it stays a failure.
  - The teardown uses it to pass over a unit that a host never had.
options:
  _input:
    description: A registered M(ansible.builtin.systemd_service) result.
    type: dict
    required: true
author:
  - CYNIC cluster team
"""

EXAMPLES = r"""
- name: Stop a unit that this host may never have had
  ansible.builtin.systemd_service:
    name: cynic-firewall.service
    state: stopped
  register: __firewall_stop
  failed_when: __firewall_stop is failed and __firewall_stop is not cynic.cluster.unit_not_installed
"""

RETURN = r"""
_value:
  description: Whether the task failed on a unit that systemd does not know.
  type: bool
"""

# ansible.module_utils.service.fail_if_missing, which systemd_service calls before it enables,
# starts, restarts or reloads a unit that `systemctl show` reports as not-found.
_MISSING = "Could not find the requested service"


def unit_not_installed(result):
    if not isinstance(result, dict) or not result.get("failed"):
        return False
    return str(result.get("msg", "")).startswith(_MISSING)


class TestModule:
    def tests(self):
        return {"unit_not_installed": unit_not_installed}
