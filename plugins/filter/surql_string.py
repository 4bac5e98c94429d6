# -*- coding: utf-8 -*-
# Copyright: (c) 2026, CYNIC cluster team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: surql_string
short_description: Quote a value as a SurrealQL string literal
version_added: 1.0.0
description:
  - Returns the value between single quotes with backslashes and single quotes escaped, so that SurrealDB reads
    back exactly the value. For statements that cannot take a bound parameter, such as C(DEFINE USER ... PASSWORD)
    (SurrealDB's embedded engine refuses C(PASSWORD $p)).
  - Control characters (newlines included) are refused.
options:
  _input:
    description: The value to quote.
    type: str
    required: true
author:
  - CYNIC cluster team
"""

EXAMPLES = r"""
- name: A database user whose password holds any character
  ansible.builtin.set_fact:
    statement: "DEFINE USER OVERWRITE cynic ON DATABASE PASSWORD {{ password | cynic.cluster.surql_string }} ROLES EDITOR;"
"""

RETURN = r"""
_value:
  description: The SurrealQL string literal.
  type: str
"""


def surql_string(value):
    if value is None or isinstance(value, (dict, list, tuple)):
        raise AnsibleFilterError('surql_string: expected a string, got %s' % type(value).__name__)
    text = str(value)
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise AnsibleFilterError('surql_string: a value with a control character is refused')
    return "'%s'" % text.replace('\\', '\\\\').replace("'", "\\'")


class FilterModule:
    def filters(self):
        return {'surql_string': surql_string}
