#!/usr/bin/env bash
# Side-by-side comparison of nerava-proxy with direct connections and the proxies people would
# otherwise run, on this machine, in one run.
#
#   harness topology (free ports)            targets
#   ┌────────────────────────────┐   pg:    direct (primary), direct-replica (the replica, read
#   │                             │          tests only), nerava (rw listener: reads to
#   │ pg primary ──WAL──▶ replica │          the eu-west-1 replica; nerava-1w: the same with
#   │                             │          `workers: 1`), pgbouncer (session mode,
#   │ redis primary ─▶ replica    │          primary), haproxy (tcp, primary), pgpool (load
#   └────────────────────────────┘          balancing to the replica)
#                                    redis: direct (primary), nerava, nerava-1w, haproxy,
#                                           twemproxy
#
# Runs pgbench -S (simple, extended, prepared) at -c 1 and -c 16, pgbench TPC-B at -c 8,
# redis-benchmark GET/SET -c 50 at -P 1 and -P 16, and nerava-bench; targets take turns inside
# every round (A, B, C, A, B, C, ...) so drift on a shared machine hits all of them alike.
# Prints one markdown table of medians, writes it with JSON, plots and a machine description to
# bench/results/<date>-<host>.md. Missing peers are skipped with a reason. Never fails on timing.
#
# Usage: bench/compare.sh [--quick] [--rounds N] [--only REGEX] [--no-build] [--build-dir DIR]
#   --quick      short run (2 rounds of 2 s tests): a smoke test of the whole comparison
#   --rounds N   rounds per test (default 3; --quick: 2)
#   --only REGEX only the tests whose name matches (grep -E), e.g. 'TPC-B' or '-c 16|GET'
#   --no-build   use the binaries already in the build dir
#   NERAVA_BENCH_SCALE  pgbench scale (default 10; --quick: 1)
set -euo pipefail
# The whole script is one block, read before it runs: editing the file during a run is harmless.
{
cd "$(dirname "$0")/.."
repo=$(pwd)

quick=0
rounds=""
only=""
build=1
build_dir="$repo/build-bench"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --rounds) rounds="$2"; shift ;;
    --only) only="$2"; shift ;;
    --no-build) build=0 ;;
    --build-dir) build_dir="$2"; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "compare: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$quick" = 1 ]; then
  rounds=${rounds:-2}; pg_seconds=2; warmup_seconds=1; redis_n1=20000; redis_n16=100000
  nb_duration=1.5; nb_warmup=0.5; scale=${NERAVA_BENCH_SCALE:-1}
else
  rounds=${rounds:-3}; pg_seconds=10; warmup_seconds=2; redis_n1=100000; redis_n16=500000
  nb_duration=5; nb_warmup=1; scale=${NERAVA_BENCH_SCALE:-10}
fi

log() { echo "compare: $*" >&2; }
selected() { [ -z "$only" ] || grep -Eq -e "$only" <<<"$1"; }  # test name
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
# The tree the run started from (files edited during a long run do not count).
commit_at_start=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')
changed_at_start=$(git -C "$repo" diff --name-only HEAD 2>/dev/null | head -4 | paste -sd, - | sed 's/,/, /g')

# ---------------------------------------------------------------------------------------------
# Build (incremental; a fresh clone builds nerava-proxy and nerava-bench in Release).
proxy_bin="$build_dir/proxy/nerava-proxy"
bench_bin="$build_dir/bench/nerava-bench"
if [ "$build" = 1 ]; then
  log "building nerava-proxy and nerava-bench in $build_dir"
  [ -f "$build_dir/build.ninja" ] ||
    cmake -S "$repo" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DNERAVA_BUILD_TESTS=OFF -DNERAVA_BUILD_BENCH=ON >/dev/null
  cmake --build "$build_dir" --target nerava-proxy nerava-bench -j "${NERAVA_BENCH_JOBS:-1}" \
    >/dev/null
fi
for bin in "$proxy_bin" "$bench_bin"; do
  [ -x "$bin" ] || { log "missing $bin (run without --no-build)"; exit 1; }
done
for tool in pgbench psql redis-benchmark redis-cli /usr/bin/python3; do
  command -v "$tool" >/dev/null || { log "$tool is required (scripts/install-deps.sh)"; exit 1; }
done

# ---------------------------------------------------------------------------------------------
# Everything started here is torn down on any exit.
run_dir=$(mktemp -d /tmp/nerava-compare.XXXXXX)
chmod 0755 "$run_dir"
declare -A pids=()  # name -> pid of what we started
cleanup() {
  trap - EXIT INT TERM
  local name
  for name in "${!pids[@]}"; do
    [ "$name" = harness ] && continue
    kill -TERM "${pids[$name]}" 2>/dev/null || true
  done
  for name in "${!pids[@]}"; do
    [ "$name" = harness ] && continue
    wait "${pids[$name]}" 2>/dev/null || true
  done
  # The harness stops the servers on SIGTERM (pg_ctl stop, redis shutdown).
  if [ -n "${pids[harness]:-}" ]; then
    kill -TERM "${pids[harness]}" 2>/dev/null || true
    wait "${pids[harness]}" 2>/dev/null || true
  fi
  rm -rf "$run_dir"
  log "stopped everything"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# Waits up to $2 seconds (wall clock) for command $1 (a string) to succeed.
wait_for() {
  local deadline=$((SECONDS + $2))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if eval "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------------------------------------
# Servers.
log "starting PostgreSQL primary + replica and Redis primary + replica (harness)"
# Debian's interpreter, as scripts/sandbox.sh: the harness needs python3-psycopg from apt.
/usr/bin/python3 tests/harness/topology.py up --env-file "$run_dir/env" >"$run_dir/harness.log" 2>&1 &
pids[harness]=$!
if ! wait_for "test -s '$run_dir/env'" 120; then
  cat "$run_dir/harness.log" >&2
  log "servers did not start"
  exit 1
fi
set -a
# shellcheck disable=SC1091
. "$run_dir/env"
set +a
export PGPASSWORD=nerava-secret
pg_primary=$SANDBOX_PG_PRIMARY_PORT
pg_replica=$SANDBOX_PG_REPLICA_PORT
redis_primary=$SANDBOX_REDIS_PRIMARY_PORT
pg_url() { echo "postgresql://nerava:nerava-secret@127.0.0.1:$1/nerava"; }

log "pgbench -i -s $scale on the primary"
pgbench -i -q -s "$scale" "$(pg_url "$pg_primary")" >"$run_dir/pgbench-init.log" 2>&1
# The replica must have the tables before anything reads there.
primary_lsn=$(psql -Atq "$(pg_url "$pg_primary")" -c 'select pg_current_wal_lsn()')
wait_for "psql -Atq '$(pg_url "$pg_replica")' -c \"select pg_last_wal_replay_lsn() >= '$primary_lsn'\" | grep -q t" 60 ||
  log "warning: replica has not replayed pgbench -i after 60 s"

# ---------------------------------------------------------------------------------------------
# Targets: name, then the ports it listens on. Each starts in the foreground as a child of this
# script so the trap can stop it.
declare -A pg_port=([direct]=$pg_primary [direct-replica]=$pg_replica)
declare -A redis_port=([direct]=$redis_primary)
# direct-replica: what a read costs on the node nerava-proxy sends it to (a standby serves the
# same SELECT slower than the primary), for read-only tests.
pg_targets=(direct direct-replica)
redis_targets=(direct)
skipped=()
as_unprivileged=()
if [ "$(id -u)" = 0 ]; then as_unprivileged=(runuser -u postgres --); fi

# Both poolers keep an idle server connection for PgBouncer's default server_idle_timeout (600 s),
# longer than a round: with the sandbox's 60 s nerava-proxy's pool went cold between a round's
# tests while PgBouncer's stayed warm, and the table compared cold backends with warm ones.
pool_idle_seconds=600

# nerava-proxy: the sandbox config as the eu-west-1 sidecar, read/write splitting on (default).
nerava_rw=$(free_port); nerava_ro=$(free_port); nerava_redis=$(free_port); nerava_http=$(free_port)
sed -e "s/127.0.0.1:6432/127.0.0.1:$nerava_rw/; s/127.0.0.1:6433/127.0.0.1:$nerava_ro/" \
    -e "s/127.0.0.1:6379/127.0.0.1:$nerava_redis/; s/127.0.0.1:9187/127.0.0.1:$nerava_http/" \
    -e "s/^log_level: .*/log_level: warn/" \
    -e "s/^\(  server_idle_timeout:\).*/\1 ${pool_idle_seconds}s/" \
    config/examples/sandbox.yaml >"$run_dir/nerava.yaml"
SANDBOX_DIR=$run_dir REGION=eu-west-1 "$proxy_bin" --config "$run_dir/nerava.yaml" \
  >"$run_dir/nerava.log" 2>&1 &
pids[nerava]=$!
# Ready once it routes a read to the replica (the monitor has seen both nodes). The probe calls
# a stable function: pg_is_in_recovery() is volatile, so a splitting proxy sends it to the primary.
on_replica="-c \"select current_setting('port')\" | grep -qx $pg_replica"
if wait_for "psql -Atq '$(pg_url "$nerava_rw")' $on_replica" 30 &&
   wait_for "redis-cli -p $nerava_redis ping | grep -q PONG" 10; then
  pg_port[nerava]=$nerava_rw; redis_port[nerava]=$nerava_redis
  pg_targets+=(nerava); redis_targets+=(nerava)
else
  tail -20 "$run_dir/nerava.log" >&2
  log "nerava-proxy did not become ready (reads not reaching the replica)"
  exit 1
fi

# The same with one worker thread (`workers: 1`): on a machine where clients, servers and the
# proxy share two cores, one loop that batches many clients' messages can beat two.
w1_rw=$(free_port); w1_ro=$(free_port); w1_redis=$(free_port); w1_http=$(free_port)
mkdir -p "$run_dir/nerava-1w"
{ echo "workers: 1"
  sed -e "s/127.0.0.1:6432/127.0.0.1:$w1_rw/; s/127.0.0.1:6433/127.0.0.1:$w1_ro/" \
      -e "s/127.0.0.1:6379/127.0.0.1:$w1_redis/; s/127.0.0.1:9187/127.0.0.1:$w1_http/" \
      -e "s/^log_level: .*/log_level: warn/" \
      -e "s/^\(  server_idle_timeout:\).*/\1 ${pool_idle_seconds}s/" config/examples/sandbox.yaml
} >"$run_dir/nerava-1w/nerava.yaml"
SANDBOX_DIR=$run_dir/nerava-1w REGION=eu-west-1 "$proxy_bin" \
  --config "$run_dir/nerava-1w/nerava.yaml" >"$run_dir/nerava-1w/nerava.log" 2>&1 &
pids[nerava-1w]=$!
if wait_for "psql -Atq '$(pg_url "$w1_rw")' $on_replica" 30 &&
   wait_for "redis-cli -p $w1_redis ping | grep -q PONG" 10; then
  pg_port[nerava-1w]=$w1_rw; redis_port[nerava-1w]=$w1_redis
  pg_targets+=(nerava-1w); redis_targets+=(nerava-1w)
else
  skipped+=("nerava-1w: did not become ready ($(tail -1 "$run_dir/nerava-1w/nerava.log"))")
fi

# PgBouncer, session mode, in front of the primary. It refuses to run as root.
if command -v pgbouncer >/dev/null; then
  port=$(free_port)
  mkdir -p "$run_dir/pgbouncer"
  printf '"nerava" "nerava-secret"\n' >"$run_dir/pgbouncer/userlist.txt"
  cat >"$run_dir/pgbouncer/pgbouncer.ini" <<EOF
[databases]
nerava = host=127.0.0.1 port=$pg_primary dbname=nerava
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $run_dir/pgbouncer/userlist.txt
pool_mode = session
max_client_conn = 500
default_pool_size = 100
server_idle_timeout = $pool_idle_seconds
logfile = $run_dir/pgbouncer/pgbouncer.log
ignore_startup_parameters = extra_float_digits
EOF
  [ ${#as_unprivileged[@]} -gt 0 ] && chown -R postgres "$run_dir/pgbouncer"
  "${as_unprivileged[@]}" pgbouncer "$run_dir/pgbouncer/pgbouncer.ini" \
    >"$run_dir/pgbouncer/stdout.log" 2>&1 &
  pids[pgbouncer]=$!
  if wait_for "psql -Atq '$(pg_url "$port")' -c 'select 1'" 15; then
    pg_port[pgbouncer]=$port; pg_targets+=(pgbouncer)
  else
    skipped+=("pgbouncer: did not start ($(tail -1 "$run_dir/pgbouncer/pgbouncer.log" 2>/dev/null))")
  fi
else
  skipped+=("pgbouncer: not installed")
fi

# HAProxy, tcp mode, in front of both primaries.
if command -v haproxy >/dev/null; then
  hp_pg=$(free_port); hp_redis=$(free_port)
  cat >"$run_dir/haproxy.cfg" <<EOF
global
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen pg
  bind 127.0.0.1:$hp_pg
  server primary 127.0.0.1:$pg_primary
listen redis
  bind 127.0.0.1:$hp_redis
  server primary 127.0.0.1:$redis_primary
EOF
  haproxy -db -f "$run_dir/haproxy.cfg" >"$run_dir/haproxy.log" 2>&1 &
  pids[haproxy]=$!
  if wait_for "psql -Atq '$(pg_url "$hp_pg")' -c 'select 1'" 15; then
    pg_port[haproxy]=$hp_pg; redis_port[haproxy]=$hp_redis
    pg_targets+=(haproxy); redis_targets+=(haproxy)
  else
    skipped+=("haproxy: did not start ($(tail -1 "$run_dir/haproxy.log"))")
  fi
else
  skipped+=("haproxy: not installed")
fi

# Pgpool-II, streaming-replication mode, reads load-balanced to the replica only (weight 0 on
# the primary), as nerava does for the eu-west-1 pod.
# Ports come from free_port and are bound only when pgpool starts: an outgoing connection can
# take one meanwhile ("failed to create INET domain socket"), so a failed start is retried.
start_pgpool() {
  local d=$1 port pcp
  port=$(free_port); pcp=$(free_port)
  mkdir -p "$d"
  cat >"$d/pgpool.conf" <<EOF
backend_clustering_mode = 'streaming_replication'
listen_addresses = '127.0.0.1'
port = $port
pcp_listen_addresses = '127.0.0.1'
pcp_port = $pcp
unix_socket_directories = '$d'
pcp_socket_dir = '$d'
pid_file_name = '$d/pgpool.pid'
logdir = '$d'
backend_hostname0 = '127.0.0.1'
backend_port0 = $pg_primary
backend_weight0 = 0
backend_flag0 = 'ALLOW_TO_FAILOVER'
backend_hostname1 = '127.0.0.1'
backend_port1 = $pg_replica
backend_weight1 = 1
backend_flag1 = 'ALLOW_TO_FAILOVER'
load_balance_mode = on
num_init_children = 40
max_pool = 1
enable_pool_hba = on
pool_passwd = '$d/pool_passwd'
sr_check_period = 10
sr_check_user = 'nerava'
sr_check_password = 'nerava-secret'
health_check_period = 0
failover_on_backend_error = off
connection_cache = on
log_min_messages = warning
EOF
  printf 'host all all 127.0.0.1/32 scram-sha-256\nlocal all all trust\n' >"$d/pool_hba.conf"
  printf 'nerava:TEXTnerava-secret\n' >"$d/pool_passwd"
  : >"$d/pcp.conf"
  pgpool -n -f "$d/pgpool.conf" -a "$d/pool_hba.conf" -F "$d/pcp.conf" >"$d/pgpool.log" 2>&1 &
  pids[pgpool]=$!
  # Ready once a read lands on the replica.
  if wait_for "psql -Atq '$(pg_url "$port")' $on_replica" 20; then
    pg_port[pgpool]=$port; pg_targets+=(pgpool)
    return 0
  fi
  kill -TERM "${pids[pgpool]}" 2>/dev/null || true
  wait "${pids[pgpool]}" 2>/dev/null || true
  unset 'pids[pgpool]'
  return 1
}
if command -v pgpool >/dev/null; then
  for attempt in 1 2 3; do
    start_pgpool "$run_dir/pgpool-$attempt" && break
    why=$(grep -m1 -iE 'error|fatal' "$run_dir/pgpool-$attempt/pgpool.log" || true)
    log "pgpool did not start (attempt $attempt): $why"
    [ "$attempt" = 3 ] && skipped+=("pgpool: not ready or not load balancing to the replica ($why)")
  done
else
  skipped+=("pgpool: not installed")
fi

# twemproxy (nutcracker) in front of the Redis primary.
if command -v nutcracker >/dev/null; then
  port=$(free_port); stats=$(free_port)
  cat >"$run_dir/nutcracker.yml" <<EOF
nerava:
  listen: 127.0.0.1:$port
  hash: fnv1a_64
  distribution: ketama
  redis: true
  auto_eject_hosts: false
  timeout: 5000
  servers:
    - 127.0.0.1:$redis_primary:1
EOF
  nutcracker -c "$run_dir/nutcracker.yml" -s "$stats" -a 127.0.0.1 -o "$run_dir/nutcracker.log" &
  pids[twemproxy]=$!
  if wait_for "redis-cli -p $port get nerava-probe" 10; then
    redis_port[twemproxy]=$port; redis_targets+=(twemproxy)
  else
    skipped+=("twemproxy: did not start")
  fi
else
  skipped+=("twemproxy: not installed")
fi

for s in "${skipped[@]}"; do log "skipped $s"; done
log "PostgreSQL targets: ${pg_targets[*]}; Redis targets: ${redis_targets[*]}; rounds: $rounds"

# ---------------------------------------------------------------------------------------------
# Measurements: one line per (test, target, round) in results.tsv: test unit target round value.
results="$run_dir/results.tsv"
: >"$results"
clk_tck=$(getconf CLK_TCK)
process_tree() {  # pid: it and its descendants, comma-separated (pgpool's children, runuser's)
  /usr/bin/python3 - "$1" <<'PY' 2>/dev/null
import os, sys
parent = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            parent[int(d)] = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
        except OSError:
            pass
tree, todo = [], [int(sys.argv[1])]
while todo:
    pid = todo.pop()
    tree.append(pid)
    todo += [p for p, pp in parent.items() if pp == pid]
print(",".join(map(str, tree)))
PY
}
cpu_ticks() {  # utime + stime of a pid and all its descendants (runuser, pgpool children)
  /usr/bin/python3 - "$(process_tree "$1")" <<'PY' 2>/dev/null || echo 0
import sys
total = 0
for pid in filter(None, sys.argv[1].split(",")):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    total += int(f[11]) + int(f[12])  # utime + stime
print(total)
PY
}

run_pgbench() {  # test-name target args...
  local test=$1 target=$2; shift 2
  local out pid before after tps txns
  pid=${pids[$target]:-}
  before=0; [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  if ! out=$(pgbench -n -T "$pg_seconds" "$@" "$(pg_url "${pg_port[$target]}")" 2>&1); then
    log "pgbench $test on $target failed: $(echo "$out" | tail -2 | tr '\n' ' ')"
    return 0
  fi
  tps=$(echo "$out" | awk '/^tps = / {print $3; exit}')
  txns=$(echo "$out" | awk '/number of transactions actually processed/ {print $NF; exit}')
  printf '%s\ttps\t%s\t%s\t%s\n' "$test" "$target" "$round" "$tps" >>"$results"
  # Proxy CPU per transaction (single-client simple SELECT: the per-query cost of the proxy).
  if [ -n "$pid" ] && [ "$test" = "pgbench -S simple -c 1" ] && [ "${txns:-0}" -gt 0 ]; then
    after=$(cpu_ticks "$pid")
    awk -v t="$test" -v g="$target" -v r="$round" -v d=$((after - before)) -v n="$txns" \
      -v hz="$clk_tck" 'BEGIN { printf "proxy CPU µs per SELECT (-c 1)\tµs\t%s\t%s\t%.2f\n", g, r, d / hz * 1e6 / n }' \
      >>"$results"
  fi
}

run_redis_benchmark() {  # pipeline target requests
  local pipeline=$1 target=$2 n=$3 out
  if ! out=$(redis-benchmark -h 127.0.0.1 -p "${redis_port[$target]}" -c 50 -n "$n" \
               -P "$pipeline" -t get,set -r 100000 --csv 2>/dev/null); then
    log "redis-benchmark -P $pipeline on $target failed"
    return 0
  fi
  echo "$out" | awk -F'"' -v p="$pipeline" -v g="$target" -v r="$round" \
    '$2 == "GET" || $2 == "SET" { printf "redis-benchmark %s -c 50 -P %s\trps\t%s\t%s\t%s\n", $2, p, g, r, $4 }' \
    >>"$results"
}

pg_tests=(
  "pgbench -S simple -c 1|-S -M simple -c 1 -j 1"
  "pgbench -S extended -c 1|-S -M extended -c 1 -j 1"
  "pgbench -S prepared -c 1|-S -M prepared -c 1 -j 1"
  "pgbench -S simple -c 16|-S -M simple -c 16 -j 2"
  "pgbench -S extended -c 16|-S -M extended -c 16 -j 2"
  "pgbench -S prepared -c 16|-S -M prepared -c 16 -j 2"
  "pgbench TPC-B -c 8|-c 8 -j 2"
)
# Warm-up, not recorded: every pooler opens the server connections each test needs (16 for the
# -c 16 tests, 8 on the primary for TPC-B) before round 1, so no target's first round measures
# connection set-up. nerava-proxy sends -S reads to the replica, so only TPC-B warms its primary
# connections; PgBouncer's pool serves every test on the primary.
reads_only() {  # test-name: does it only read (direct-replica can run it)?
  [[ "$1" == *" -S "* || "$1" == *pg-select* ]]
}
for entry in "${pg_tests[@]}"; do
  args=${entry#*|}
  selected "${entry%%|*}" || continue
  for target in "${pg_targets[@]}"; do
    [ "$target" = direct-replica ] && ! reads_only "${entry%%|*}" && continue
    log "warm-up: ${entry%%|*} → $target"
    # shellcheck disable=SC2086
    pgbench -n -T "$warmup_seconds" $args "$(pg_url "${pg_port[$target]}")" >/dev/null 2>&1 || true
  done
done
for round in $(seq 1 "$rounds"); do
  for entry in "${pg_tests[@]}"; do
    test=${entry%%|*}; args=${entry#*|}
    selected "$test" || continue
    for target in "${pg_targets[@]}"; do
      [ "$target" = direct-replica ] && ! reads_only "$test" && continue
      log "round $round/$rounds: $test → $target"
      # shellcheck disable=SC2086
      run_pgbench "$test" "$target" $args
    done
  done
  for pipeline in 1 16; do
    selected "redis-benchmark GET -c 50 -P $pipeline" ||
      selected "redis-benchmark SET -c 50 -P $pipeline" || continue
    n=$redis_n1; [ "$pipeline" = 16 ] && n=$redis_n16
    for target in "${redis_targets[@]}"; do
      log "round $round/$rounds: redis-benchmark -P $pipeline → $target"
      run_redis_benchmark "$pipeline" "$target" "$n"
    done
  done
done

# ---------------------------------------------------------------------------------------------
# Per-request costs besides CPU time, once per proxy after the rounds (counting tracepoints slows
# the counted process a little, so never during a timed round): system calls and context
# switches of the proxy's processes per request, with `perf stat` when it may count them.
count_per_request() {  # test-label target requests-regex command...: perf stat around command
  local label=$1 target=$2 regex=$3; shift 3
  local pid=${pids[$target]:-} stat="$run_dir/perf-stat.csv" out n
  [ -n "$pid" ] || return 0
  if ! out=$(perf stat -x, -o "$stat" -e raw_syscalls:sys_enter,context-switches \
                -p "$(process_tree "$pid")" -- "$@" 2>&1); then
    skipped+=("system calls per $label on $target: perf stat failed")
    return 0
  fi
  n=$(echo "$out" | grep -oE "$regex" | grep -oE '[0-9]+' | head -1 || true)
  [ "${n:-0}" -gt 0 ] || return 0
  # A `<not counted>` value is no measurement: only numbers make a row.
  awk -F, -v l="$label" -v g="$target" -v n="$n" '
    $1 !~ /^[0-9.]+$/       { next }
    $3 ~ /sys_enter/        { printf "proxy system calls per %s\tcount\t%s\t0\t%.2f\n", l, g, $1 / n }
    $3 ~ /context-switches/ { printf "proxy context switches per %s\tcount\t%s\t0\t%.2f\n", l, g, $1 / n }
  ' "$stat" >>"$results"
}
if command -v perf >/dev/null && perf stat -x, -o /dev/null -e raw_syscalls:sys_enter -- true \
     2>/dev/null; then
  if selected "pgbench -S simple -c 1"; then
    for target in "${pg_targets[@]}"; do
      [ -n "${pids[$target]:-}" ] || continue
      log "system calls per request: pgbench -S simple -c 1 → $target"
      count_per_request "SELECT (-c 1)" "$target" "actually processed: [0-9]+" \
        pgbench -n -T "$pg_seconds" -S -M simple -c 1 -j 1 "$(pg_url "${pg_port[$target]}")"
    done
  fi
  if selected "redis-benchmark GET -c 50 -P 1"; then
    for target in "${redis_targets[@]}"; do
      [ -n "${pids[$target]:-}" ] || continue
      log "system calls per request: redis-benchmark GET -c 50 → $target"
      count_per_request "GET (-c 50)" "$target" "[0-9]+ requests completed" \
        redis-benchmark -h 127.0.0.1 -p "${redis_port[$target]}" -c 50 -n "$redis_n1" -t get \
        -r 100000
    done
  fi
else
  skipped+=("system calls and context switches per request: perf stat cannot count here")
fi

# nerava-bench interleaves targets round by round itself; one run per workload.
nb_common=(--rounds "$rounds" --duration "$nb_duration" --warmup "$nb_warmup" --baseline direct)
nb_targets() {  # pg|redis workload-name
  local t
  if [ "$1" = pg ]; then
    for t in "${pg_targets[@]}"; do
      [ "$t" = direct-replica ] && ! reads_only "$2" && continue
      echo "--target"; echo "$t=$(pg_url "${pg_port[$t]}")"
    done
  else
    for t in "${redis_targets[@]}"; do echo "--target"; echo "$t=redis://127.0.0.1:${redis_port[$t]}"; done
  fi
}
nb_runs=(
  "pg-select-c8|pg|--workload pg-select -c 8"
  "pg-select-open-2000|pg|--workload pg-select -c 8 --rate 2000"
  "pg-read-after-write-c4|pg|--workload pg-read-after-write -c 4"
  "redis-get-c50|redis|--workload redis-get -c 50"
  "redis-pipeline-c8-d16|redis|--workload redis-pipeline -c 8 --depth 16"
)
mkdir -p "$run_dir/nb"
for entry in "${nb_runs[@]}"; do
  IFS='|' read -r name proto args <<<"$entry"
  selected "nerava-bench $name" || continue
  log "nerava-bench $name"
  mapfile -t targets < <(nb_targets "$proto" "$name")
  # shellcheck disable=SC2086
  if ! "$bench_bin" $args "${nb_common[@]}" "${targets[@]}" --json "$run_dir/nb/$name.json" \
         --svg "$run_dir/nb/$name.svg" >"$run_dir/nb/$name.md" 2>"$run_dir/nb/$name.log"; then
    log "nerava-bench $name failed: $(tail -2 "$run_dir/nb/$name.log" | tr '\n' ' ')"
  fi
  /usr/bin/python3 - "$run_dir/nb/$name.json" "$name" "$results" <<'PY' || true
import json, sys
path, name, results = sys.argv[1:4]
doc = json.load(open(path))
with open(results, "a") as out:
    for t in doc["targets"]:
        for i, r in enumerate(t["rounds"]):
            out.write(f"nerava-bench {name}\tops/s\t{t['name']}\t{i + 1}\t{r['ops_per_second']:.1f}\n")
        out.write(f"nerava-bench {name} p99\tµs\t{t['name']}\t0\t{t['latency_us']['p99']:.1f}\n")
        if "read-after-write" in name:  # a read that missed the session's own write
            out.write(f"nerava-bench {name} stale reads\tcount\t{t['name']}\t0\t{t['stale_reads']}\n")
PY
done

# ---------------------------------------------------------------------------------------------
# Report.
stamp=$(date +%Y-%m-%d-%H%M)
host=$(hostname -s 2>/dev/null || hostname)
out_dir=$repo/bench/results
mkdir -p "$out_dir"
base="$out_dir/$stamp-$host"
for f in "$run_dir"/nb/*.svg; do [ -e "$f" ] && cp "$f" "$base-$(basename "$f")"; done

machine=$(
  echo "- cores: $(nproc) ($(lscpu 2>/dev/null | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'))"
  echo "- memory: $(free -h | awk '/^Mem:/ {print $2 " total, " $7 " available"}')"
  echo "- load average (1, 5, 15 min) at the start: $load_start; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- kernel: $(uname -r); PostgreSQL $(pg_config --version 2>/dev/null | awk '{print $2}'), Redis $(redis-server --version 2>/dev/null | awk '{print $3}' | sed 's/^v=//')"
  echo "- nerava-proxy $commit_at_start${changed_at_start:+ (+ uncommitted changes to $changed_at_start)}, $(pgbouncer --version 2>/dev/null | head -1), $(haproxy -v 2>/dev/null | head -1 | awk '{print "HAProxy " $3}'), $(pgpool --version 2>&1 | awk '{print "Pgpool-II " $3}'), $(nutcracker --version 2>&1 | awk '/nutcracker-/ {sub("nutcracker-", "", $NF); print "twemproxy " $NF}')"
)
skipped_text=$(for s in "${skipped[@]}"; do echo "- skipped $s"; done)
quick_flag=""
[ "$quick" = 1 ] && quick_flag=" --quick"  # (an `&&` in $(...) would end a full run under set -e)
command_line="bench/compare.sh$quick_flag --rounds $rounds"
[ -n "$only" ] && command_line+=" --only '$only'"

/usr/bin/python3 - "$results" "$base" "$command_line" "$machine" "$skipped_text" "$run_dir/nb" <<'PY'
import collections, glob, json, os, statistics, sys

results, base, command, machine, skipped, nb_dir = sys.argv[1:7]
rows = collections.OrderedDict()  # test -> {"unit": u, "values": {target: {round: value}}}
for line in open(results):
    test, unit, target, rnd, value = line.rstrip("\n").split("\t")
    try:
        v = float(value)
    except ValueError:
        continue
    rows.setdefault(test, {"unit": unit, "values": collections.OrderedDict()})
    rows[test]["values"].setdefault(target, {})[rnd] = v

order = ["direct", "direct-replica", "nerava", "nerava-1w", "pgbouncer", "haproxy", "pgpool",
         "twemproxy"]
present = [t for t in order if any(t in r["values"] for r in rows.values())]
peers = [t for t in present if t not in ("direct", "nerava", "nerava-1w")]
lower_is_better = {"µs", "count"}

def fmt(v):
    return f"{v:,.0f}" if v >= 100 or v == int(v) else f"{v:.2f}"

def paired_ratios(by_round, a, b):
    """a ÷ b round by round. Targets take turns within a round, so a slow patch of the machine
    that hits a whole round cancels out of these, not out of a ratio of medians."""
    ra, rb = by_round.get(a, {}), by_round.get(b, {})
    return [ra[k] / rb[k] for k in ra if k in rb and rb[k] > 0]

def ratio_cell(ratios):
    """The median paired ratio, with the range over rounds when there are three or more."""
    if not ratios:
        return "–"
    mid = statistics.median(ratios)
    if len(ratios) < 3:
        return f"{mid:.2f}"
    return f"{mid:.2f} ({min(ratios):.2f}–{max(ratios):.2f})"

head = ["test", "unit"] + present + [f"nerava ÷ {p}" for p in peers]
lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * 2 + " ---: |" * (len(head) - 2)]
summary = {}
for test, r in rows.items():
    by_round = r["values"]
    med = {t: statistics.median(v.values()) for t, v in by_round.items()}
    samples = {t: [v[k] for k in sorted(v, key=int)] for t, v in by_round.items()}
    summary[test] = {"unit": r["unit"], "median": med, "samples": samples}
    cells = [test, r["unit"]]
    for t in present:
        if t not in med:
            cells.append("–")
        elif t != "direct" and "direct" in med and r["unit"] not in lower_is_better:
            to_direct = paired_ratios(by_round, t, "direct")
            cells.append(f"{fmt(med[t])} ({statistics.median(to_direct):.2f})" if to_direct
                         else fmt(med[t]))
        else:
            cells.append(fmt(med[t]))
    for p in peers:
        cells.append(ratio_cell(paired_ratios(by_round, "nerava", p)))
    lines.append("| " + " | ".join(cells) + " |")
table = "\n".join(lines)
print(table)

nb_tables = []
for path in sorted(glob.glob(os.path.join(nb_dir, "*.md"))):
    name = os.path.basename(path)[:-3]
    text = open(path).read().strip()
    if text:
        svg = f"{os.path.basename(base)}-{name}.svg"
        nb_tables.append(f"### nerava-bench {name}\n\n{text}\n\n![{name}]({svg})\n")

doc = {"command": command, "machine": machine, "skipped": skipped, "tests": summary}
with open(base + ".json", "w") as f:
    json.dump(doc, f, indent=2, ensure_ascii=False)
with open(base + ".md", "w") as f:
    f.write(f"# nerava-proxy comparison, {os.path.basename(base)}\n\n")
    f.write(f"Command: `{command}`\n\nMachine:\n\n{machine}\n\n{skipped}\n\n")
    f.write("Medians over rounds; in parentheses the ratio to direct (higher is better for tps, "
            "rps and ops/s); `nerava ÷ peer` columns compare nerava-proxy with each peer. "
            "Ratios are medians of per-round ratios (targets take turns within a round, so a "
            "slow patch that hits a whole round cancels out), with their range over the rounds "
            "in parentheses: a range that straddles 1.00 is no difference this run could see. "
            "For µs rows lower is better. nerava-1w is nerava-proxy with `workers: 1` (the "
            "default is one worker per usable core). nerava and pgpool send reads to the replica, the "
            "others to the primary; direct-replica is the client straight at the replica (read-only "
            "tests), so `nerava ÷ direct-replica` is the proxy's own cost on a read. A load average above the core count means other work "
            "shared the machine during the run: compare ratios within one run, not across runs."
            "\n\n")
    f.write(table + "\n\n")
    f.write("\n".join(nb_tables))
    f.write(f"\nRaw samples: `{os.path.basename(base)}.json`.\n")
PY
log "results: ${base#"$repo"/}.md (+ .json, plots)"
exit 0
}
