# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: systemd_quote
short_description: Quote a value for a systemd environment file or an Environment= line
version_added: 1.0.0
description:
  - Returns the value in double quotes, escaped so that systemd reads back exactly the value, whatever it holds
    (quotes, backslashes, dollars, leading or trailing spaces, C(#)). Unquoted, systemd would drop backslashes, trim
    spaces and take a leading quote as quoting, so a password could reach the service changed.
  - With O(kind=env_file), for a file named by C(EnvironmentFile=), a backslash, a double quote, a backtick and a
    dollar sign are escaped with a backslash.
  - With O(kind=unit), for the value of an C(Environment=) line in a unit file or drop-in (quote the whole
    C(NAME=value)), a backslash and a double quote are escaped with a backslash and the specifier character C(%)
    is doubled.
  - Newlines and other control characters are refused, since neither form can carry them on one line.
options:
  _input:
    description: The value to quote. Numbers and booleans are quoted as their text.
    type: raw
    required: true
  kind:
    description: Where the quoted value goes.
    type: str
    choices: [env_file, unit]
    default: env_file
author:
  - CYNIC cluster team
"""

EXAMPLES = r"""
- name: A password in an environment file, read back exactly by systemd
  ansible.builtin.copy:
    dest: /etc/cynic/cynic.env
    content: |
      SURREAL_PASS={{ cynic_surreal_password | cynic.cluster.systemd_quote }}
    mode: "0600"

- name: A variable in a drop-in
  ansible.builtin.copy:
    dest: /etc/systemd/system/ollama.service.d/proxy.conf
    content: |
      [Service]
      Environment={{ ('HTTPS_PROXY=' ~ proxy_url) | cynic.cluster.systemd_quote('unit') }}
    mode: "0644"
"""

RETURN = r"""
_value:
  description: The value between double quotes, escaped for O(kind).
  type: str
"""

# What systemd's environment-file parser unescapes inside double quotes (SHELL_NEED_ESCAPE).
_ENV_FILE_ESCAPES = {'\\': '\\\\', '"': '\\"', '`': '\\`', '$': '\\$'}
# Unit-file values: C escapes, and %% for a literal % (specifiers).
_UNIT_ESCAPES = {'\\': '\\\\', '"': '\\"', '%': '%%'}


def systemd_quote(value, kind='env_file'):
    if kind not in ('env_file', 'unit'):
        raise AnsibleFilterError('systemd_quote: kind must be env_file or unit, got %r' % (kind,))
    if value is None or isinstance(value, (dict, list, tuple)):
        raise AnsibleFilterError('systemd_quote: expected a string or a number, got %s' % type(value).__name__)
    text = str(value)
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise AnsibleFilterError('systemd_quote: a value with a newline or another control character cannot go on '
                                 'one line of a systemd file')
    escapes = _ENV_FILE_ESCAPES if kind == 'env_file' else _UNIT_ESCAPES
    return '"%s"' % ''.join(escapes.get(char, char) for char in text)


class FilterModule(object):
    def filters(self):
        return {'systemd_quote': systemd_quote}
