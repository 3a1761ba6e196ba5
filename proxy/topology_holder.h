// Where the monitor publishes topology snapshots and sessions read them (see SnapshotHolder).
#pragma once

#include <memory>

#include "nerava/routing/topology.h"
#include "proxy/snapshot_holder.h"

namespace nerava::proxy {

class TopologyHolder : public SnapshotHolder<routing::Topology> {
 public:
  TopologyHolder() : SnapshotHolder(std::make_shared<const routing::Topology>()) {}
};

}  // namespace nerava::proxy
