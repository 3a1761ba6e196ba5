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

}  // namespace

int ChoosePrimary(const routing::ProtocolTopology& topology, Protocol protocol,
                  const std::string& primary_region, const std::string& preferred) {
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
    if (!preferred.empty() && (node.name == preferred || current.name == preferred)) {
      if (node.name == preferred) best = i;
      continue;
    }
    if (node.region == primary_region && current.region != primary_region) best = i;
  }
  return best;
}

const std::string& Monitor::Preferred(const LagState& lag) {
  return lag.preferred.empty() ? lag.sentinel_master : lag.preferred;
}

Monitor::Monitor(const config::Config& config, TopologyHolder& holder)
    : interval_(config.monitor.interval),
      timeout_(config.monitor.timeout),
      failure_threshold_(config.monitor.failure_threshold),
      hold_down_limit_(failure_threshold_ *
                       std::max(config.monitor.interval, config.monitor.timeout)),
      primary_region_(config.primary_region),
      holder_(holder) {
  if (config.postgres) {
    const config::Postgres& pg = *config.postgres;
    state_.postgres.nodes = InitialNodes(pg.nodes);
    pg_lag_.observed.resize(pg.nodes.size());
    pg_lag_.passed_check_started.resize(pg.nodes.size());
    pg_lag_.held_since.resize(pg.nodes.size());
    for (size_t i = 0; i < pg.nodes.size(); ++i) {
      PgProbeCredentials credentials{pg.monitor_user, pg.monitor_password, pg.monitor_database,
                                     pg.backend_tls.mode, pg.backend_tls.root_cert};
      slots_.push_back(std::make_unique<Slot>(
          Slot{Protocol::kPostgres, i, MakePgProbe(pg.nodes[i], std::move(credentials),
                                                    failure_threshold_ + 1)}));
    }
  }
  if (config.redis) {
    const config::Redis& redis = *config.redis;
    state_.redis.nodes = InitialNodes(redis.nodes);
    redis_lag_.observed.resize(redis.nodes.size());
    redis_lag_.passed_check_started.resize(redis.nodes.size());
    redis_lag_.held_since.resize(redis.nodes.size());
    for (size_t i = 0; i < redis.nodes.size(); ++i) {
      slots_.push_back(std::make_unique<Slot>(
          Slot{Protocol::kRedis, i,
               MakeRedisProbe(redis.nodes[i], redis.backend_username, redis.backend_password,
                              failure_threshold_ + 1)}));
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

void Monitor::PreferPrimary(Protocol protocol, const std::string& node) {
  std::lock_guard lock(mutex_);
  (protocol == Protocol::kPostgres ? pg_lag_ : redis_lag_).preferred = node;
  holder_.Publish(BuildSnapshotLocked());
}

void Monitor::SetSentinelView(const std::string& master,
                              std::vector<std::string> unusable_replicas) {
  std::lock_guard lock(mutex_);
  if (redis_lag_.sentinel_master == master && redis_lag_.unusable == unusable_replicas) return;
  redis_lag_.sentinel_master = master;
  redis_lag_.unusable = std::move(unusable_replicas);
  holder_.Publish(BuildSnapshotLocked());
}

void Monitor::OnPrimaryChange(PrimaryChange callback) {
  std::lock_guard lock(mutex_);
  on_primary_change_ = std::move(callback);
}

void Monitor::OnNodeDown(NodeDown callback) {
  std::lock_guard lock(mutex_);
  on_node_down_ = std::move(callback);
}

void Monitor::RunNode(std::stop_token stop, Slot& slot) {
  std::mutex sleep_mutex;
  std::condition_variable_any sleeper;
  auto next = std::chrono::steady_clock::now();
  while (!stop.stop_requested()) {
    auto started = std::chrono::steady_clock::now();
    ProbeResult result = slot.probe->Check(timeout_);
    // The node read its position somewhere inside the check: take the middle.
    auto observed = started + (std::chrono::steady_clock::now() - started) / 2;
    if (result.late) {
      // Read somewhere between the earlier check's start and now. A primary's position stamped
      // with that start overstates every replica's lag, a replica's stamped now its own: never
      // the other way round (read-your-writes and max_lag stay safe).
      started = result.asked_at;
      observed = result.role == Role::kReplica ? std::chrono::steady_clock::now() : started;
    }
    if (std::optional<std::string> down = Record(slot, result, started, observed)) {
      NodeDown notify;
      {
        std::lock_guard lock(mutex_);
        notify = on_node_down_;
      }
      if (notify) notify(slot.protocol, *down);
    }
    next += interval_;
    const auto now = std::chrono::steady_clock::now();
    if (next < now) next = now;  // a slow check does not cause a burst of catch-up checks
    std::unique_lock lock(sleep_mutex);
    sleeper.wait_until(lock, stop, next, [] { return false; });
  }
}

std::optional<std::string> Monitor::Record(const Slot& slot, const ProbeResult& result,
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
    lag.passed_check_started[slot.index] = started;
  } else {
    ++node.consecutive_failures;
    node.last_error = result.error;
    if (node.consecutive_failures >= failure_threshold_) node.up = false;
    if (was_up && !node.up) ++node.times_marked_down;
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
  topology.primary = ChoosePrimary(topology, slot.protocol, primary_region_, Preferred(lag));
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
  if (!ReportDownLocked(slot.protocol, topology, lag, slot.index, was_up && !node.up)) {
    return std::nullopt;
  }
  return node.name;
}

bool Monitor::ReportDownLocked(Protocol protocol, const routing::ProtocolTopology& topology,
                               LagState& lag, size_t index, bool marked_down) {
  const NodeState& node = topology.nodes[index];
  const char* protocol_name = routing::ProtocolName(protocol);
  std::optional<std::chrono::steady_clock::time_point>& held_since = lag.held_since[index];
  const auto now = std::chrono::steady_clock::now();
  if (marked_down) {
    // Healthy: up, and its last check passed. A node whose checks fail too is no proof that
    // this one failed alone.
    bool other_healthy = false;
    for (size_t i = 0; i < topology.nodes.size(); ++i) {
      const NodeState& other = topology.nodes[i];
      other_healthy = other_healthy || (i != index && other.up && other.consecutive_failures == 0);
    }
    if (other_healthy) return true;
    held_since = now;
    spdlog::warn("monitor: {} node {} is down and no other is healthy: sessions keep their "
                 "connections to it for up to {} ms, in case this host, not every server, "
                 "stalled", protocol_name, node.name, hold_down_limit_.count());
    return false;
  }
  if (!held_since) return false;
  if (node.up) {
    held_since.reset();
    spdlog::info("monitor: {} node {} is up again: sessions kept their connections to it",
                 protocol_name, node.name);
    return false;
  }
  bool other_passed = false;  // a check that started after the hold began
  for (size_t i = 0; i < topology.nodes.size(); ++i) {
    other_passed = other_passed || (i != index && lag.passed_check_started[i] > *held_since);
  }
  if (!other_passed && now - *held_since < hold_down_limit_) return false;
  held_since.reset();
  spdlog::warn("monitor: {} node {} is still down{}: sessions drop their connections to it",
               protocol_name, node.name,
               other_passed ? " while another node answers" : " at the end of the hold");
  return true;
}

void Monitor::ReportPrimaryLocked(Protocol protocol, routing::ProtocolTopology& topology,
                                  LagState& lag) {
  int claiming = 0;
  for (const NodeState& node : topology.nodes) {
    claiming += node.up && node.role == Role::kPrimary ? 1 : 0;
  }
  topology.split_brain = claiming > 1;
  if (topology.split_brain != lag.split_brain) {
    lag.split_brain = topology.split_brain;
    if (lag.split_brain) {
      spdlog::error("monitor: split brain: {} {} nodes say they are primary; writes go to {} "
                    "only{}",
                    claiming, routing::ProtocolName(protocol),
                    topology.Primary() ? topology.Primary()->name : "none",
                    protocol == Protocol::kPostgres ? " (the highest timeline)" : "");
    } else {
      spdlog::info("monitor: split brain over: one {} node says it is primary",
                   routing::ProtocolName(protocol));
    }
  }
  const NodeState* primary = topology.Primary();
  const std::string name = primary ? primary->name : "";
  if (name == lag.primary_name) return;
  if (primary && !primary_region_.empty() && primary->region != primary_region_) {
    spdlog::warn("monitor: the {} primary is {} in region {}, not in PRIMARY_REGION {}",
                 routing::ProtocolName(protocol), primary->name, primary->region,
                 primary_region_);
  }
  spdlog::info("monitor: {} primary in use: {} (was {})", routing::ProtocolName(protocol),
               name.empty() ? "none" : name,
               lag.primary_name.empty() ? "none" : lag.primary_name);
  if (on_primary_change_) on_primary_change_(protocol, lag.primary_name, name);
  lag.primary_name = name;
}

routing::TopologySnapshot Monitor::BuildSnapshotLocked() {
  for (auto protocol : {Protocol::kPostgres, Protocol::kRedis}) {
    auto& topology = protocol == Protocol::kPostgres ? state_.postgres : state_.redis;
    LagState& lag = protocol == Protocol::kPostgres ? pg_lag_ : redis_lag_;
    topology.primary = ChoosePrimary(topology, protocol, primary_region_, Preferred(lag));
    const NodeState* primary = topology.Primary();
    ReportPrimaryLocked(protocol, topology, lag);
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
  auto snapshot = std::make_shared<routing::Topology>(state_);
  // Replicas Sentinel flags serve nobody, whatever their own checks say.
  for (routing::NodeState& node : snapshot->redis.nodes) {
    if (node.role == Role::kReplica &&
        std::find(redis_lag_.unusable.begin(), redis_lag_.unusable.end(), node.name) !=
            redis_lag_.unusable.end()) {
      node.up = false;
      node.last_error = "flagged down by Redis Sentinel";
    }
  }
  return snapshot;
}

}  // namespace nerava::proxy
