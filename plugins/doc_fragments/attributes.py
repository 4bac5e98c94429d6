# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations


class ModuleDocFragment(object):
    """Attributes of the collection's modules: they only read, and return facts.

    The descriptions are written here rather than taken from ansible.builtin.action_common_attributes
    so that a module names one fragment; a module adds the details of its own check mode, which win
    over these keys when Ansible merges the fragment.
    """

    DOCUMENTATION = r'''
attributes:
  check_mode:
    description: Can run in check mode and return what a real run would report.
    support: full
  diff_mode:
    description: Can show what changed, or would change in check mode, in diff mode.
    support: none
  facts:
    description: Returns an C(ansible_facts) dictionary that updates the host facts.
    support: full
  platform:
    description: Target OS families that can be operated against.
    support: N/A
    platforms: posix
'''
