// Rounds of measurement, targets interleaved: A round 1, B round 1, A round 2 … so that drift on a
// shared machine (other builds, thermal, page cache) lands on every target alike.
//
//   per round, per target:  connect N ─► warm-up (not recorded) ─► measure ─► drain ─► close
//   per thread:             one poll() loop over its connections
//     closed loop: every connection keeps `depth` ops in flight, start = actual send time
//     open loop:   op i is due at t0 + i/rate and is sent then (to the least busy connection,
//                  or queued when all are at max_in_flight); start = the due time, so time spent
//                  waiting behind a slow reply counts (no coordinated omission)
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nerava_bench/histogram.h"
#include "nerava_bench/workload.h"

namespace nerava::bench {

struct Target {
  std::string name;
  std::string url;
};

struct RunOptions {
  WorkloadOptions workload;
  std::vector<Target> targets;
  int connections = 8;
  int threads = 1;
  int depth = 1;               // closed loop: ops in flight per connection
  double rate = 0;             // open loop when > 0: ops per second over all connections
  int max_in_flight = 64;      // open loop: per connection, then the op waits in a queue
  int rounds = 3;
  double warmup_seconds = 1;
  double duration_seconds = 5;
  double drain_seconds = 2;    // after a round: how long in-flight ops may still finish
  double max_seconds = 900;    // refuse plans longer than this
  bool progress = true;
};

struct RoundResult {
  double seconds = 0;
  uint64_t ops = 0;
  double ops_per_second = 0;
};

struct TargetResult {
  Target target;
  LatencyHistogram latency;  // all rounds merged
  std::vector<RoundResult> rounds;
  uint64_t errors = 0;
  uint64_t timeouts = 0;  // open loop: still unanswered after the drain (recorded at drain end)
  uint64_t stale = 0;     // read-after-write: the row was not visible
  std::string first_error;
  double median_ops_per_second() const;
};

// Planned wall time (without connection set-up).
double PlannedSeconds(const RunOptions& options);

absl::StatusOr<std::vector<TargetResult>> Run(const RunOptions& options);

}  // namespace nerava::bench
