#!/bin/bash
# Container HEALTHCHECK without curl: GET $1 (default /healthz) from the admin HTTP listener at
# $NERAVA_HEALTH_ADDR (host:port, default 127.0.0.1:9187) and succeed only on HTTP 200.
# bash's /dev/tcp keeps the runtime image free of an HTTP client; `timeout` bounds a stuck peer.
set -euo pipefail
path=${1:-/healthz}
addr=${NERAVA_HEALTH_ADDR:-127.0.0.1:9187}
host=${addr%:*}
port=${addr##*:}
[ "$host" = "0.0.0.0" ] && host=127.0.0.1
exec timeout 2 bash -c '
  { exec 3<>"/dev/tcp/$0/$1"; } 2>/dev/null || {
    echo "nerava-proxy health: cannot connect to $0:$1" >&2; exit 1; }
  printf "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" "$2" "$0" >&3
  IFS= read -r status <&3
  # Read the rest (bounded) so the server sees an orderly close, not a reset.
  timeout 1 cat <&3 >/dev/null || true
  case "$status" in
    "HTTP/1."?" 200 "*) exit 0 ;;
    *) echo "nerava-proxy health: ${status:-no answer}" >&2; exit 1 ;;
  esac' "$host" "$port" "$path"
