// One health/role/position check of one node, with a deadline. Runs on the monitor's thread for
// that node, never on a worker: libpq and hiredis calls here may wait up to the timeout.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "nerava/config/config.h"
#include "nerava/routing/topology.h"

namespace nerava::proxy {

struct ProbeResult {
  bool ok = false;
  std::string error;  // when !ok
  routing::Role role = routing::Role::kUnknown;
  uint64_t position = 0;           // primary: current WAL LSN / master_repl_offset
  uint64_t received_position = 0; // replica: received LSN / slave_repl_offset
  // Primary: a position at or past every write acknowledged before the check started
  // (PostgreSQL's insert LSN; Redis' offset). What read-your-writes waits for.
  uint64_t commit_position = 0;
  uint32_t timeline = 0;
  bool link_up = true;             // replica: replication link to its primary is up
  // The answer to an earlier check that had timed out, sent at `asked_at`: the node is alive
  // but slow, and the positions above were read at some moment between then and now.
  bool late = false;
  std::chrono::steady_clock::time_point asked_at{};
};

class NodeProbe {
 public:
  virtual ~NodeProbe() = default;
  // Checks the node, reusing the connection of the previous check when it still works.
  virtual ProbeResult Check(std::chrono::milliseconds timeout) = 0;
};

struct PgProbeCredentials {
  std::string user;
  std::string password;
  std::string database;
  config::SslMode sslmode = config::SslMode::kPrefer;
  std::string root_cert;
};

// patience: how many checks in a row a check that timed out is still waited for before its
// connection is given up (see redis_probe.cc).
std::unique_ptr<NodeProbe> MakePgProbe(const config::Node& node, PgProbeCredentials credentials,
                                       int patience);
std::unique_ptr<NodeProbe> MakeRedisProbe(const config::Node& node, std::string username,
                                          std::string password, int patience);

}  // namespace nerava::proxy
