#include "nerava/routing/router.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace nerava::routing {
namespace {

using std::chrono::milliseconds;

RouteClock::time_point At(int64_t ms) {
  return RouteClock::time_point{} + std::chrono::hours(1) + milliseconds(ms);
}

NodeState Primary(std::string name, std::string region, uint64_t position) {
  NodeState n;
  n.name = std::move(name);
  n.region = std::move(region);
  n.up = true;
  n.role = Role::kPrimary;
  n.position = position;
  return n;
}

NodeState Replica(std::string name, std::string region, uint64_t position, double lag_seconds,
                  uint64_t lag_bytes, bool up = true) {
  NodeState n;
  n.name = std::move(name);
  n.region = std::move(region);
  n.up = up;
  n.role = Role::kReplica;
  n.position = position;
  n.lag_seconds = lag_seconds;
  n.lag_bytes = lag_bytes;
  return n;
}

ProtocolTopology Topo(std::vector<NodeState> nodes) {
  ProtocolTopology t;
  t.nodes = std::move(nodes);
  for (size_t i = 0; i < t.nodes.size(); ++i) {
    if (t.nodes[i].role == Role::kPrimary) t.primary = static_cast<int>(i);
  }
  return t;
}

// A fake history: the primary position of the first sample at or after t.
class FakeHistory : public PositionHistory {
 public:
  explicit FakeHistory(std::map<int64_t, uint64_t> samples) : samples_(std::move(samples)) {}
  std::optional<uint64_t> PrimaryPositionAtOrAfter(RouteClock::time_point t) const override {
    for (const auto& [ms, position] : samples_) {
      if (At(ms) >= t) return position;
    }
    return std::nullopt;
  }

 private:
  std::map<int64_t, uint64_t> samples_;
};

RouteIntent Read() {
  RouteIntent i;
  i.replica_ok = true;
  return i;
}
RouteIntent Write() { return RouteIntent{}; }

struct Case {
  const char* name;
  std::vector<NodeState> nodes;
  RouteIntent intent;
  SessionRouteState session;
  RoutePolicy policy;
  Listener listener;
  int want_node;  // -1: Unavailable
  RouteReason want_reason;
  bool want_read_only = false;
};

// Primary "p" at position 1000; samples: t=100 → 900, t=200 → 1000.
const FakeHistory kHistory({{100, 900}, {200, 1000}});

RoutePolicy Policy(std::optional<double> seconds = 5.0, std::optional<uint64_t> bytes = 1 << 20) {
  return RoutePolicy{"eu", seconds, bytes};
}

SessionRouteState WroteAt(int64_t ms) {
  SessionRouteState s;
  s.last_write_ack = At(ms);
  return s;
}

std::vector<Case> Cases() {
  using RR = RouteReason;
  const Listener rw = Listener::kReadWrite;
  const Listener ro = Listener::kReadOnly;
  NodeState p = Primary("p", "eu", 1000);
  NodeState eu1 = Replica("eu1", "eu", 1000, 0.1, 0);
  NodeState eu2 = Replica("eu2", "eu", 1000, 0.2, 0);
  NodeState us1 = Replica("us1", "us", 1000, 0.05, 0);
  NodeState us_slow = Replica("us2", "us", 990, 0.5, 10);
  NodeState eu_lag_s = Replica("eu3", "eu", 500, 9.0, 500);
  NodeState eu_lag_b = Replica("eu4", "eu", 500, 0.1, 2 << 20);
  NodeState eu_down = Replica("eu5", "eu", 1000, 0.0, 0, /*up=*/false);
  NodeState eu_behind = Replica("eu6", "eu", 950, 0.1, 50);
  NodeState not_replica = eu1;
  not_replica.role = Role::kUnknown;
  NodeState p_down = p;
  p_down.up = false;
  SessionRouteState fresh;
  SessionRouteState in_tx;
  in_tx.transaction_node = 2;
  SessionRouteState pinned;
  pinned.pinned = true;
  SessionRouteState override_primary;
  override_primary.route_override = RouteOverride::kPrimary;
  SessionRouteState affinity1;
  affinity1.affinity = 1;
  RouteIntent hint_primary = Read();
  hint_primary.hint = RouteHint::kPrimary;
  RouteIntent hint_replica = Read();
  hint_replica.hint = RouteHint::kReplica;
  RouteIntent tight = Read();
  tight.max_lag_ms = 150;
  RouteIntent volatile_fn;
  volatile_fn.volatile_function = true;
  RouteIntent session_state;
  session_state.session_state = true;

  // clang-format off
  return {
      {"read goes to the local replica", {p, eu1, us1}, Read(), fresh, Policy(), rw, 1,
       RR::kReadReplica},
      {"local region first even with more lag", {p, us1, eu2}, Read(), fresh, Policy(), rw, 2,
       RR::kReadReplica},
      {"local replicas spread by affinity (0)", {p, eu1, eu2}, Read(), fresh, Policy(), rw, 1,
       RR::kReadReplica},
      {"local replicas spread by affinity (1)", {p, eu1, eu2}, Read(), affinity1, Policy(), rw, 2,
       RR::kReadReplica},
      {"no local replica: remote by least lag", {p, us_slow, us1}, Read(), fresh, Policy(), rw, 2,
       RR::kReadReplica},
      {"lag ban by seconds", {p, eu_lag_s, us1}, Read(), fresh, Policy(), rw, 2, RR::kReadReplica},
      {"lag ban by bytes", {p, eu_lag_b, us1}, Read(), fresh, Policy(), rw, 2, RR::kReadReplica},
      {"all over lag (seconds) → primary", {p, eu_lag_s}, Read(), fresh, Policy(), rw, 0,
       RR::kReadPrimaryFallbackLag},
      {"all over lag (bytes) → primary", {p, eu_lag_b}, Read(), fresh, Policy(), rw, 0,
       RR::kReadPrimaryFallbackLag},
      {"no byte limit: lag in bytes does not ban", {p, eu_lag_b}, Read(), fresh,
       Policy(5.0, std::nullopt), rw, 1, RR::kReadReplica},
      {"no limits at all: lagging replica serves", {p, eu_lag_s}, Read(), fresh,
       Policy(std::nullopt, std::nullopt), rw, 1, RR::kReadReplica},
      {"unmeasured lag with a limit is not eligible",
       {p, [] {
          NodeState n = Replica("x", "eu", 1000, 0, 0);
          n.lag_seconds.reset();
          return n;
        }()},
       Read(), fresh, Policy(), rw, 0, RR::kReadPrimaryFallbackLag},
      {"down replica serves nobody", {p, eu_down, us1}, Read(), fresh, Policy(), rw, 2,
       RR::kReadReplica},
      {"only a down replica → primary (no replica)", {p, eu_down}, Read(), fresh, Policy(), rw, 0,
       RR::kReadPrimaryNoReplica},
      {"node not in the replica role serves nobody", {p, not_replica}, Read(), fresh, Policy(), rw,
       0, RR::kReadPrimaryNoReplica},
      {"no replica at all → primary", {p}, Read(), fresh, Policy(), rw, 0,
       RR::kReadPrimaryNoReplica},
      {"per-query max_lag_ms tightens the limit", {p, eu2, us1}, tight, fresh, Policy(), rw, 2,
       RR::kReadReplica},
      {"per-query max_lag_ms cannot loosen the limit", {p, eu_lag_s},
       [] {
         RouteIntent i = Read();
         i.max_lag_ms = 60000;
         return i;
       }(),
       fresh, Policy(), rw, 0, RR::kReadPrimaryFallbackLag},
      // Read-your-writes: the session wrote at t_w; the first sample at or after t_w says 1000
      // (t_w = 150) or 900 (t_w = 50).
      {"RYW: replica behind the session's sample → other replica", {p, eu_behind, us1}, Read(),
       WroteAt(150), Policy(), rw, 2, RR::kReadReplica},
      {"RYW: all replicas behind → primary (stale read avoided)", {p, eu_behind}, Read(),
       WroteAt(150), Policy(), rw, 0, RR::kReadPrimaryFallbackRyw},
      {"RYW: replica has replayed the sample → eligible", {p, eu_behind}, Read(), WroteAt(50),
       Policy(), rw, 1, RR::kReadReplica},
      {"RYW: exactly at the sample position → eligible", {p, eu1}, Read(), WroteAt(200), Policy(),
       rw, 1, RR::kReadReplica},
      {"RYW: no sample at or after t_w yet → primary", {p, eu1}, Read(), WroteAt(250), Policy(),
       rw, 0, RR::kReadPrimaryFallbackRyw},
      {"RYW does not apply to a session that never wrote", {p, eu_behind}, Read(), fresh, Policy(),
       rw, 1, RR::kReadReplica},
      {"lag wins over RYW as the reason when both fail", {p, eu_lag_s}, Read(), WroteAt(150),
       Policy(), rw, 0, RR::kReadPrimaryFallbackLag},
      {"write → primary", {p, eu1}, Write(), fresh, Policy(), rw, 0, RR::kWrite},
      {"volatile function → primary", {p, eu1}, volatile_fn, fresh, Policy(), rw, 0,
       RR::kVolatileFunction},
      {"write without a primary → unavailable", {p_down, eu1}, Write(), fresh, Policy(), rw, -1,
       RR::kWrite},
      {"read without replica or primary → unavailable", {p_down, eu_down}, Read(), fresh, Policy(),
       rw, -1, RR::kWrite},
      {"read with the primary down still uses a replica", {p_down, eu1}, Read(), fresh, Policy(),
       rw, 1, RR::kReadReplica},
      {"transaction sticks to its backend", {p, eu1, eu2}, Write(), in_tx, Policy(), rw, 2,
       RR::kTransaction},
      {"pinned session → primary", {p, eu1}, Read(), pinned, Policy(), rw, 0, RR::kPinned},
      {"SET nerava.route = 'primary' → primary", {p, eu1}, Read(), override_primary, Policy(), rw,
       0, RR::kHint},
      {"hint primary", {p, eu1}, hint_primary, fresh, Policy(), rw, 0, RR::kHint},
      {"hint replica", {p, eu1}, hint_replica, fresh, Policy(), rw, 1, RR::kHint},
      {"hint replica is still lag-checked", {p, eu_lag_s}, hint_replica, fresh, Policy(), rw, 0,
       RR::kReadPrimaryFallbackLag},
      {"session state → primary", {p, eu1}, session_state, fresh, Policy(), rw, 0,
       RR::kSessionState},
      {"session state without primary → a replica", {p_down, eu1}, session_state, fresh, Policy(),
       rw, 1, RR::kSessionState},
      // The read-only listener.
      {"read-only listener: read → replica", {p, eu1}, Read(), fresh, Policy(), ro, 1,
       RR::kReadOnlyReplica},
      {"read-only listener: write → replica too (25006 there)", {p, eu1}, Write(), fresh, Policy(),
       ro, 1, RR::kReadOnlyReplica},
      {"read-only listener: no replica → primary, read only", {p, eu_lag_s}, Read(), fresh,
       Policy(), ro, 0, RR::kReadOnlyFallbackPrimary, true},
      {"read-only listener: pinned changes nothing", {p, eu1}, Read(), pinned, Policy(), ro, 1,
       RR::kReadOnlyReplica},
      {"read-only listener: nothing up → unavailable", {p_down, eu_down}, Read(), fresh, Policy(),
       ro, -1, RR::kWrite},
  };
}
// clang-format on

TEST(RouterTest, PolicyTable) {
  for (const Case& c : Cases()) {
    ProtocolTopology topology = Topo(c.nodes);
    RouteRequest request{c.intent, c.listener, &c.session, &topology, &c.policy, &kHistory};
    absl::StatusOr<RouteDecision> got = Route(request);
    if (c.want_node < 0) {
      EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable) << c.name;
      continue;
    }
    ASSERT_TRUE(got.ok()) << c.name << ": " << got.status();
    EXPECT_EQ(got->node, c.want_node) << c.name;
    EXPECT_EQ(RouteReasonName(got->reason), std::string(RouteReasonName(c.want_reason))) << c.name;
    EXPECT_EQ(got->read_only, c.want_read_only) << c.name;
  }
}

TEST(RouterTest, UsesTheTopologyCommitWatermarkByDefault) {
  ProtocolTopology topology = Topo({Primary("p", "eu", 1000), Replica("r", "eu", 950, 0.1, 50)});
  auto watermark = std::make_shared<Watermark>();
  watermark->Add(At(100), 900);
  watermark->Add(At(200), 1000);
  // Read-your-writes waits for commit positions (the lag history is another thing).
  topology.commit_watermark = watermark;
  topology.watermark = std::make_shared<Watermark>();
  RoutePolicy policy = Policy();
  SessionRouteState early = WroteAt(50);  // sample at 100: 900 ≤ 950
  SessionRouteState late = WroteAt(150);  // sample at 200: 1000 > 950
  RouteRequest a{Read(), Listener::kReadWrite, &early, &topology, &policy, nullptr};
  RouteRequest b{Read(), Listener::kReadWrite, &late, &topology, &policy, nullptr};
  EXPECT_EQ(Route(a)->node, 1);
  EXPECT_EQ(Route(b)->reason, RouteReason::kReadPrimaryFallbackRyw);
}

TEST(RouterTest, MissingInputsAreInvalidArgument) {
  RouteRequest request;
  EXPECT_EQ(Route(request).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RouterTest, JudgeReplicaVerdicts) {
  RoutePolicy policy = Policy();
  EXPECT_EQ(JudgeReplica(Replica("r", "eu", 10, 0.1, 1), policy, std::nullopt, std::nullopt),
            ReplicaVerdict::kEligible);
  EXPECT_EQ(JudgeReplica(Replica("r", "eu", 10, 0.1, 1, false), policy, std::nullopt, 5),
            ReplicaVerdict::kDown);
  EXPECT_EQ(JudgeReplica(Primary("p", "eu", 10), policy, std::nullopt, std::nullopt),
            ReplicaVerdict::kNotReplica);
  EXPECT_EQ(JudgeReplica(Replica("r", "eu", 10, 6.0, 1), policy, std::nullopt, std::nullopt),
            ReplicaVerdict::kLagging);
  EXPECT_EQ(JudgeReplica(Replica("r", "eu", 10, 0.3, 1), policy, 0.2, std::nullopt),
            ReplicaVerdict::kLagging);
  EXPECT_EQ(JudgeReplica(Replica("r", "eu", 10, 0.1, 1), policy, std::nullopt, 11),
            ReplicaVerdict::kBehindSession);
  EXPECT_EQ(JudgeReplica(Replica("r", "eu", 10, 0.1, 1), policy, std::nullopt, 10),
            ReplicaVerdict::kEligible);
}

// End to end: statement text → class → intent → decision.
TEST(RouterTest, StatementsEndToEnd) {
  ProtocolTopology topology = Topo({Primary("p", "eu", 1000), Replica("r", "eu", 1000, 0.1, 0)});
  RoutePolicy policy = Policy();
  SessionRouteState session;
  FunctionPolicy functions;
  struct E2E {
    const char* sql;
    int node;
    RouteReason reason;
  };
  const E2E cases[] = {
      {"SELECT inet_server_port()", 1, RouteReason::kReadReplica},
      {"SELECT pg_is_in_recovery()", 0, RouteReason::kVolatileFunction},
      {"SELECT now()", 1, RouteReason::kReadReplica},
      {"INSERT INTO t VALUES (1)", 0, RouteReason::kWrite},
      {"BEGIN READ ONLY", 1, RouteReason::kReadReplica},
      {"BEGIN", 0, RouteReason::kWrite},
      {"/* nerava:primary */ SELECT 1", 0, RouteReason::kHint},
      {"/* nerava:replica */ SELECT nextval('s')", 1, RouteReason::kHint},
      {"SET search_path = x", 0, RouteReason::kSessionState},
      {"SELEC 1", 0, RouteReason::kWrite},
  };
  for (const E2E& c : cases) {
    RouteRequest request{IntentFor(Classify(c.sql), functions),
                         Listener::kReadWrite,
                         &session,
                         &topology,
                         &policy,
                         nullptr};
    absl::StatusOr<RouteDecision> got = Route(request);
    ASSERT_TRUE(got.ok()) << c.sql;
    EXPECT_EQ(got->node, c.node) << c.sql;
    EXPECT_EQ(RouteReasonName(got->reason), std::string(RouteReasonName(c.reason))) << c.sql;
  }
}

TEST(RouterTest, RedisEndToEnd) {
  ProtocolTopology topology = Topo({Primary("p", "eu", 1000), Replica("r", "eu", 1000, 0.1, 0)});
  RoutePolicy policy = Policy();
  SessionRouteState session;
  const RedisCommandTable& table = RedisCommandTable::Builtin();
  struct E2E {
    std::vector<std::string> args;
    int node;
    RouteReason reason;
  };
  const std::vector<E2E> cases = {
      {{"GET", "k"}, 1, RouteReason::kReadReplica},
      {{"SET", "k", "v"}, 0, RouteReason::kWrite},
      {{"XREAD", "BLOCK", "0", "STREAMS", "s", "$"}, 0, RouteReason::kWrite},
      {{"EVAL_RO", "return 1", "0"}, 1, RouteReason::kReadReplica},
      {{"EVAL", "return 1", "0"}, 0, RouteReason::kWrite},
      {{"SELECT", "1"}, 0, RouteReason::kSessionState},
      {{"MULTI"}, 0, RouteReason::kWrite},
  };
  for (const E2E& c : cases) {
    RouteRequest request{IntentFor(ClassifyRedisCommand(table, c.args)),
                         Listener::kReadWrite,
                         &session,
                         &topology,
                         &policy,
                         nullptr};
    absl::StatusOr<RouteDecision> got = Route(request);
    ASSERT_TRUE(got.ok()) << c.args[0];
    EXPECT_EQ(got->node, c.node) << c.args[0];
    EXPECT_EQ(RouteReasonName(got->reason), std::string(RouteReasonName(c.reason))) << c.args[0];
  }
}

}  // namespace
}  // namespace nerava::routing
