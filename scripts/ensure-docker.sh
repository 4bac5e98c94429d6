#!/usr/bin/env bash
# Make sure a Docker engine answers. These machines have the docker CLI but no engine and no
# systemd as PID 1, so install Debian's docker.io and start dockerd in the background.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "==> installing Debian's docker.io"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null
fi
if ! pgrep -x dockerd >/dev/null; then
  echo "==> starting dockerd (log: /var/log/dockerd.log)"
  nohup dockerd >/var/log/dockerd.log 2>&1 &
fi
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "dockerd did not answer within 60 s; see /var/log/dockerd.log" >&2
exit 1
