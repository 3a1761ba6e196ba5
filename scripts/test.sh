#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test: unit and integration tests (real PostgreSQL and
# Redis started by the harness on free loopback ports), then the unit tests and the core proxy
# integration tests again under ASan+UBSan, then the fuzz targets for a short bounded time.
# Prints ctest's summary for each stage.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== build (RelWithDebInfo)"
BUILD_DIR=build scripts/build.sh -DNERAVA_BUILD_BENCH=ON
echo "== ctest: unit + integration"
ctest --test-dir build --output-on-failure --timeout 900 -j 2

echo "== build (ASan+UBSan)"
BUILD_DIR=build-asan BUILD_TYPE=Debug scripts/build.sh -DNERAVA_SANITIZE=ON -DNERAVA_BUILD_BENCH=OFF
echo "== ctest: unit tests under ASan+UBSan"
ctest --test-dir build-asan --output-on-failure -L unit -j 2
# Both protocols' data paths, read/write splitting and Redis failover through the sanitized
# proxy (about 3 minutes): the harness fails a test whose proxy printed a sanitizer report, even
# when every client got the right answer. The two think-time tests (a minute of sleeping between
# a write and its read) already ran above.
echo "== ctest: core integration tests against the ASan+UBSan proxy"
PYTEST_ADDOPTS="-k 'not after_think_time'" \
  ctest --test-dir build-asan --output-on-failure -L integration \
  -R 'integration\.test_(pg_proxy|redis_proxy|pg_split|redis_split|failover_redis)$'

echo "== fuzz (bounded)"
scripts/fuzz.sh 30
