# -*- coding: utf-8 -*-
# Copyright: (c) 2025, CYNIC cluster team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Read and amend a built wheel's metadata, on the controller (the cynic role runs it with ansible_playbook_python).

``inspect WHEEL [--python=X.Y.Z ...]``
    Prints JSON: the wheel's name, version, Requires-Python, Requires-Dist, and for each ``--python`` version
    whether Requires-Python admits it (``python_ok``; no Requires-Python admits every version).
``override WHEEL OUT_DIR REQUIREMENT [REQUIREMENT ...]``
    Writes OUT_DIR/<same file name>, a copy of the wheel whose Requires-Dist lines for each REQUIREMENT's
    project are replaced by that requirement (a pin the package gets wrong: ``surrealdb>=1,<3``), with the
    METADATA entry of RECORD rehashed. Every other member is copied byte for byte with its own ZipInfo, so the
    same input gives the same output. A line keeps its own environment marker and extras unless the
    requirement gives its own, and its style (``name (spec)`` as Poetry and older setuptools write it, or
    ``name spec``), so the result is the wheel the package's build would have made with that pin. A project
    the wheel does not require is an error (a typo would otherwise change nothing). Prints JSON.

Uses only the standard library and ``packaging`` (a dependency of ansible-core).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
import zipfile

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

# name, [extras], then the version part (with or without parentheses), then "; marker"
_LINE = re.compile(r'^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?P<extras>\[[^\]]*\])?\s*(?P<rest>[^;]*?)\s*(?P<marker>;.*)?$')


class WheelError(Exception):
    """The wheel or a requirement cannot be used."""


def _dist_info(zin):
    metas = [n for n in zin.namelist() if n.count('/') == 1 and n.endswith('.dist-info/METADATA')]
    if len(metas) != 1:
        raise WheelError('%s: expected one *.dist-info/METADATA, found %d' % (zin.filename, len(metas)))
    return metas[0], metas[0][:-len('METADATA')] + 'RECORD'


def _headers(text, name):
    head = text.split('\n\n', 1)[0]
    return [line.split(':', 1)[1].strip() for line in head.split('\n') if line.lower().startswith(name.lower() + ':')]


def inspect(path, pythons=()):
    with zipfile.ZipFile(path) as zin:
        meta, _record = _dist_info(zin)
        text = zin.read(meta).decode('utf-8')
    requires_python = (_headers(text, 'Requires-Python') or [''])[0]
    try:
        spec = SpecifierSet(requires_python)
    except InvalidSpecifier as exc:
        raise WheelError('%s: Requires-Python %r cannot be read: %s' % (path, requires_python, exc)) from exc
    return {
        'wheel': os.path.abspath(path),
        'name': (_headers(text, 'Name') or [''])[0],
        'version': (_headers(text, 'Version') or [''])[0],
        'requires_python': requires_python,
        'requires_dist': _headers(text, 'Requires-Dist'),
        'python_ok': {v: spec.contains(v, prereleases=True) for v in pythons},
    }


def _parse_override(text):
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise WheelError('requirement override %r is not a PEP 508 requirement: %s' % (text, exc)) from exc
    if req.url:
        raise WheelError('requirement override %r: a URL requirement cannot replace a pin' % text)
    match = _LINE.match(text.strip())
    return canonicalize_name(req.name), match


def _parts(match):
    """(name, extras, space before the version, version, space before the marker, marker) of a matched line."""
    text = match.string
    head_end = match.end('extras') if match.group('extras') else match.end('name')
    rest = match.group('rest')
    marker = match.group('marker') or ''
    return (match.group('name'), match.group('extras') or '', text[head_end:match.start('rest')], rest,
            text[match.end('rest'):match.start('marker')] if marker else '', marker)


def _rewrite_line(value, override):
    """One Requires-Dist value with the override's version (and its extras or marker when it has them), written
    in the line's own style."""
    old = _LINE.match(value)
    if old is None:
        raise WheelError('Requires-Dist %r cannot be read' % value)
    name, extras, space, rest, marker_space, marker = _parts(old)
    _oname, o_extras, o_space, o_rest, o_marker_space, o_marker = _parts(override)
    spec = o_rest.strip()
    if spec.startswith('(') and spec.endswith(')'):
        spec = spec[1:-1].strip()
    if not spec:
        version = ''
    elif rest.startswith('('):
        version = (space or ' ') + '(' + spec + ')'
    else:
        version = (space if rest else o_space) + spec
    if o_marker:
        marker_space, marker = o_marker_space or ' ', o_marker
    return name + (o_extras or extras) + version + (marker_space + marker if marker else '')


def override(path, out_dir, requirements):
    overrides = {}
    for text in requirements:
        name, match = _parse_override(text)
        if name in overrides:
            raise WheelError('requirement override for %s given twice' % name)
        overrides[name] = (text, match)
    with zipfile.ZipFile(path) as zin:
        meta, record = _dist_info(zin)
        lines = zin.read(meta).decode('utf-8').split('\n')
        replaced, seen = [], set()
        in_headers = True
        for i, line in enumerate(lines):
            if line == '':
                in_headers = False
            if not in_headers or not line.lower().startswith('requires-dist:'):
                continue
            value = line.split(':', 1)[1].strip()
            try:
                name = canonicalize_name(Requirement(value).name)
            except InvalidRequirement as exc:
                raise WheelError('%s: Requires-Dist %r cannot be read: %s' % (path, value, exc)) from exc
            if name in overrides:
                new = 'Requires-Dist: ' + _rewrite_line(value, overrides[name][1])
                Requirement(new.split(':', 1)[1].strip())  # still a valid requirement
                replaced.append({'old': line, 'new': new})
                lines[i] = new
                seen.add(name)
        missing = sorted(set(overrides) - seen)
        if missing:
            raise WheelError('%s does not require %s: nothing to override (Requires-Dist names only what it needs)'
                             % (os.path.basename(path), ', '.join(missing)))
        data = '\n'.join(lines).encode('utf-8')
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode('ascii')
        rows = zin.read(record).decode('utf-8').split('\n')
        rows = ['%s,sha256=%s,%d' % (meta, digest, len(data)) if row.startswith(meta + ',') else row for row in rows]
        os.makedirs(out_dir, exist_ok=True)
        out = os.path.join(out_dir, os.path.basename(path))
        tmp = out + '.tmp'
        with zipfile.ZipFile(tmp, 'w') as zout:
            for info in zin.infolist():
                if info.filename == meta:
                    body = data
                elif info.filename == record:
                    body = '\n'.join(rows).encode('utf-8')
                else:
                    body = zin.read(info)
                zout.writestr(info, body, compress_type=info.compress_type)
        os.replace(tmp, out)
    return {'wheel': os.path.abspath(out), 'replaced': replaced}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(argv) >= 2 and argv[0] == 'inspect':
            pythons = [a.split('=', 1)[1] for a in argv[2:] if a.startswith('--python=')]
            pythons += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == '--python']
            result = inspect(argv[1], pythons)
        elif len(argv) >= 4 and argv[0] == 'override':
            result = override(argv[1], argv[2], argv[3:])
        else:
            sys.stderr.write(__doc__)
            return 2
    except (WheelError, OSError, zipfile.BadZipFile) as exc:
        sys.stderr.write('wheel_requires: %s\n' % exc)
        return 1
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == '__main__':
    sys.exit(main())
