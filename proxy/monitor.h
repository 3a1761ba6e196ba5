// The topology monitor: one thread per node checks it every `monitor.interval` (so one slow node
// never delays another), and every finished check publishes a fresh immutable snapshot.
//
//   node thread ──Check()──▶ NodeProbe ──result──▶ Monitor::Record ──▶ BuildSnapshot ──▶ holder
//   (x N nodes)                                    (mutex, not on the data path)   (atomic swap)
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <stop_token>
#include <thread>
#include <vector>

#include "nerava/config/config.h"
#include "nerava/routing/topology.h"
#include "proxy/node_probe.h"
#include "proxy/topology_holder.h"

namespace nerava::proxy {

class Monitor {
 public:
  Monitor(const config::Config& config, TopologyHolder& holder);
  ~Monitor();  // stops and joins the node threads
  Monitor(const Monitor&) = delete;
  Monitor& operator=(const Monitor&) = delete;

  void Start();

 private:
  struct Slot {
    routing::Protocol protocol;
    size_t index;  // into the protocol's node list
    std::unique_ptr<NodeProbe> probe;
  };

  void RunNode(std::stop_token stop, Slot& slot);
  void Record(const Slot& slot, const ProbeResult& result);
  routing::TopologySnapshot BuildSnapshotLocked();

  const std::chrono::milliseconds interval_;
  const std::chrono::milliseconds timeout_;
  const int failure_threshold_;
  const std::string primary_region_;
  TopologyHolder& holder_;

  std::mutex mutex_;
  routing::Topology state_;  // guarded by mutex_
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<std::jthread> threads_;
};

// Picks the primary among nodes that are up and say they are primary: for PostgreSQL the
// highest timeline wins; a tie goes to `primary_region`, then to config order. -1 when none.
int ChoosePrimary(const routing::ProtocolTopology& topology, routing::Protocol protocol,
                  const std::string& primary_region);

}  // namespace nerava::proxy
