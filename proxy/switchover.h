// Planned switchover and write pauses (DESIGN §7), driven from the admin socket:
//
//   switch-primary <node|region> [--promote] [--timeout S]
//     1. close the write gate: new write work waits in the sessions
//     2. wait for write work under way to finish (bounded; then it is aborted with 40001/08007)
//     3. --promote: fence the old primary (read-only by default / CLIENT PAUSE WRITE), wait for
//        the target to replay the old primary's last position, promote it
//        (pg_promote / REPLICAOF NO ONE); a Redis old primary becomes the target's replica
//     4. prefer the target, wait until the monitor publishes it as the primary
//     5. open the gate: held writes run on the new primary
//   pause [writes|all] / resume
//
// Runs on the admin thread and blocks it (every step is bounded); sessions never wait for it
// except through the gate.
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <mutex>
#include <string>
#include <vector>

#include "nerava/config/config.h"
#include "proxy/metrics.h"
#include "proxy/monitor.h"
#include "proxy/topology_holder.h"
#include "proxy/write_gate.h"

namespace nerava::proxy {

struct SwitchReport {
  SwitchReport(routing::Protocol protocol_in, std::string from_in, std::string to_in)
      : protocol(protocol_in), from(std::move(from_in)), to(std::move(to_in)) {}
  routing::Protocol protocol;
  std::string from;
  std::string to;
  bool ok = false;
  bool promoted = false;
  double writes_held_ms = 0;
  int aborted = 0;  // sessions whose write work did not finish in time
  std::vector<std::string> steps;  // what was done and when, for the operator
  std::string error;               // when !ok
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();

  // Records a step with the milliseconds since the switchover started.
  void Step(const std::string& what) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    // fmt, not "+" + to_string(): GCC 12 at -O3 warns falsely about the string concatenation.
    steps.push_back(fmt::format("+{} ms: {}", ms.count(), what));
  }
};

class Switchover {
 public:
  Switchover(const config::Config& config, const TopologyHolder& topology, WriteGates& gates,
             Monitor& monitor, Metrics* metrics)
      : config_(config), topology_(topology), gates_(gates), monitor_(monitor),
        metrics_(metrics) {}

  // `target` is a node name (that node's protocol) or a region (every protocol with a node
  // there). An error when the target is unknown.
  absl::StatusOr<std::vector<SwitchReport>> SwitchPrimary(const std::string& target, bool promote,
                                                          std::chrono::milliseconds timeout);
  absl::Status Pause(WriteGate::Mode mode);  // both protocols
  absl::Status Resume();
  // The monitor saw the primary change; unplanned unless a switchover of that protocol runs.
  void OnPrimaryChange(routing::Protocol protocol, const std::string& from, const std::string& to);

 private:
  SwitchReport SwitchPostgres(const routing::NodeState& target, bool promote,
                              std::chrono::milliseconds timeout);
  SwitchReport SwitchRedis(const routing::NodeState& target, bool promote,
                           std::chrono::milliseconds timeout);
  // Steps 1, 2 and (after `move`) 4, 5, shared by both protocols.
  template <typename Move>
  SwitchReport Run(routing::Protocol protocol, const routing::NodeState& target,
                   std::chrono::milliseconds timeout, Move move);
  bool WaitPublished(routing::Protocol protocol, const std::string& node,
                     std::chrono::steady_clock::time_point deadline) const;

  const config::Config& config_;
  const TopologyHolder& topology_;
  WriteGates& gates_;
  Monitor& monitor_;
  Metrics* metrics_;
  std::mutex running_;  // one switchover at a time
  std::mutex state_mutex_;
  bool planned_[2] = {false, false};  // by protocol: a switchover is moving the primary
  std::chrono::steady_clock::time_point lost_at_[2]{};  // unplanned: when the primary went
};

}  // namespace nerava::proxy
