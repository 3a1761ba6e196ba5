// nerava-micro: Google Benchmark micro benchmarks of the codecs and the routing policy.
//   build-bench/bench/nerava-micro --benchmark_min_time=0.2
#include "benchmark/benchmark.h"

BENCHMARK_MAIN();
