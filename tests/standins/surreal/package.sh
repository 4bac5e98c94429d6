#!/usr/bin/env bash
# Package the TEST STAND-IN `surreal` like an official SurrealDB release:
#   OUTDIR/surreal-vVERSION.linux-amd64.tgz  one file `surreal` (0755) at the archive root
#   OUTDIR/surreal-vVERSION.linux-amd64.txt  its sha256, hash only, as the official release
#                                            writes it: echo $(shasum -a 256 FILE | cut -f1 -d' ')
# The archive is deterministic (sorted, fixed mtime, owner 0, gzip without a timestamp) so its
# checksum is the same on every run. The packaged script reports VERSION from `surreal version`,
# so roles that compare the installed version against the wanted one see what they expect.
set -euo pipefail

usage() { echo "usage: $0 OUTDIR [VERSION]   (VERSION defaults to 2.3.7)" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
outdir=$1
version=${2:-2.3.7}
version=${version#v}
[[ $version =~ ^[0-9A-Za-z.+-]+$ ]] || { echo "invalid VERSION: $version" >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
name="surreal-v${version}.linux-amd64"
mtime="@${SOURCE_DATE_EPOCH:-1577836800}"  # 2020-01-01T00:00:00Z unless the caller pins another

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
sed "s/^VERSION = \".*\"$/VERSION = \"${version}\"/" "$here/surreal" > "$stage/surreal"
grep -qx "VERSION = \"${version}\"" "$stage/surreal" || { echo "could not stamp the version" >&2; exit 1; }
chmod 0755 "$stage/surreal"

mkdir -p "$outdir"
tar --create --directory "$stage" --format=gnu --sort=name --mtime="$mtime" \
    --owner=0 --group=0 --numeric-owner --mode=0755 surreal \
  | gzip -9 -n > "$outdir/$name.tgz"
sha256sum "$outdir/$name.tgz" | cut -d' ' -f1 > "$outdir/$name.txt"
echo "$outdir/$name.tgz"
