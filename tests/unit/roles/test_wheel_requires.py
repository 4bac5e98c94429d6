# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""roles/cynic/files/wheel_requires.py: reading a wheel's Requires-Python and replacing its pins (METADATA
and RECORD), as the cynic role runs it on the controller."""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SCRIPT = os.path.join(REPO_ROOT, 'roles', 'cynic', 'files', 'wheel_requires.py')
_spec = importlib.util.spec_from_file_location('wheel_requires', SCRIPT)
wheel_requires = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wheel_requires)

METADATA = """Metadata-Version: 2.1
Name: toy
Version: 0.2.0
Summary: A toy
Requires-Python: >=3.13,<4.0
Provides-Extra: local
Requires-Dist: aiohttp (>=3.9.0,<4.0.0)
Requires-Dist: llama-cpp-python (>=0.3.0,<0.4.0) ; extra == "local"
Requires-Dist: ollama (>=0.4.0)
Requires-Dist: surrealdb (>=0.3.2,<0.4.0)
Requires-Dist: uvicorn[standard] (>=0.29.0,<0.30.0)

Requires-Dist: surrealdb (>=0.3.2) is prose in the description, not a header.
"""


def _record_row(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()
    return '%s,sha256=%s,%d' % (name, digest, len(data))


def make_wheel(path, metadata=METADATA):
    members = {
        'toy/__init__.py': b'VALUE = 1\n',
        'toy-0.2.0.dist-info/METADATA': metadata.encode(),
        'toy-0.2.0.dist-info/WHEEL': b'Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n',
    }
    record = '\n'.join(_record_row(n, d) for n, d in members.items()) + '\ntoy-0.2.0.dist-info/RECORD,,\n'
    members['toy-0.2.0.dist-info/RECORD'] = record.encode()
    with zipfile.ZipFile(path, 'w') as zout:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zout.writestr(info, data)
    return str(path)


def requires_dist(path):
    with zipfile.ZipFile(path) as zin:
        head = zin.read('toy-0.2.0.dist-info/METADATA').decode().split('\n\n', 1)[0]
    return [line.split(': ', 1)[1] for line in head.split('\n') if line.startswith('Requires-Dist:')]


def test_an_override_replaces_the_pin_and_keeps_the_rest_of_the_wheel(tmp_path):
    src = make_wheel(tmp_path / 'toy-0.2.0-py3-none-any.whl')
    result = wheel_requires.override(src, str(tmp_path / 'out'), ['surrealdb>=1.0,<3', 'ollama==0.4.6'])
    out = result['wheel']
    assert os.path.basename(out) == os.path.basename(src)
    assert requires_dist(out) == [
        'aiohttp (>=3.9.0,<4.0.0)',
        'llama-cpp-python (>=0.3.0,<0.4.0) ; extra == "local"',
        'ollama (==0.4.6)',            # the line's own style: Poetry's "name (spec)"
        'surrealdb (>=1.0,<3)',
        'uvicorn[standard] (>=0.29.0,<0.30.0)',
    ]
    assert [r['old'] for r in result['replaced']] == ['Requires-Dist: ollama (>=0.4.0)',
                                                      'Requires-Dist: surrealdb (>=0.3.2,<0.4.0)']
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out) as zout:
        assert zout.testzip() is None
        assert [i.filename for i in zout.infolist()] == [i.filename for i in zin.infolist()]
        for a, b in zip(zin.infolist(), zout.infolist(), strict=True):
            assert (a.date_time, a.compress_type, a.external_attr) == (b.date_time, b.compress_type, b.external_attr)
            if not b.filename.endswith(('/METADATA', '/RECORD')):
                assert zin.read(a) == zout.read(b)
        meta = zout.read('toy-0.2.0.dist-info/METADATA')
        assert meta.endswith(b'is prose in the description, not a header.\n')  # the body is not touched
        rows = {row[0]: row for row in csv.reader(io.StringIO(zout.read('toy-0.2.0.dist-info/RECORD').decode()))}
        # every file's RECORD hash and size match what the new wheel holds
        for name, digest, size in rows.values():
            if name.endswith('/RECORD'):
                assert (digest, size) == ('', '')
                continue
            data = zout.read(name)
            assert _record_row(name, data) == ','.join([name, digest, size])
        assert rows['toy-0.2.0.dist-info/METADATA'][2] == str(len(meta))


def test_the_same_wheel_and_overrides_give_the_same_bytes(tmp_path):
    src = make_wheel(tmp_path / 'toy-0.2.0-py3-none-any.whl')
    first = wheel_requires.override(src, str(tmp_path / 'a'), ['surrealdb>=1,<3'])['wheel']
    second = wheel_requires.override(src, str(tmp_path / 'b'), ['surrealdb>=1,<3'])['wheel']
    with open(first, 'rb') as a, open(second, 'rb') as b:
        assert a.read() == b.read()


@pytest.mark.parametrize(('line', 'override', 'expected'), [
    ('surrealdb>=0.3', 'surrealdb>=1,<3', 'surrealdb>=1,<3'),                 # PEP 508 style kept
    ('uvicorn[standard]>=0.29', 'uvicorn>=0.30', 'uvicorn[standard]>=0.30'),  # the line's extras kept
    ('x>=1; python_version<"3.12"', 'x==2', 'x==2; python_version<"3.12"'),    # and its marker
    ('x>=1', 'x>=2; os_name == "posix"', 'x>=2 ; os_name == "posix"'),         # unless the override has one
    ('x (>=1)', 'x', 'x'),                                                      # no version: any
])
def test_line_styles(line, override, expected):
    assert wheel_requires._rewrite_line(line, wheel_requires._LINE.match(override)) == expected


@pytest.mark.parametrize(('overrides', 'message'), [
    (['surealdb>=1'], 'does not require surealdb'),          # a typo is refused, not ignored
    (['surrealdb>=1', 'SurrealDB<3'], 'given twice'),
    (['surrealdb @ https://example.invalid/x.whl'], 'URL requirement'),
    (['surrealdb>>1'], 'not a PEP 508 requirement'),
])
def test_bad_overrides_are_refused(tmp_path, overrides, message):
    src = make_wheel(tmp_path / 'toy-0.2.0-py3-none-any.whl')
    with pytest.raises(wheel_requires.WheelError, match=message):
        wheel_requires.override(src, str(tmp_path / 'out'), overrides)
    assert not (tmp_path / 'out' / 'toy-0.2.0-py3-none-any.whl').exists()


def test_inspect_checks_host_pythons_against_requires_python(tmp_path):
    src = make_wheel(tmp_path / 'toy-0.2.0-py3-none-any.whl')
    proc = subprocess.run([sys.executable, SCRIPT, 'inspect', src, '--python=3.11.2', '--python=3.13.5',
                           '--python', '4.0.0'], capture_output=True, text=True, check=True)
    info = json.loads(proc.stdout)
    assert info['name'] == 'toy' and info['version'] == '0.2.0'
    assert info['requires_python'] == '>=3.13,<4.0'
    assert info['python_ok'] == {'3.11.2': False, '3.13.5': True, '4.0.0': False}
    assert 'surrealdb (>=0.3.2,<0.4.0)' in info['requires_dist']


def test_no_requires_python_admits_any_version(tmp_path):
    src = make_wheel(tmp_path / 'toy-0.2.0-py3-none-any.whl', METADATA.replace('Requires-Python: >=3.13,<4.0\n', ''))
    assert wheel_requires.inspect(src, ['3.8.10'])['python_ok'] == {'3.8.10': True}


def test_the_command_line_reports_errors_on_stderr(tmp_path):
    src = make_wheel(tmp_path / 'toy-0.2.0-py3-none-any.whl')
    proc = subprocess.run([sys.executable, SCRIPT, 'override', src, str(tmp_path / 'out'), 'nosuch>=1'],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and 'does not require nosuch' in proc.stderr
