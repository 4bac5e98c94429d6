# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""release_archive run for real by ansible-playbook against this machine, on archives built here in
both published formats and served by file:// URLs:

* SurrealDB's: ``surreal-vX.linux-amd64.tgz`` beside ``surreal-vX.linux-amd64.txt`` holding the
  hash alone (``echo $(shasum -a 256 FILE | cut -f1 -d' ')`` in its release workflow);
* Ollama's: one ``sha256sum.txt`` for every asset, lines ``<hash>  ./<file>``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile

import pytest

SURREAL = 'surreal-v9.9.9.linux-amd64.tgz'
SURREAL_TXT = 'surreal-v9.9.9.linux-amd64.txt'
OLLAMA = 'ollama-linux-amd64.tgz'
PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: cynic.cluster.release_archive
        tasks_from: install.yml
      vars: {variables}
"""


def _tgz(path, members):
    with tarfile.open(path, 'w:gz') as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def release(tmp_path):
    """A directory holding both releases as published, and the sha256 of each archive."""
    d = tmp_path / 'release'
    d.mkdir()
    sums = {
        SURREAL: _tgz(d / SURREAL, {'surreal': b'#!/bin/sh\necho surreal 9.9.9\n'}),
        OLLAMA: _tgz(d / OLLAMA, {'./bin/ollama': b'#!/bin/sh\necho ollama\n', './lib/ollama/README': b'libs\n'}),
    }
    (d / SURREAL_TXT).write_text(sums[SURREAL] + '\n')
    other = hashlib.sha256(b'another asset').hexdigest()
    (d / 'sha256sum.txt').write_text('%s  ./ollama-darwin.tgz\n%s  ./%s\n' % (other, sums[OLLAMA], OLLAMA))
    return d, sums


def surreal_vars(release_dir, tmp_path, **extra):
    return dict({
        'release_archive_name': 'surrealdb', 'release_archive_version': '9.9.9',
        'release_archive_file': SURREAL, 'release_archive_url': 'file://%s/%s' % (release_dir, SURREAL),
        'release_archive_checksum_file': SURREAL_TXT,
        'release_archive_checksum_url': 'file://%s/%s' % (release_dir, SURREAL_TXT),
        'release_archive_cache_dir': str(tmp_path / 'cache'),
        'release_archive_install_dir': str(tmp_path / 'opt' / 'surrealdb' / '9.9.9'),
        'release_archive_creates': 'surreal',
    }, **extra)


def ollama_vars(release_dir, tmp_path, **extra):
    return dict({
        'release_archive_name': 'ollama', 'release_archive_version': '0.9.9',
        'release_archive_file': OLLAMA, 'release_archive_url': 'file://%s/%s' % (release_dir, OLLAMA),
        'release_archive_checksum_file': 'sha256sum.txt',
        'release_archive_checksum_url': 'file://%s/sha256sum.txt' % release_dir,
        'release_archive_cache_dir': str(tmp_path / 'cache'),
        'release_archive_install_dir': str(tmp_path / 'opt' / 'ollama' / '0.9.9'),
        'release_archive_creates': 'bin/ollama',
    }, **extra)


def run_role(tmp_path, variables, *extra):
    """ansible-playbook with the role on localhost -> (returncode, stdout, changed count)."""
    (tmp_path / 'play.yml').write_text(PLAY.format(variables=json.dumps(variables)))
    env = dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR='1')
    playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    proc = subprocess.run([playbook, '-i', 'localhost,', '-c', 'local', *extra, str(tmp_path / 'play.yml')],
                          capture_output=True, text=True, cwd=tmp_path, env=env, check=False)
    recap = re.search(r'^localhost\s+: ok=\d+\s+changed=(\d+)', proc.stdout, re.MULTILINE)
    assert recap, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.returncode, proc.stdout, int(recap.group(1))


def assert_fails(tmp_path, variables, *expected):
    rc, out, changed = run_role(tmp_path, variables)
    assert rc != 0, out[-3000:]
    flat = ' '.join(out.split())  # messages are folded over lines
    for text in expected:
        assert text in flat, (text, out[-3000:])
    assert changed == 0, out[-3000:]
    assert not os.path.exists(variables['release_archive_install_dir'])
    return flat


@pytest.mark.parametrize('shape', ['surrealdb', 'ollama'])
def test_installs_from_the_published_checksum_file_then_changes_nothing(release, tmp_path, shape):
    release_dir, sums = release
    variables = (surreal_vars if shape == 'surrealdb' else ollama_vars)(release_dir, tmp_path)
    rc, out, changed = run_role(tmp_path, variables)
    assert rc == 0 and changed > 0, out[-3000:]
    installed = os.path.join(variables['release_archive_install_dir'], variables['release_archive_creates'])
    assert os.access(installed, os.X_OK), out[-3000:]
    cached = tmp_path / 'cache' / shape / variables['release_archive_version'] / variables['release_archive_file']
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == sums[variables['release_archive_file']]
    mtime = cached.stat().st_mtime_ns

    rc, out, changed = run_role(tmp_path, variables)
    assert (rc, changed) == (0, 0), out[-3000:]
    assert cached.stat().st_mtime_ns == mtime, 'the cached archive was downloaded again'


@pytest.mark.parametrize('local_dir', ['release', 'air gapped #1'])
def test_air_gapped_directory_is_checked_in_place(release, tmp_path, local_dir):
    release_dir, sums = release
    if local_dir != release_dir.name:  # a name that must be quoted in a file:// URL
        release_dir = release_dir.rename(tmp_path / local_dir)
    # relative to the directory ansible-playbook runs in
    variables = ollama_vars(release_dir, tmp_path, release_archive_local_dir=local_dir,
                            release_archive_url='', release_archive_checksum_url='')
    mode = os.stat(release_dir / OLLAMA).st_mode
    for expected_changed in (True, False):
        rc, out, changed = run_role(tmp_path, variables)
        assert rc == 0 and (changed > 0) == expected_changed, out[-3000:]
    assert os.path.exists(os.path.join(variables['release_archive_install_dir'], 'bin', 'ollama'))
    assert not (tmp_path / 'cache').exists(), 'an air-gapped install needs no download cache'
    assert os.stat(release_dir / OLLAMA).st_mode == mode
    assert hashlib.sha256((release_dir / OLLAMA).read_bytes()).hexdigest() == sums[OLLAMA]


@pytest.mark.parametrize('shape', ['surrealdb', 'ollama'])
def test_a_tampered_archive_fails_before_anything_is_installed(release, tmp_path, shape):
    release_dir, sums = release
    variables = (surreal_vars if shape == 'surrealdb' else ollama_vars)(release_dir, tmp_path)
    archive = release_dir / variables['release_archive_file']
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    flat = assert_fails(tmp_path, variables, 'CHECKSUM MISMATCH for', sums[variables['release_archive_file']],
                        'Nothing was installed')
    assert '"attempts": 1,' in flat, 'a sha256 that does not hold was retried'
    cached = tmp_path / 'cache' / shape / variables['release_archive_version'] / variables['release_archive_file']
    assert not cached.exists(), 'the tampered download was kept in the cache'


def test_a_tampered_archive_in_the_air_gapped_directory_fails(release, tmp_path):
    release_dir, sums = release
    data = bytearray((release_dir / SURREAL).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (release_dir / SURREAL).write_bytes(bytes(data))
    assert_fails(tmp_path, surreal_vars(release_dir, tmp_path, release_archive_local_dir=str(release_dir)),
                 'CHECKSUM MISMATCH for %s/%s' % (release_dir, SURREAL), sums[SURREAL],
                 'exactly as published into %s' % release_dir)
    assert (release_dir / SURREAL).read_bytes() == bytes(data), 'the local archive was rewritten'


def test_a_checksum_file_without_the_archive_fails(release, tmp_path):
    release_dir = release[0]
    (release_dir / 'sha256sum.txt').write_text('%s  ./ollama-darwin.tgz\n' % ('0' * 64))
    flat = assert_fails(tmp_path, ollama_vars(release_dir, tmp_path),
                        "Unable to find a checksum for file '%s'" % OLLAMA, 'Nothing was installed')
    assert '"attempts": 1,' in flat, 'a checksum file without the archive was read again'


def test_a_missing_local_file_fails_with_what_to_put_where(release, tmp_path):
    release_dir = release[0]
    (release_dir / 'sha256sum.txt').unlink()
    assert_fails(tmp_path, ollama_vars(release_dir, tmp_path, release_archive_local_dir=str(release_dir)),
                 '%s/sha256sum.txt does not exist on the controller' % release_dir,
                 'put %s and sha256sum.txt exactly as published into %s' % (OLLAMA, release_dir))


def test_an_unreachable_checksum_file_fails_and_names_it(release, tmp_path):
    release_dir = release[0]
    url = 'file://%s/gone/sha256sum.txt' % release_dir
    flat = assert_fails(tmp_path, ollama_vars(release_dir, tmp_path, release_archive_checksum_url=url),
                        'ollama: could not get and check', 'Nothing was installed')
    assert url in flat, flat[-3000:]


def test_a_pinned_sha256_wins_over_the_checksum_file(release, tmp_path):
    release_dir, sums = release
    # the published file is not read at all: a wrong one at an unreachable URL does not matter
    variables = surreal_vars(release_dir, tmp_path, release_archive_checksum=sums[SURREAL].upper(),
                             release_archive_checksum_url='file://%s/gone.txt' % release_dir)
    rc, out, changed = run_role(tmp_path, variables)
    assert rc == 0 and changed > 0, out[-3000:]
    assert os.path.exists(os.path.join(variables['release_archive_install_dir'], 'surreal'))


def test_a_wrong_pinned_sha256_fails(release, tmp_path):
    release_dir, sums = release
    wrong = hashlib.sha256(b'not the archive').hexdigest()
    assert_fails(tmp_path, surreal_vars(release_dir, tmp_path, release_archive_checksum=wrong),
                 'CHECKSUM MISMATCH for', wrong)


@pytest.mark.parametrize('pinned', ['abc123', 'g' * 64, 'sha256:' + '0' * 64])
def test_a_malformed_pinned_sha256_fails_before_any_download(release, tmp_path, pinned):
    release_dir = release[0]
    assert_fails(tmp_path, surreal_vars(release_dir, tmp_path, release_archive_checksum=pinned),
                 'surrealdb: the pinned sha256 must be 64 hex digits')
    assert not (tmp_path / 'cache').exists()


def test_check_mode_checks_the_archive_and_installs_nothing(release, tmp_path):
    release_dir = release[0]
    variables = surreal_vars(release_dir, tmp_path)
    rc, out, changed = run_role(tmp_path, variables, '--check')
    assert rc == 0 and changed > 0, out[-3000:]
    assert not os.path.exists(variables['release_archive_install_dir'])
    (release_dir / SURREAL_TXT).write_text(hashlib.sha256(b'not the archive').hexdigest() + '\n')
    (tmp_path / 'cache').rename(tmp_path / 'cache.old')
    rc, out = run_role(tmp_path, variables, '--check')[:2]
    assert rc != 0 and 'CHECKSUM MISMATCH' in out, out[-3000:]


def test_a_pinned_sha256_needs_no_checksum_file_in_the_air_gapped_directory(release, tmp_path):
    release_dir, sums = release
    (release_dir / SURREAL_TXT).unlink()
    variables = surreal_vars(release_dir, tmp_path, release_archive_local_dir=str(release_dir),
                             release_archive_checksum=sums[SURREAL])
    rc, out, changed = run_role(tmp_path, variables)
    assert rc == 0 and changed > 0, out[-3000:]
    assert os.path.exists(os.path.join(variables['release_archive_install_dir'], 'surreal'))
