#!/usr/bin/env bash
# Installs, builds, and runs nerava-proxy in front of a local two-region sandbox on loopback:
#   PostgreSQL primary "us-east-1" + streaming replica "eu-west-1", Redis primary + replica.
# The proxy runs in the foreground on config/examples/sandbox.yaml; Ctrl-C stops everything.
#
# Fixed sandbox ports (override with the variables):
#   proxy   SANDBOX_PG_RW_PORT=6432 SANDBOX_PG_RO_PORT=6433 SANDBOX_REDIS_PORT=6379 SANDBOX_HTTP_PORT=9187
#   servers SANDBOX_PG_PRIMARY_PORT=15432 SANDBOX_PG_REPLICA_PORT=15433
#           SANDBOX_REDIS_PRIMARY_PORT=16379 SANDBOX_REDIS_REPLICA_PORT=16380
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
echo "sandbox: building (first build takes a few minutes)"
BUILD_DIR=build scripts/build.sh -DNERAVA_BUILD_BENCH=OFF >/dev/null

pg_rw=${SANDBOX_PG_RW_PORT:-6432}
pg_ro=${SANDBOX_PG_RO_PORT:-6433}
redis_port=${SANDBOX_REDIS_PORT:-6379}
http_port=${SANDBOX_HTTP_PORT:-9187}
pg_ports="${SANDBOX_PG_PRIMARY_PORT:-15432},${SANDBOX_PG_REPLICA_PORT:-15433}"
redis_ports="${SANDBOX_REDIS_PRIMARY_PORT:-16379},${SANDBOX_REDIS_REPLICA_PORT:-16380}"

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$pg_rw" "$pg_ro" "$redis_port" "$http_port"; do
  if port_taken "$port"; then
    echo "sandbox: port $port on 127.0.0.1 is already in use (another PostgreSQL, Redis or proxy?)." >&2
    echo "sandbox: stop it, or choose other ports with SANDBOX_PG_RW_PORT, SANDBOX_PG_RO_PORT," >&2
    echo "         SANDBOX_REDIS_PORT, SANDBOX_HTTP_PORT." >&2
    exit 1
  fi
done

run_dir=$(mktemp -d /tmp/nerava-sandbox.XXXXXX)
chmod 0755 "$run_dir"
harness_pid=""
proxy_pid=""
cleanup() {
  trap - EXIT INT TERM
  [ -n "$proxy_pid" ] && kill -TERM "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null
  [ -n "$harness_pid" ] && kill -TERM "$harness_pid" 2>/dev/null && wait "$harness_pid" 2>/dev/null
  rm -rf "$run_dir"
  echo "sandbox: stopped"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "sandbox: starting PostgreSQL primary + replica and Redis primary + replica"
/usr/bin/python3 tests/harness/topology.py up --pg-ports "$pg_ports" --redis-ports "$redis_ports" \
  --env-file "$run_dir/env" >"$run_dir/harness.log" 2>&1 &
harness_pid=$!
for _ in $(seq 1 240); do
  [ -s "$run_dir/env" ] && break
  if ! kill -0 "$harness_pid" 2>/dev/null; then
    cat "$run_dir/harness.log" >&2
    harness_pid=""
    exit 1
  fi
  sleep 0.5
done
[ -s "$run_dir/env" ] || { echo "sandbox: servers did not start in 120 s" >&2; exit 1; }
set -a
# shellcheck disable=SC1091
. "$run_dir/env"
set +a
export PGPASSWORD=nerava-secret

# The example config with this run's listen ports.
sed -e "s/127.0.0.1:6432/127.0.0.1:$pg_rw/; s/127.0.0.1:6433/127.0.0.1:$pg_ro/" \
    -e "s/127.0.0.1:6379/127.0.0.1:$redis_port/; s/127.0.0.1:9187/127.0.0.1:$http_port/" \
    config/examples/sandbox.yaml >"$run_dir/sandbox.yaml"

cat <<MSG

nerava-proxy sandbox is up. Point the application at the proxy:

  DATABASE_URL=postgresql://nerava:nerava-secret@127.0.0.1:$pg_rw/nerava
  READ_DATABASE_URL=postgresql://nerava:nerava-secret@127.0.0.1:$pg_ro/nerava
  REDIS_URL=redis://127.0.0.1:$redis_port/0

  psql "postgresql://nerava:nerava-secret@127.0.0.1:$pg_rw/nerava" -c 'select 1'
  metrics:  curl -s 127.0.0.1:$http_port/metrics
  admin:    build/proxy/nerava-proxyctl --socket $SANDBOX_DIR/admin.sock status
  servers:  PostgreSQL $pg_ports, Redis $redis_ports (primary,replica)

Ctrl-C stops the proxy and the servers.
MSG

build/proxy/nerava-proxy --config "$run_dir/sandbox.yaml" &
proxy_pid=$!
wait "$proxy_pid"
