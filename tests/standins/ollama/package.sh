#!/usr/bin/env bash
# package.sh OUTDIR [VERSION] -- pack the Ollama TEST STAND-IN like the official Linux
# release since v0.14, so the roles' install-from-archive path can be tested offline:
#
#   OUTDIR/ollama-linux-amd64.tar.zst   ./bin/ollama (0755) and ./lib/ollama/
#   OUTDIR/sha256sum.txt                "HASH  ./ollama-linux-amd64.tar.zst"
#
# Member names start with "./" because the release is made with
# `tar c -C dist/linux_amd64 . | zstd` (scripts/build_linux.sh); the checksum line has
# "./" because the release runs `find . -type f | xargs sha256sum` in dist/.
# The archive is byte-for-byte reproducible (sorted members, fixed mtime, owner 0,
# single-threaded zstd), so its checksum is stable from one run to the next.
set -euo pipefail

usage() { echo "usage: $0 OUTDIR [VERSION]   (VERSION defaults to 0.14.2)" >&2; exit 2; }
if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
out=$1
version=${2:-0.14.2}
[[ $version =~ ^[0-9A-Za-z][0-9A-Za-z.+~-]*$ ]] || { echo "bad VERSION: $version" >&2; exit 2; }
command -v zstd >/dev/null || { echo "zstd is needed (apt-get install zstd)" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

mkdir -p "$stage/bin" "$stage/lib/ollama" "$out"
# Embed the version so `ollama --version` and /api/version report it.
sed "s/^VERSION = \"[^\"]*\"/VERSION = \"$version\"/" "$here/bin/ollama" >"$stage/bin/ollama"
grep -q "^VERSION = \"$version\"" "$stage/bin/ollama" || { echo "could not set VERSION" >&2; exit 1; }

cat >"$stage/lib/ollama/README" <<EOF
TEST STAND-IN for Ollama $version, made by tests/standins/ollama/package.sh of the
cynic.cluster collection. The real release keeps its GPU and CPU runner libraries in
this directory; the stand-in needs none: bin/ollama is a standard-library Python 3
script whose generations are deterministic functions of the prompt.
EOF

chmod 0755 "$stage" "$stage/bin" "$stage/lib" "$stage/lib/ollama" "$stage/bin/ollama"
chmod 0644 "$stage/lib/ollama/README"

archive=ollama-linux-amd64.tar.zst
tar --sort=name --format=gnu --mtime=@1767225600 --owner=0 --group=0 --numeric-owner \
    -C "$stage" -c . | zstd -q -19 -T1 --no-progress -f -o "$out/$archive"
(cd "$out" && sha256sum "./$archive" >sha256sum.txt)

echo "$out/$archive"
echo "$out/sha256sum.txt"
