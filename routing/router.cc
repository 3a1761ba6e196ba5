#include "nerava/routing/router.h"

#include <algorithm>
#include <limits>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"

namespace nerava::routing {
namespace {

// "No watermark sample is recent enough yet": no replica can prove it has the session's writes.
constexpr uint64_t kNoSampleYet = std::numeric_limits<uint64_t>::max();

std::optional<double> TightestSeconds(const RoutePolicy& policy,
                                      std::optional<double> override_seconds) {
  if (!policy.max_lag_seconds) return override_seconds;
  if (!override_seconds) return policy.max_lag_seconds;
  return std::min(*policy.max_lag_seconds, *override_seconds);
}

struct Choice {
  int node = -1;
  bool any_replica = false;  // some replica is up in the replica role
  bool ryw_blocked = false;  // some replica was within lag but behind the session
};

// Replicas of the local region first (spread by affinity), then the others by lag.
Choice ChooseReplica(const ProtocolTopology& topology, const RoutePolicy& policy,
                     std::optional<double> seconds_override, std::optional<uint64_t> needs,
                     uint64_t affinity) {
  Choice choice;
  // Asked for every read: no heap allocation for the few local replicas a region has.
  absl::InlinedVector<int, 8> local;
  int best_remote = -1;
  for (int i = 0; i < static_cast<int>(topology.nodes.size()); ++i) {
    const NodeState& node = topology.nodes[i];
    ReplicaVerdict verdict = JudgeReplica(node, policy, seconds_override, needs);
    if (verdict != ReplicaVerdict::kDown && verdict != ReplicaVerdict::kNotReplica) {
      choice.any_replica = true;
    }
    if (verdict == ReplicaVerdict::kBehindSession) choice.ryw_blocked = true;
    if (verdict != ReplicaVerdict::kEligible) continue;
    if (!policy.local_region.empty() && node.region == policy.local_region) {
      local.push_back(i);
      continue;
    }
    if (best_remote < 0) {
      best_remote = i;
      continue;
    }
    // Less lag wins; unknown lag counts as the most lag.
    const NodeState& best = topology.nodes[best_remote];
    double lag = node.lag_seconds.value_or(std::numeric_limits<double>::infinity());
    double best_lag = best.lag_seconds.value_or(std::numeric_limits<double>::infinity());
    uint64_t bytes = node.lag_bytes.value_or(std::numeric_limits<uint64_t>::max());
    uint64_t best_bytes = best.lag_bytes.value_or(std::numeric_limits<uint64_t>::max());
    if (lag < best_lag || (lag == best_lag && bytes < best_bytes)) best_remote = i;
  }
  if (!local.empty()) {
    choice.node = local[affinity % local.size()];
  } else {
    choice.node = best_remote;
  }
  return choice;
}

bool PrimaryUp(const ProtocolTopology& topology) {
  const NodeState* primary = topology.Primary();
  return primary != nullptr && primary->up && primary->role == Role::kPrimary;
}

absl::StatusOr<RouteDecision> ToPrimary(const ProtocolTopology& topology, RouteReason reason,
                                        bool read_only = false) {
  if (!PrimaryUp(topology)) return absl::UnavailableError("no primary available");
  return RouteDecision{topology.primary, reason, read_only};
}

}  // namespace

const char* RouteReasonName(RouteReason reason) {
  switch (reason) {
    case RouteReason::kReadReplica:
      return "read_replica";
    case RouteReason::kReadPrimaryNoReplica:
      return "read_primary_no_replica";
    case RouteReason::kReadPrimaryFallbackLag:
      return "read_primary_fallback_lag";
    case RouteReason::kReadPrimaryFallbackRyw:
      return "read_primary_fallback_ryw";
    case RouteReason::kWrite:
      return "write";
    case RouteReason::kVolatileFunction:
      return "volatile_function";
    case RouteReason::kPinned:
      return "pinned";
    case RouteReason::kTransaction:
      return "transaction";
    case RouteReason::kHint:
      return "hint";
    case RouteReason::kSessionState:
      return "session_state";
    case RouteReason::kReadOnlyReplica:
      return "readonly_replica";
    case RouteReason::kReadOnlyFallbackPrimary:
      return "readonly_fallback_primary";
  }
  return "unknown";
}

RouteIntent IntentFor(const StatementClass& statement, const FunctionPolicy& functions) {
  RouteIntent intent;
  intent.hint = statement.hint;
  intent.max_lag_ms = statement.max_lag_ms;
  switch (statement.kind) {
    case StatementKind::kRead:
      intent.replica_ok = true;
      // A replica hint vouches for the functions (e.g. a user function left VOLATILE by
      // default that only reads); it cannot make a write succeed, so it is ignored below.
      if (statement.hint != RouteHint::kReplica &&
          functions.FirstRequiringPrimary(statement.functions) != nullptr) {
        intent.replica_ok = false;
        intent.volatile_function = true;
      }
      break;
    case StatementKind::kTransactionBegin:
      // BEGIN READ ONLY: the whole transaction may run on a replica. A plain BEGIN may too
      // when hinted; a write inside it then fails with 25006, as the client asked for.
      intent.replica_ok = statement.read_only_transaction || statement.hint == RouteHint::kReplica;
      break;
    case StatementKind::kSessionSet:
    case StatementKind::kProxyDirective:
      intent.session_state = true;
      break;
    case StatementKind::kTransactionEnd:
    case StatementKind::kTransactionScoped:
      // Inside a block these follow the transaction; outside one they are no-ops or errors.
    case StatementKind::kWrite:
    case StatementKind::kPin:
    case StatementKind::kUnparsable:
      break;
  }
  return intent;
}

RouteIntent IntentFor(const RedisCommandClass& command) {
  RouteIntent intent;
  intent.replica_ok = command.ReplicaEligible();
  intent.session_state = command.kind == RedisKind::kConnectionState;
  return intent;
}

ReplicaVerdict JudgeReplica(const NodeState& node, const RoutePolicy& policy,
                            std::optional<double> max_lag_seconds_override,
                            std::optional<uint64_t> session_needs_position) {
  if (!node.up) return ReplicaVerdict::kDown;
  if (node.role != Role::kReplica) return ReplicaVerdict::kNotReplica;
  // A limit that cannot be checked (lag not measured yet) is a limit exceeded.
  std::optional<double> seconds = TightestSeconds(policy, max_lag_seconds_override);
  if (seconds && (!node.lag_seconds || *node.lag_seconds > *seconds)) {
    return ReplicaVerdict::kLagging;
  }
  if (policy.max_lag_bytes && (!node.lag_bytes || *node.lag_bytes > *policy.max_lag_bytes)) {
    return ReplicaVerdict::kLagging;
  }
  if (session_needs_position &&
      (*session_needs_position == kNoSampleYet || node.position < *session_needs_position)) {
    return ReplicaVerdict::kBehindSession;
  }
  return ReplicaVerdict::kEligible;
}

absl::StatusOr<RouteDecision> Route(const RouteRequest& request) {
  if (request.session == nullptr || request.topology == nullptr || request.policy == nullptr) {
    return absl::InvalidArgumentError("Route: session, topology and policy are required");
  }
  const SessionRouteState& session = *request.session;
  const ProtocolTopology& topology = *request.topology;
  const RoutePolicy& policy = *request.policy;
  const RouteIntent& intent = request.intent;

  if (session.transaction_node) {
    return RouteDecision{*session.transaction_node, RouteReason::kTransaction, false};
  }

  // Read-your-writes: the primary position the session's replica must have replayed.
  std::optional<uint64_t> needs;
  if (session.last_write_ack) {
    std::optional<uint64_t> position;
    if (request.history != nullptr) {
      position = request.history->PrimaryPositionAtOrAfter(*session.last_write_ack);
    } else if (topology.watermark != nullptr) {
      position = topology.commit_watermark->SampleAtOrAfter(*session.last_write_ack);
    }
    needs = position.value_or(kNoSampleYet);
  }
  std::optional<double> seconds_override;
  if (intent.max_lag_ms) seconds_override = *intent.max_lag_ms / 1000.0;

  if (request.listener == Listener::kReadOnly) {
    // Everything goes to a replica, writes included (they fail there with 25006); the primary is
    // the fallback, in a read-only session so that writes fail the same way.
    Choice choice = ChooseReplica(topology, policy, seconds_override, needs, session.affinity);
    if (choice.node >= 0) return RouteDecision{choice.node, RouteReason::kReadOnlyReplica, false};
    return ToPrimary(topology, RouteReason::kReadOnlyFallbackPrimary, /*read_only=*/true);
  }

  if (session.pinned) return ToPrimary(topology, RouteReason::kPinned);
  if (session.route_override == RouteOverride::kPrimary) {
    return ToPrimary(topology, RouteReason::kHint);
  }
  if (intent.session_state) {
    // Applied on every backend of the session; the primary answers when it can.
    if (PrimaryUp(topology)) return ToPrimary(topology, RouteReason::kSessionState);
    Choice choice = ChooseReplica(topology, policy, std::nullopt, std::nullopt, session.affinity);
    if (choice.node >= 0) return RouteDecision{choice.node, RouteReason::kSessionState, false};
    return absl::UnavailableError("no node available");
  }
  if (intent.hint == RouteHint::kPrimary) return ToPrimary(topology, RouteReason::kHint);
  if (!intent.replica_ok) {
    return ToPrimary(
        topology, intent.volatile_function ? RouteReason::kVolatileFunction : RouteReason::kWrite);
  }

  Choice choice = ChooseReplica(topology, policy, seconds_override, needs, session.affinity);
  if (choice.node >= 0) {
    return RouteDecision{
        choice.node,
        intent.hint == RouteHint::kReplica ? RouteReason::kHint : RouteReason::kReadReplica, false};
  }
  RouteReason reason = !choice.any_replica  ? RouteReason::kReadPrimaryNoReplica
                       : choice.ryw_blocked ? RouteReason::kReadPrimaryFallbackRyw
                                            : RouteReason::kReadPrimaryFallbackLag;
  return ToPrimary(topology, reason);
}

}  // namespace nerava::routing
