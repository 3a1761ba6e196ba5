// nerava-bench: latency and throughput of PostgreSQL / Redis targets, side by side.
//
//   nerava-bench --workload pg-select -c 8 --rounds 3 --duration 5
//       --target direct=postgresql://u:p@127.0.0.1:5432/db
//       --target nerava=postgresql://u:p@127.0.0.1:6432/db --baseline direct
//       --json out.json --svg out.svg
//
// The table goes to stdout, progress to stderr. Closed loop by default; --rate R is an open
// loop at R ops/s whose latencies count from each op's intended send time.
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "nerava_bench/report.h"
#include "nerava_bench/runner.h"

namespace nb = nerava::bench;

int main(int argc, char** argv) {
  CLI::App app{"nerava-bench: closed- and open-loop latency benchmark for PostgreSQL and Redis"};
  app.option_defaults()->always_capture_default();  // --help shows the defaults
  nb::RunOptions options;
  std::string workload = "pg-select";
  std::vector<std::string> targets;
  std::string baseline;
  std::string json_path;
  std::string svg_path;
  bool quiet = false;

  const std::map<std::string, nb::Workload> workloads = {
      {"pg-select", nb::Workload::kPgSelect},
      {"pg-insert", nb::Workload::kPgInsert},
      {"pg-mixed", nb::Workload::kPgMixed},
      {"pg-read-after-write", nb::Workload::kPgReadAfterWrite},
      {"redis-get", nb::Workload::kRedisGet},
      {"redis-set", nb::Workload::kRedisSet},
      {"redis-mixed", nb::Workload::kRedisMixed},
      {"redis-pipeline", nb::Workload::kRedisPipeline},
  };
  app.add_option("-w,--workload", workload,
                 "pg-select (needs pgbench -i), pg-insert, pg-mixed (90/10), "
                 "pg-read-after-write, redis-get, redis-set, redis-mixed (90/10), redis-pipeline")
      ->check(CLI::IsMember(workloads));
  app.add_option("-t,--target", targets,
                 "name=URL (postgresql://user:pass@host:port/db or redis://host:port); repeat")
      ->required();
  app.add_option("--baseline", baseline, "target the ratios are relative to (default: first)");
  app.add_option("-c,--connections", options.connections, "connections per target")
      ->check(CLI::Range(1, 4096));
  app.add_option("--threads", options.threads, "client threads (one poll loop each)")
      ->check(CLI::Range(1, 64));
  app.add_option("--depth", options.depth,
                 "closed loop: requests in flight per connection (redis-pipeline: e.g. 16)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--rate", options.rate,
                 "open loop: total requests per second (0 = closed loop)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-in-flight", options.max_in_flight,
                 "open loop: requests per connection before new ones queue in the client")
      ->check(CLI::Range(1, 100000));
  app.add_option("--rounds", options.rounds, "rounds; targets take turns within each round")
      ->check(CLI::Range(1, 1000));
  app.add_option("--warmup", options.warmup_seconds, "seconds per round not recorded")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--duration", options.duration_seconds, "seconds recorded per round")
      ->check(CLI::Range(0.1, 3600.0));
  app.add_option("--drain", options.drain_seconds,
                 "seconds to wait for replies after a round (then: timeouts)")
      ->check(CLI::Range(0.1, 600.0));
  app.add_option("--max-seconds", options.max_seconds, "refuse plans longer than this")
      ->check(CLI::PositiveNumber);
  app.add_flag("--prepared", options.workload.pg_prepared,
               "PostgreSQL: named prepared statements (default: unnamed, parsed each time)");
  app.add_option("--keys", options.workload.redis_keys, "Redis key space (filled before the run)")
      ->check(CLI::Range(1, 100000000));
  app.add_option("--value-size", options.workload.redis_value_size, "Redis SET value bytes")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--json", json_path, "write results as JSON");
  app.add_option("--svg", svg_path, "write a latency-by-percentile plot");
  app.add_flag("-q,--quiet", quiet, "no progress on stderr");
  CLI11_PARSE(app, argc, argv);

  options.workload.workload = workloads.at(workload);
  options.progress = !quiet;
  if (options.workload.workload == nb::Workload::kRedisPipeline && options.depth == 1) {
    options.depth = 16;
  }
  for (const std::string& spec : targets) {
    const size_t eq = spec.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::fprintf(stderr, "nerava-bench: --target wants name=URL, got '%s'\n", spec.c_str());
      return 2;
    }
    options.targets.push_back({spec.substr(0, eq), spec.substr(eq + 1)});
  }
  if (!baseline.empty()) {
    bool found = false;
    for (const nb::Target& t : options.targets) found = found || t.name == baseline;
    if (!found) {
      std::fprintf(stderr, "nerava-bench: --baseline %s is not a target\n", baseline.c_str());
      return 2;
    }
  }

  // One-time set-up through the first target (writes reach the primary whichever it is).
  const std::string& setup_url = options.targets.front().url;
  const absl::Status prepared = nb::IsPostgres(options.workload.workload)
                                    ? nb::PreparePg(setup_url, options.workload)
                                    : nb::PrepareRedis(setup_url, options.workload);
  if (!prepared.ok()) {
    std::fprintf(stderr, "nerava-bench: set-up failed: %s\n", prepared.ToString().c_str());
    return 1;
  }
  if (options.progress) {
    std::fprintf(stderr, "nerava-bench: %s, %d connections, %s, %zu targets x %d rounds, ~%.0f s\n",
                 workload.c_str(), options.connections,
                 options.rate > 0 ? "open loop" : "closed loop", options.targets.size(),
                 options.rounds, nb::PlannedSeconds(options));
  }

  absl::StatusOr<std::vector<nb::TargetResult>> results = nb::Run(options);
  if (!results.ok()) {
    std::fprintf(stderr, "nerava-bench: %s\n", results.status().ToString().c_str());
    return 1;
  }
  const int base = nb::BaselineIndex(*results, baseline);
  std::fputs(nb::MarkdownTable(*results, base).c_str(), stdout);
  int rc = 0;
  for (const nb::TargetResult& r : *results) {
    if (!r.first_error.empty()) {
      std::fprintf(stderr, "nerava-bench: %s: first error: %s\n", r.target.name.c_str(),
                   r.first_error.c_str());
    }
    if (r.latency.count() == 0) rc = 1;  // a target that answered nothing is a failed run
  }
  if (!json_path.empty()) {
    if (absl::Status s = nb::WriteFile(json_path, nb::Json(options, *results, base)); !s.ok()) {
      std::fprintf(stderr, "nerava-bench: %s\n", s.ToString().c_str());
      rc = 1;
    }
  }
  if (!svg_path.empty()) {
    if (absl::Status s = nb::WriteFile(svg_path, nb::Svg(options, *results)); !s.ok()) {
      std::fprintf(stderr, "nerava-bench: %s\n", s.ToString().c_str());
      rc = 1;
    }
  }
  return rc;
}
