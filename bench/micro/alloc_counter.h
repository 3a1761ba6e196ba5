// Counts heap allocations in the whole nerava-micro process (a replaced global operator new),
// so each benchmark can report allocations per op next to ns/op.
#pragma once

#include <cstdint>

#include "benchmark/benchmark.h"

namespace nerava::micro {

uint64_t AllocationCount();

// Measures allocations between construction and Report(); use around the timed loop.
class AllocScope {
 public:
  AllocScope() : start_(AllocationCount()) {}
  void Report(benchmark::State& state) const {
    const double allocs = static_cast<double>(AllocationCount() - start_);
    state.counters["allocs/op"] =
        benchmark::Counter(allocs, benchmark::Counter::kAvgIterations);
  }

 private:
  uint64_t start_;
};

}  // namespace nerava::micro
