# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""Fixtures of the module tests: a module's documentation as ansible-doc renders it."""

from __future__ import annotations

import importlib

import pytest
import yaml
from ansible.utils.plugin_docs import add_fragments

# Where the doc fragments a module names are imported from (the collection's own, and ansible-core's).
_FRAGMENT_PACKAGES = {
    'cynic.cluster.': 'ansible_collections.cynic.cluster.plugins.doc_fragments.',
    'ansible.builtin.': 'ansible.plugins.doc_fragments.',
}


class _FragmentLoader(object):
    """Just enough of Ansible's fragment_loader for add_fragments(): imports a fragment by its name,
    None when there is no such fragment (add_fragments then retries with the last part as the variable)."""

    @staticmethod
    def get(name):
        for prefix, package in _FRAGMENT_PACKAGES.items():
            if name.startswith(prefix):
                try:
                    fragment = importlib.import_module(package + name[len(prefix):]).ModuleDocFragment
                except ImportError:
                    return None
                fragment.ansible_name = name
                return fragment
        return None


@pytest.fixture
def module_doc():
    """``module_doc(module) -> dict``: its DOCUMENTATION with the doc fragments merged in, by
    ansible-core's own add_fragments(), so the options are those that ansible-doc shows."""
    def render(module):
        doc = yaml.safe_load(module.DOCUMENTATION)
        add_fragments(doc, module.__file__, _FragmentLoader(), is_module=True)
        return doc
    return render


@pytest.fixture
def assert_documented_spec(module_doc):
    """``assert_documented_spec(module)``: every option of its argument spec is documented with the
    same type, default, required, elements and choices, and nothing else is documented."""
    def check(module):
        options = module_doc(module)['options']
        spec = module.argument_spec()
        assert sorted(options) == sorted(spec)
        for name, arg in spec.items():
            doc = options[name]
            assert doc.get('description'), name
            for key, fallback in (('type', 'str'), ('default', None), ('required', False), ('elements', None),
                                  ('choices', None)):
                assert doc.get(key, fallback) == arg.get(key, fallback), (name, key)
        yaml.safe_load(module.EXAMPLES)
        return options
    return check
