#!/usr/bin/env bash
# `make lab` / `make lab-down`: the whole cluster in one local systemd container.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=cynic-lab
IMAGE=${IMAGE:-cynic-lab/debian12:latest}
LB_PORT=${CYNIC_LAB_PORT:-18080}  # published on the host's loopback only
LB_TLS_PORT=${CYNIC_LAB_TLS_PORT:-18443}
LAB_CA="$ROOT/.cache/lab-ca/ca.crt"  # the lab's test CA (inventories/lab, tests/standins/prepare.yml)
cd "$ROOT"

down() {
  docker rm -f "$NAME" >/dev/null 2>&1 && echo "lab: removed container $NAME" || echo "lab: nothing to remove"
}

up() {
  if [ "$(docker inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" != "true" ]; then
    docker rm -f "$NAME" >/dev/null 2>&1 || true
    echo "==> starting lab container $NAME"
    docker run -d --name "$NAME" --hostname "$NAME" \
      --cap-add SYS_ADMIN --cgroupns host --security-opt seccomp=unconfined \
      --tmpfs /run --tmpfs /run/lock -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
      -v "$ROOT/.cache/wheelhouse:/opt/wheelhouse:ro" \
      -p "127.0.0.1:$LB_PORT:80" -p "127.0.0.1:$LB_TLS_PORT:443" \
      "$IMAGE" /lib/systemd/systemd >/dev/null
  fi
  echo "==> preparing the stand-ins (lab only)"
  .venv/bin/ansible-playbook -i inventories/lab tests/standins/prepare.yml
  echo "==> ansible-playbook -i inventories/lab playbooks/site.yml"
  .venv/bin/ansible-playbook -i inventories/lab playbooks/site.yml
  summary
}

summary() {
  echo
  echo "== CYNIC lab: what runs in container $NAME =="
  docker exec "$NAME" sh -c 'systemctl list-units --no-legend --plain "surrealdb*" "ollama*" "cynic@*" "nginx*" | sed "s/^/  /"'
  if docker exec "$NAME" test -x /usr/local/bin/surreal; then
    echo "  SurrealDB: $(docker exec "$NAME" curl -s -o /dev/null -w '%{http_code}' --cacert /etc/surrealdb/tls/ca.crt https://127.0.0.1:8000/health) from /health at https://127.0.0.1:8000 inside the container (TLS, lab CA)"
  fi
  if docker exec "$NAME" grep -qs "upstream cynic" /etc/nginx/nginx.conf; then
    echo "  Load balancer: http://127.0.0.1:$LB_PORT and https://127.0.0.1:$LB_TLS_PORT (curl --cacert $LAB_CA)"
    echo "  Try: curl -s -X POST http://127.0.0.1:$LB_PORT/judge -H 'Content-Type: application/json' \\"
    echo "         -d '{\"content\": \"def add(a, b): return a + b\", \"reality\": \"CODE\"}'"
  fi
  echo "  Shell: docker exec -it $NAME bash      Remove: make lab-down"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  summary) summary ;;
  *) echo "usage: $0 up|down|summary" >&2; exit 2 ;;
esac
