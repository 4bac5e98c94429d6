# -*- coding: utf-8 -*-
# Copyright: (c) 2026, CYNIC cluster team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: systemd_unquote
short_description: Read back a value written by systemd_quote into an environment file
version_added: 1.0.0
description:
  - The inverse of C(cynic.cluster.systemd_quote) for O(kind=env_file) values, for a role that reads back what it
    wrote before (the surrealdb role reads the root password its environment file holds to rotate it).
  - Returns the value of the first C(NAME=) line of the file's text for the name given.
options:
  _input:
    description: The text of the environment file.
    type: str
    required: true
  name:
    description: The variable to read.
    type: str
    required: true
author:
  - CYNIC cluster team
"""

EXAMPLES = r"""
- name: The root password the environment file holds
  ansible.builtin.set_fact:
    previous: "{{ env_file.content | b64decode | cynic.cluster.systemd_unquote('SURREAL_PASS') }}"
"""

RETURN = r"""
_value:
  description: The value, unescaped; empty when the file has no such line.
  type: str
"""


def systemd_unquote(text, name):
    if not isinstance(text, str):
        raise AnsibleFilterError('systemd_unquote: expected the text of an environment file')
    match = re.search(r'^%s=(.*)$' % re.escape(name), text, re.MULTILINE)
    if match is None:
        return ''
    value = match.group(1).strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r'\\(.)', r'\1', value[1:-1])
    return value


class FilterModule:
    def filters(self):
        return {'systemd_unquote': systemd_unquote}
