#!/usr/bin/env bash
# build-image.sh IMAGE [SUITE] -- build a lab/molecule base image (Debian with systemd as PID 1)
# when it is absent. SUITE is a Debian code name: bookworm (Debian 12, the default) or trixie
# (Debian 13). No registry is reachable here, so the image is made with debootstrap and
# `docker import`. The mirror is read from the host's own apt sources (the same mirror serves
# every suite): no host name is written in this repo.
set -euo pipefail
IMAGE=${1:-cynic-lab/debian12:latest}
SUITE=${2:-bookworm}
case "$SUITE" in
  bookworm | trixie) ;;
  *) echo "unsupported suite: $SUITE (bookworm or trixie)" >&2; exit 2 ;;
esac
if docker image inspect "$IMAGE" >/dev/null 2>&1; then exit 0; fi

mirror() {
  local f
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    [ -f "$f" ] || continue
    # deb822 "URIs: X" or one-line "deb X <suite> main" (any suite: the host's own is bookworm)
    sed -n -E 's/^URIs:[[:space:]]*([^[:space:]]+).*/\1/p; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+[a-z]+[[:space:]].*/\2/p' "$f" \
      | grep -v -- '-security' | head -n 1
  done | head -n 1
}
MIRROR=$(mirror)
[ -n "$MIRROR" ] || { echo "no Debian mirror found in the host's apt sources" >&2; exit 1; }
command -v debootstrap >/dev/null || { apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null; }
[ -e "/usr/share/debootstrap/scripts/$SUITE" ] || { echo "this debootstrap has no script for $SUITE" >&2; exit 1; }

ROOTFS=$(mktemp -d /var/tmp/cynic-rootfs.XXXXXX)
LOG=/var/tmp/cynic-debootstrap-$SUITE.log
trap 'rm -rf "$ROOTFS"' EXIT
echo "==> debootstrap $SUITE from the host's mirror into $ROOTFS (about a minute)"
debootstrap --variant=minbase \
  --include=python3,python3-apt,python3-venv,systemd,systemd-sysv,dbus,ca-certificates,iproute2,procps,curl,zstd,sudo \
  "$SUITE" "$ROOTFS" "$MIRROR" >"$LOG" 2>&1 \
  || { tail -n 30 "$LOG" >&2; exit 1; }
# Containers reach HTTPS indexes only when they trust the host's CA bundle.
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$ROOTFS/usr/local/share/ca-certificates/host-bundle.crt"
chroot "$ROOTFS" update-ca-certificates >/dev/null 2>&1 || true
# systemd in a container: nothing to do on the console, no getty.
chroot "$ROOTFS" systemctl mask getty@tty1.service console-getty.service systemd-firstboot.service >/dev/null 2>&1 || true
rm -f "$ROOTFS/etc/machine-id"; touch "$ROOTFS/etc/machine-id"
chroot "$ROOTFS" apt-get clean
echo "==> docker import $IMAGE"
tar -C "$ROOTFS" -c . | docker import -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' - "$IMAGE" >/dev/null
