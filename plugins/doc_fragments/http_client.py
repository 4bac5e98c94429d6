# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations


class ModuleDocFragment(object):
    """Options of a module that sends HTTP requests; their argument spec is
    module_utils/cynic_module_args.py's http_client_spec().

    O(timeout) has no default here: each module sets its own (a module's keys win over a fragment's
    when Ansible merges them).
    """

    DOCUMENTATION = r'''
options:
  timeout:
    description:
      - Timeout of every HTTP request, in seconds.
    type: float
  validate_certs:
    description:
      - Check TLS certificates of C(https) URLs.
    type: bool
    default: true
'''
