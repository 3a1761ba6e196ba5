// What the proxy knows about every node at one moment: an immutable snapshot that the monitor
// publishes and sessions read without locks (DESIGN §3, §6).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nerava/routing/watermark.h"

namespace nerava::routing {

enum class Protocol { kPostgres, kRedis };
enum class Role { kUnknown, kPrimary, kReplica };

const char* ProtocolName(Protocol protocol);  // "postgres" / "redis"
const char* RoleName(Role role);              // "unknown" / "primary" / "replica"

struct NodeState {
  std::string name;
  std::string region;
  std::string host;
  uint16_t port = 0;

  bool up = false;  // answered its last check (or fewer than failure_threshold failures since)
  Role role = Role::kUnknown;
  int consecutive_failures = 0;
  std::string last_error;  // empty after a successful check
  std::chrono::steady_clock::time_point last_success{};
  // How often the monitor marked it down: a server connection from before the last mark may
  // lead to a server that restarted since, and is not reused.
  uint64_t times_marked_down = 0;

  // Replication positions (PostgreSQL LSN as a byte position; Redis replication offset).
  // Primary: its current position. Replica: what it has replayed / received.
  uint64_t position = 0;
  uint64_t received_position = 0;
  uint32_t timeline = 0;  // PostgreSQL only

  // Replicas: how far behind the primary, when known.
  std::optional<uint64_t> lag_bytes;
  std::optional<double> lag_seconds;
};

struct ProtocolTopology {
  std::vector<NodeState> nodes;  // in config order
  int primary = -1;              // index into nodes of the node that says it is primary, or -1
  bool split_brain = false;      // more than one node says it is primary (the guard is on)
  // The primary's recent positions (DESIGN §6), for read-your-writes; never null in a
  // published snapshot, shared between snapshots while it does not change.
  std::shared_ptr<const Watermark> watermark = std::make_shared<const Watermark>();
  // (check start time, commit position) samples of the primary: a sample's position is at or
  // past every write acknowledged before its time. Read-your-writes uses these.
  std::shared_ptr<const Watermark> commit_watermark = std::make_shared<const Watermark>();

  const NodeState* Primary() const { return primary >= 0 ? &nodes[primary] : nullptr; }
};

struct Topology {
  uint64_t generation = 0;  // increases with every published snapshot
  std::chrono::steady_clock::time_point taken{};
  ProtocolTopology postgres;
  ProtocolTopology redis;

  const ProtocolTopology& Get(Protocol protocol) const {
    return protocol == Protocol::kPostgres ? postgres : redis;
  }
};

using TopologySnapshot = std::shared_ptr<const Topology>;

}  // namespace nerava::routing
