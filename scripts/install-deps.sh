#!/usr/bin/env bash
# Installs every Debian 12 package the build, the tests, the sandbox and the benchmarks need.
# Idempotent and quiet when everything is already there.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev git
  # libraries (Boost 1.81 replaces libboost-dev 1.74: never install both)
  libboost1.81-dev libpq-dev libhiredis-dev libssl-dev libyaml-cpp-dev prometheus-cpp-dev
  libspdlog-dev libabsl-dev libpg-query-dev googletest libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libcli11-dev
  # real servers and clients for tests and the sandbox
  postgresql postgresql-contrib postgresql-client redis-server redis-tools
  python3 python3-psycopg python3-redis python3-pytest openssl curl procps iproute2
  # peers for bench/compare.sh (Pgpool-II, twemproxy): it starts its own instances on free ports
  pgbouncer haproxy pgpool2 nutcracker
  # promtool for scripts/check-deploy.sh (alert rules: check + unit tests)
  prometheus
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
