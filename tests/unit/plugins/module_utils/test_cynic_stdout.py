# -*- coding: utf-8 -*-
# Copyright: (c) 2026, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""A module's result reaches the controller whole: a result over a pipe's 64 KiB, written while the
reader is away and a signal arrives, under PYTHONUNBUFFERED=1 or on a non-blocking descriptor.

Without ``whole_results()`` the first case receives 65537 of the 200,002 characters (the CI
failure "No end of json char found"), the second stops at 65536 with BlockingIOError.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from ansible_collections.cynic.cluster.plugins.module_utils import cynic_stdout

RESULT_CHARS = 200000

# The child arms a signal for its main thread, then prints as a module does. The signal handler
# writes one byte to stderr, so the parent knows the write was interrupted before it reads.
CHILD = r'''
import importlib.util, os, signal, sys, threading
spec = importlib.util.spec_from_file_location('cynic_stdout', sys.argv[1])
helper = importlib.util.module_from_spec(spec)
spec.loader.exec_module(helper)
if sys.argv[2] == 'nonblocking':
    os.set_blocking(1, False)
helper.whole_results()
signal.signal(signal.SIGUSR1, lambda *_: os.write(2, b'!'))
threading.Timer(0.3, signal.pthread_kill, (threading.main_thread().ident, signal.SIGUSR1)).start()
print('\n{"x": "' + 'a' * (int(sys.argv[3]) - 10) + '"}')
'''


@pytest.mark.parametrize('case', ['unbuffered', 'nonblocking'])
def test_a_result_over_the_pipe_size_arrives_whole(case):
    env = dict(os.environ, PYTHONUNBUFFERED='1' if case == 'unbuffered' else '')
    child = subprocess.Popen([sys.executable, '-c', CHILD, cynic_stdout.__file__, case, str(RESULT_CHARS)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    interrupted = child.stderr.read(1)  # the pipe is full and nobody reads it until the signal came
    out, err = child.communicate(timeout=60)
    assert interrupted == b'!', err
    assert child.returncode == 0, err
    assert len(out) == RESULT_CHARS + 1, (len(out), out[-40:])
    assert out.endswith(b'"}\n')


def test_a_buffered_stdout_is_left_alone(monkeypatch):
    class Captured:  # what pytest puts in place of sys.stdout: no descriptor
        def fileno(self):
            raise OSError('no descriptor')
    captured = Captured()
    monkeypatch.setattr(sys, 'stdout', captured)
    cynic_stdout.whole_results()
    assert sys.stdout is captured
