# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""Argument spec pieces that several of the collection's modules share."""

from __future__ import annotations


def http_client_spec(timeout):
    """The options of the doc fragment cynic.cluster.http_client, with this module's default timeout."""
    return dict(
        timeout=dict(type='float', default=timeout),
        validate_certs=dict(type='bool', default=True),
    )
