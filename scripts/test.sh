#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test: unit and integration tests (real PostgreSQL and
# Redis started by the harness on free loopback ports), then the unit tests again under ASan+UBSan,
# then the fuzz targets for a short bounded time. Prints ctest's summary for each stage.
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

echo "== fuzz (bounded)"
scripts/fuzz.sh 30
