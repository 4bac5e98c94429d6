#!/usr/bin/env bash
# ansible-test sanity, run from a temporary ansible_collections/cynic/cluster tree, with no ignore entries.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}

# ansible-test bootstraps pip by downloading get-pip from Ansible's CI file host, which is
# unreachable here. It uses a cached copy when one exists: ours runs the standard library's
# ensurepip and then pip with the system CA bundle (ansible-test strips PIP_* variables).
CACHE=$HOME/.ansible/test/cache
mkdir -p "$CACHE"
cat > "$CACHE/get_pip_24_2.py" <<'PY'
"""Offline stand-in for get-pip.py, written by cynic.cluster's scripts/sanity.sh."""
import ensurepip
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
if args:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--cert", "/etc/ssl/certs/ca-certificates.crt", *args])
PY

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
DEST=$TMP/ansible_collections/cynic/cluster
mkdir -p "$DEST"
# The collection as git tracks it (plus new files). The node (cynic_node) and the test stand-ins are
# programs of their own, checked by ruff, mypy and their own tests instead.
cd "$ROOT"
git ls-files -co --exclude-standard \
  | grep -v -E '^(cynic_node/|tests/standins/|\.venv/|\.cache/)' \
  | while IFS= read -r f; do if [ -e "$f" ]; then printf '%s\n' "$f"; fi; done \
  | xargs -d '\n' cp --parents -t "$DEST"
cd "$DEST"
git init -q . && git add -A >/dev/null  # ansible-test lists files through git when it can
"$VENV/bin/ansible-test" sanity --python 3.11 --local --color no "$@"
