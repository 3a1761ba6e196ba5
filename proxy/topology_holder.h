// Where the monitor publishes topology snapshots and sessions read them: a single atomic
// shared_ptr, so a reader never waits for the monitor and a snapshot never changes under it.
#pragma once

#include <atomic>
#include <memory>

#include "nerava/routing/topology.h"

namespace nerava::proxy {

class TopologyHolder {
 public:
  TopologyHolder() : snapshot_(std::make_shared<const routing::Topology>()) {}

  routing::TopologySnapshot Get() const { return snapshot_.load(std::memory_order_acquire); }
  void Publish(routing::TopologySnapshot snapshot) {
    snapshot_.store(std::move(snapshot), std::memory_order_release);
  }

 private:
  std::atomic<routing::TopologySnapshot> snapshot_;
};

}  // namespace nerava::proxy
