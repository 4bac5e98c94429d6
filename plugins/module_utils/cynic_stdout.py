# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""Standard output that writes a module's whole result, whatever the environment says.

A module prints its result once, with ``print()``, to a pipe the controller reads. Two things cut
that write short, and the controller then reads JSON that stops in the middle ("Module result
deserialization failed: No end of json char found", rc 0, nothing on stderr):

* ``PYTHONUNBUFFERED=1``, common in CI and container images, which the local connection passes on
  to the module. The text layer then writes straight to the raw file, and ``TextIOWrapper`` ignores
  a short write: a result over the pipe's 64 KiB, interrupted by a signal while the pipe is full,
  loses everything after the first 64 KiB. CI hit exactly that (65537 characters received).
* a descriptor left non-blocking, where the write stops as soon as the pipe is full.

A buffered writer retries short writes until all is written, so the module writes through one.
"""

from __future__ import annotations

import io
import os
import sys


def whole_results():
    """Make ``sys.stdout`` blocking and buffered; call it before a module may print its result."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no real descriptor (a test's captured stdout)
        return
    os.set_blocking(descriptor, True)
    if isinstance(getattr(sys.stdout, 'buffer', None), io.BufferedIOBase):
        return
    sys.stdout.flush()
    # Not closefd: descriptor 1 outlives this wrapper; the interpreter flushes sys.stdout at exit.
    sys.stdout = io.TextIOWrapper(io.open(descriptor, 'wb', closefd=False), encoding=sys.stdout.encoding,
                                  errors=sys.stdout.errors)
