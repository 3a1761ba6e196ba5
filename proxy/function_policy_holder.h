// Where the function loader publishes FunctionPolicy snapshots (pg_proc volatility + config
// allowlist) and sessions read them, like TopologyHolder (see SnapshotHolder).
#pragma once

#include <memory>
#include <utility>

#include "nerava/routing/sql_classifier.h"
#include "proxy/snapshot_holder.h"

namespace nerava::proxy {

class FunctionPolicyHolder : public SnapshotHolder<routing::FunctionPolicy> {
 public:
  // Starts with `initial` (the built-in fallback plus the allowlist, until pg_proc is loaded).
  explicit FunctionPolicyHolder(routing::FunctionPolicy initial = {})
      : SnapshotHolder(std::make_shared<const routing::FunctionPolicy>(std::move(initial))) {}
};

}  // namespace nerava::proxy
