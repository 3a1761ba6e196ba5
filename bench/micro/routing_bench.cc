// The routing hot path per statement: classify (libpg_query parse, or the per-worker cache),
// decide the node, look up the watermark for read-your-writes.
#include <chrono>
#include <string>
#include <vector>

#include "alloc_counter.h"
#include "benchmark/benchmark.h"
#include "nerava/routing/router.h"
#include "nerava/routing/sql_classifier.h"
#include "nerava/routing/topology.h"
#include "nerava/routing/watermark.h"

namespace nerava::micro {
namespace {

using routing::RouteClock;

const char* const kStatements[] = {
    "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
    "UPDATE pgbench_accounts SET abalance = abalance + -4021 WHERE aid = 48213;",
    "select o.id, o.total, c.name from orders o join customers c on c.id = o.customer_id "
    "where o.created_at > now() - interval '1 day' and c.region = 'eu' order by o.total desc "
    "limit 50",
    "BEGIN",
};

void BM_ClassifyUncached(benchmark::State& state) {
  const std::string sql = kStatements[state.range(0)];
  AllocScope allocs;
  for (auto _ : state) benchmark::DoNotOptimize(routing::Classify(sql));
  allocs.Report(state);
  state.SetLabel(sql.substr(0, 24));
}
BENCHMARK(BM_ClassifyUncached)->DenseRange(0, 3);

void BM_ClassifyCached(benchmark::State& state) {
  const std::string sql = kStatements[state.range(0)];
  routing::ClassificationCache cache;
  cache.Classify(sql);  // warm: the steady state of a worker
  AllocScope allocs;
  for (auto _ : state) benchmark::DoNotOptimize(cache.Classify(sql));
  allocs.Report(state);
  state.SetLabel(sql.substr(0, 24));
}
BENCHMARK(BM_ClassifyCached)->DenseRange(0, 3);

// The shape of the sandbox: a primary in us-east-1, replicas in eu-west-1 and us-east-1.
struct Fixture {
  Fixture() {
    const auto now = RouteClock::now();
    auto wm = std::make_shared<routing::Watermark>();
    for (int i = 0; i < 1024; ++i) {
      wm->Add(now - std::chrono::milliseconds(250 * (1024 - i)), 1000000 + 8192ull * i);
    }
    topology.watermark = wm;
    auto node = [&](const char* name, const char* region, routing::Role role, uint64_t pos) {
      routing::NodeState n;
      n.name = name;
      n.region = region;
      n.host = "127.0.0.1";
      n.port = 5432;
      n.up = true;
      n.role = role;
      n.position = pos;
      n.lag_bytes = wm->newest().position - pos;
      n.lag_seconds = wm->LagSeconds(pos, now);
      topology.nodes.push_back(n);
    };
    node("pg-use1", "us-east-1", routing::Role::kPrimary, wm->newest().position);
    node("pg-euw1", "eu-west-1", routing::Role::kReplica, wm->newest().position - 4096);
    node("pg-use1b", "us-east-1", routing::Role::kReplica, wm->newest().position);
    topology.primary = 0;
    policy.local_region = "eu-west-1";
    policy.max_lag_seconds = 5;
    policy.max_lag_bytes = 16u << 20;
  }
  routing::ProtocolTopology topology;
  routing::RoutePolicy policy;
};

// state.range(0): 0 = a read, 1 = a write, 2 = a read right after this session wrote
// (read-your-writes consults the watermark).
void BM_RouteDecision(benchmark::State& state) {
  Fixture f;
  routing::SessionRouteState session;
  session.affinity = 7;
  routing::RouteRequest request;
  request.intent.replica_ok = state.range(0) != 1;
  request.session = &session;
  request.topology = &f.topology;
  request.policy = &f.policy;
  if (state.range(0) == 2) session.last_write_ack = RouteClock::now() - std::chrono::seconds(3);
  AllocScope allocs;
  for (auto _ : state) {
    absl::StatusOr<routing::RouteDecision> decision = routing::Route(request);
    benchmark::DoNotOptimize(decision);
  }
  allocs.Report(state);
  state.SetLabel(state.range(0) == 0 ? "read" : (state.range(0) == 1 ? "write" : "read-your-writes"));
}
BENCHMARK(BM_RouteDecision)->DenseRange(0, 2);

void BM_WatermarkLagSeconds(benchmark::State& state) {
  Fixture f;
  const routing::Watermark& wm = *f.topology.watermark;
  const auto now = RouteClock::now();
  uint64_t position = wm.oldest().position;
  const uint64_t span = wm.newest().position - wm.oldest().position;
  AllocScope allocs;
  for (auto _ : state) {
    position = wm.oldest().position + (position * 2654435761u) % span;  // spread the lookups
    benchmark::DoNotOptimize(wm.LagSeconds(position, now));
  }
  allocs.Report(state);
}
BENCHMARK(BM_WatermarkLagSeconds);

void BM_WatermarkSampleAtOrAfter(benchmark::State& state) {
  Fixture f;
  const routing::Watermark& wm = *f.topology.watermark;
  const auto now = RouteClock::now();
  int64_t step = 0;
  AllocScope allocs;
  for (auto _ : state) {
    step = (step + 7919) % 250000;
    benchmark::DoNotOptimize(wm.SampleAtOrAfter(now - std::chrono::milliseconds(step)));
  }
  allocs.Report(state);
}
BENCHMARK(BM_WatermarkSampleAtOrAfter);

}  // namespace
}  // namespace nerava::micro
