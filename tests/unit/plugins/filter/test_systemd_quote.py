# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""The systemd_quote filter. That systemd reads the values back unchanged is proven end to end by the
molecule default scenario, whose SurrealDB password holds every character escaped here."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

# pylint: disable=wrong-import-position
from ansible_collections.cynic.cluster.plugins.filter.systemd_quote import FilterModule, systemd_quote


def test_env_file_values_are_double_quoted_with_shell_escapes():
    assert systemd_quote('plain') == '"plain"'
    assert systemd_quote(' a "b" \\c `d` $E %f #g ') == '" a \\"b\\" \\\\c \\`d\\` \\$E %f #g "'
    assert systemd_quote(8000) == '"8000"' and systemd_quote(True) == '"True"'
    assert systemd_quote('') == '""'


def test_unit_values_use_c_escapes_and_double_the_specifier_sign():
    assert systemd_quote('HTTPS_PROXY=http://u:p%40ss@proxy:3128', 'unit') == '"HTTPS_PROXY=http://u:p%%40ss@proxy:3128"'
    assert systemd_quote('X=a "b" \\c $d `e`', 'unit') == '"X=a \\"b\\" \\\\c $d `e`"'


@pytest.mark.parametrize('value, kind, message', [
    ('two\nlines', 'env_file', 'newline'),
    ('tab\there', 'unit', 'control character'),
    (None, 'env_file', 'NoneType'),
    (['a'], 'env_file', 'list'),
    ('x', 'shell', 'kind must be'),
])
def test_what_cannot_be_quoted_is_refused(value, kind, message):
    with pytest.raises(AnsibleFilterError, match=message):
        systemd_quote(value, kind)


def test_the_filter_is_registered_under_its_name():
    assert FilterModule().filters() == {'systemd_quote': systemd_quote}
