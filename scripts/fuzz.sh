#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each through ctest for a bounded time
# (seconds per target, default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNERAVA_FUZZ=ON \
  -DNERAVA_BUILD_BENCH=OFF -DNERAVA_FUZZ_SECONDS="$seconds" >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target pg_decoder_fuzz redis_decoder_fuzz
ctest --test-dir build-fuzz -L fuzz --output-on-failure
