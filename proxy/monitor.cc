#include "proxy/monitor.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace nerava::proxy {
namespace {

using routing::NodeState;
using routing::Protocol;
using routing::Role;

std::vector<NodeState> InitialNodes(const std::vector<config::Node>& nodes) {
  std::vector<NodeState> states;
  for (const auto& node : nodes) {
    NodeState state;
    state.name = node.name;
    state.region = node.region;
    state.host = node.host;
    state.port = node.port;
    state.last_error = "not checked yet";
    states.push_back(std::move(state));
  }
  return states;
}

std::chrono::milliseconds CheckTimeout(const config::Monitor& monitor) {
  if (monitor.timeout.count() > 0) return monitor.timeout;
  return std::max(std::chrono::milliseconds(5), monitor.interval * 8 / 10);
}

}  // namespace

int ChoosePrimary(const routing::ProtocolTopology& topology, Protocol protocol,
                  const std::string& primary_region) {
  int best = -1;
  for (int i = 0; i < static_cast<int>(topology.nodes.size()); ++i) {
    const NodeState& node = topology.nodes[i];
    if (!node.up || node.role != Role::kPrimary) continue;
    if (best < 0) {
      best = i;
      continue;
    }
    const NodeState& current = topology.nodes[best];
    if (protocol == Protocol::kPostgres && node.timeline != current.timeline) {
      if (node.timeline > current.timeline) best = i;
      continue;
    }
    if (node.region == primary_region && current.region != primary_region) best = i;
  }
  return best;
}

Monitor::Monitor(const config::Config& config, TopologyHolder& holder)
    : interval_(config.monitor.interval),
      timeout_(CheckTimeout(config.monitor)),
      failure_threshold_(config.monitor.failure_threshold),
      primary_region_(config.primary_region),
      holder_(holder) {
  if (config.postgres) {
    const config::Postgres& pg = *config.postgres;
    state_.postgres.nodes = InitialNodes(pg.nodes);
    pg_lag_.observed.resize(pg.nodes.size());
    for (size_t i = 0; i < pg.nodes.size(); ++i) {
      PgProbeCredentials credentials{pg.monitor_user, pg.monitor_password, pg.monitor_database,
                                     pg.backend_tls.mode, pg.backend_tls.root_cert};
      slots_.push_back(std::make_unique<Slot>(
          Slot{Protocol::kPostgres, i, MakePgProbe(pg.nodes[i], std::move(credentials))}));
    }
  }
  if (config.redis) {
    const config::Redis& redis = *config.redis;
    state_.redis.nodes = InitialNodes(redis.nodes);
    redis_lag_.observed.resize(redis.nodes.size());
    for (size_t i = 0; i < redis.nodes.size(); ++i) {
      slots_.push_back(std::make_unique<Slot>(
          Slot{Protocol::kRedis, i,
               MakeRedisProbe(redis.nodes[i], redis.backend_username, redis.backend_password)}));
    }
  }
  holder_.Publish(BuildSnapshotLocked());
}

Monitor::~Monitor() {
  for (auto& thread : threads_) thread.request_stop();
  threads_.clear();  // joins
}

void Monitor::Start() {
  for (auto& slot : slots_) {
    threads_.emplace_back([this, &slot = *slot](std::stop_token stop) { RunNode(stop, slot); });
  }
}

void Monitor::RunNode(std::stop_token stop, Slot& slot) {
  std::mutex sleep_mutex;
  std::condition_variable_any sleeper;
  auto next = std::chrono::steady_clock::now();
  while (!stop.stop_requested()) {
    const auto started = std::chrono::steady_clock::now();
    ProbeResult result = slot.probe->Check(timeout_);
    // The node read its position somewhere inside the check: take the middle.
    const auto observed = started + (std::chrono::steady_clock::now() - started) / 2;
    Record(slot, result, started, observed);
    next += interval_;
    const auto now = std::chrono::steady_clock::now();
    if (next < now) next = now;  // a slow check does not cause a burst of catch-up checks
    std::unique_lock lock(sleep_mutex);
    sleeper.wait_until(lock, stop, next, [] { return false; });
  }
}

void Monitor::Record(const Slot& slot, const ProbeResult& result,
                     std::chrono::steady_clock::time_point started,
                     std::chrono::steady_clock::time_point observed) {
  std::lock_guard lock(mutex_);
  auto& topology = slot.protocol == Protocol::kPostgres ? state_.postgres : state_.redis;
  LagState& lag = slot.protocol == Protocol::kPostgres ? pg_lag_ : redis_lag_;
  NodeState& node = topology.nodes[slot.index];
  const bool was_up = node.up;
  const Role old_role = node.role;
  if (result.ok) {
    node.up = true;
    node.consecutive_failures = 0;
    node.last_error.clear();
    node.last_success = std::chrono::steady_clock::now();
    node.role = result.role;
    node.position = result.position;
    node.received_position = result.received_position;
    node.timeline = result.timeline;
    lag.observed[slot.index] = observed;
  } else {
    ++node.consecutive_failures;
    node.last_error = result.error;
    if (node.consecutive_failures >= failure_threshold_) node.up = false;
  }
  if (!result.ok && node.consecutive_failures == failure_threshold_ &&
      node.last_success == std::chrono::steady_clock::time_point{}) {
    // A node that was never up has no up/down transition to log: say why it is not usable.
    spdlog::warn("monitor: {} node {} cannot be checked: {}", routing::ProtocolName(slot.protocol),
                 node.name, node.last_error);
  }
  if (was_up != node.up || old_role != node.role) {
    spdlog::info("monitor: {} node {} is {} ({}){}", routing::ProtocolName(slot.protocol),
                 node.name, node.up ? "up" : "down", routing::RoleName(node.role),
                 node.up ? "" : ": " + node.last_error);
  }
  topology.primary = ChoosePrimary(topology, slot.protocol, primary_region_);
  if (const NodeState* primary = topology.Primary()) {
    // Another node (or a new timeline) counts positions from another history.
    if (lag.owner != topology.primary || lag.timeline != primary->timeline) {
      lag.watermark.Clear();
      lag.commit_watermark.Clear();
      lag.owner = topology.primary;
      lag.timeline = primary->timeline;
      lag.changed = true;
    }
    if (result.ok && topology.primary == static_cast<int>(slot.index)) {
      lag.watermark.Add(observed, node.position);
      // Stamped with the check's start: the position read is at or past every write
      // acknowledged by then, whenever inside the check the server read it.
      lag.commit_watermark.Add(started, std::max(result.commit_position, node.position));
      lag.changed = true;
    }
  }
  holder_.Publish(BuildSnapshotLocked());
}

routing::TopologySnapshot Monitor::BuildSnapshotLocked() {
  for (auto protocol : {Protocol::kPostgres, Protocol::kRedis}) {
    auto& topology = protocol == Protocol::kPostgres ? state_.postgres : state_.redis;
    LagState& lag = protocol == Protocol::kPostgres ? pg_lag_ : redis_lag_;
    topology.primary = ChoosePrimary(topology, protocol, primary_region_);
    const NodeState* primary = topology.Primary();
    const bool history_usable = primary && lag.owner == topology.primary && !lag.watermark.empty();
    for (size_t i = 0; i < topology.nodes.size(); ++i) {
      NodeState& node = topology.nodes[i];
      node.lag_bytes.reset();
      node.lag_seconds.reset();
      if (!primary || !node.up || node.role != Role::kReplica) continue;
      // PostgreSQL: `position` is the replica's replay position, what its readers see.
      node.lag_bytes = primary->position > node.position ? primary->position - node.position : 0;
      if (history_usable) {
        node.lag_seconds = lag.watermark.LagSeconds(node.position, lag.observed[i]);
      }
    }
    if (lag.changed) {
      topology.watermark = std::make_shared<const routing::Watermark>(lag.watermark);
      topology.commit_watermark = std::make_shared<const routing::Watermark>(lag.commit_watermark);
      lag.changed = false;
    }
  }
  ++state_.generation;
  state_.taken = std::chrono::steady_clock::now();
  return std::make_shared<const routing::Topology>(state_);
}

}  // namespace nerava::proxy
