// The routing policy (DESIGN §4–§6): given what a request does, the session's state and the
// current topology snapshot, pick the node. Pure: no I/O, no clocks (the caller passes `now`),
// no state between calls.
//
//   request class ──► RouteIntent ─┐
//   session state ─────────────────┼─► Route() ─► node index + reason (for metrics)
//   topology snapshot + watermark ─┘
//
// Replica choice: replicas of the local region first, then the others by lag; the primary last.
// A replica serves nobody when it is down, not (or no longer) a replica, or over max_lag in
// seconds or bytes; it serves a session that wrote at t_w only once it has replayed the primary
// position of the first watermark sample taken at or after t_w (read-your-writes).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "nerava/routing/redis_commands.h"
#include "nerava/routing/sql_classifier.h"
#include "nerava/routing/topology.h"

namespace nerava::routing {

using RouteClock = std::chrono::steady_clock;

enum class RouteReason : uint8_t {
  kReadReplica,              // a replica serves the read
  kReadPrimaryNoReplica,     // no replica is up in the replica role
  kReadPrimaryFallbackLag,   // replicas exist but all are over max_lag
  kReadPrimaryFallbackRyw,   // a replica was fresh enough for others, not for this session
                             // (a stale read avoided: stale_read_avoided_total)
  kWrite,                    // writes, pins, unparsable statements, transaction begin
  kVolatileFunction,         // a read calling a function that must run on the primary
  kPinned,                   // the session is pinned to the primary
  kTransaction,              // inside a transaction: the backend that started it
  kHint,                     // a route hint (comment) or SET nerava.route = 'primary'
  kSessionState,             // SET/RESET/DISCARD, SELECT/AUTH/HELLO...: applied everywhere
  kReadOnlyReplica,          // read-only listener: a replica
  kReadOnlyFallbackPrimary,  // read-only listener: no replica eligible; the primary, read only
};
const char* RouteReasonName(RouteReason reason);

// What the request needs, independent of the protocol.
struct RouteIntent {
  bool replica_ok = false;     // may run on a replica (a read)
  bool session_state = false;  // SET / SELECT db ...: any node; applied on every backend
  RouteHint hint = RouteHint::kNone;
  bool volatile_function = false;      // replica_ok was cleared because of a function
  std::optional<uint32_t> max_lag_ms;  // per-query staleness budget (tightens max_lag)
};

// PostgreSQL: from the statement class and the function policy.
RouteIntent IntentFor(const StatementClass& statement, const FunctionPolicy& functions);
// Redis: from the command class.
RouteIntent IntentFor(const RedisCommandClass& command);

enum class Listener : uint8_t {
  kReadWrite,  // the normal listener: splits reads and writes
  kReadOnly,   // pg_readonly (READ_DATABASE_URL): everything to replicas, primary as read-only
};

struct SessionRouteState {
  // Inside a transaction block / MULTI: stay on the backend that started it.
  std::optional<int> transaction_node;
  bool pinned = false;                                   // temp table, LISTEN, WATCH, ...
  RouteOverride route_override = RouteOverride::kAuto;   // SET nerava.route
  std::optional<RouteClock::time_point> last_write_ack;  // t_w (read-your-writes)
  // Spreads sessions over equally preferred local replicas; keep it stable per session so a
  // session reuses one replica backend.
  uint64_t affinity = 0;
};

struct RoutePolicy {
  std::string local_region;
  std::optional<double> max_lag_seconds;  // unset: no limit
  std::optional<uint64_t> max_lag_bytes;  // unset: no limit
};

// The primary's position history, as far as read-your-writes needs it. The router reads
// ProtocolTopology::watermark unless the caller supplies another view (tests, a monitor that
// keeps its own history).
class PositionHistory {
 public:
  virtual ~PositionHistory() = default;
  // The primary position of the first sample taken at or after `t`; nullopt when none yet.
  virtual std::optional<uint64_t> PrimaryPositionAtOrAfter(RouteClock::time_point t) const = 0;
};

struct RouteDecision {
  int node = -1;  // index into ProtocolTopology::nodes
  RouteReason reason = RouteReason::kWrite;
  bool read_only = false;  // read-only listener on the primary: default_transaction_read_only
  bool operator==(const RouteDecision&) const = default;
};

struct RouteRequest {
  RouteIntent intent;
  Listener listener = Listener::kReadWrite;
  const SessionRouteState* session = nullptr;  // required
  const ProtocolTopology* topology = nullptr;  // required
  const RoutePolicy* policy = nullptr;         // required
  const PositionHistory* history = nullptr;    // optional: defaults to topology->watermark
};

// Unavailable when no node can take the request (no primary for a write; nothing up for a read);
// InvalidArgument when a required pointer is missing.
absl::StatusOr<RouteDecision> Route(const RouteRequest& request);

// Why a replica cannot serve a session right now (exposed for `show clients` and tests).
enum class ReplicaVerdict : uint8_t { kEligible, kDown, kNotReplica, kLagging, kBehindSession };
ReplicaVerdict JudgeReplica(const NodeState& node, const RoutePolicy& policy,
                            std::optional<double> max_lag_seconds_override,
                            std::optional<uint64_t> session_needs_position);

}  // namespace nerava::routing
