// Where the function loader publishes FunctionPolicy snapshots (pg_proc volatility + config
// allowlist) and sessions read them: a single atomic shared_ptr, like TopologyHolder, so a reader
// never waits for a reload and a snapshot never changes under it.
#pragma once

#include <atomic>
#include <memory>
#include <utility>

#include "nerava/routing/sql_classifier.h"

namespace nerava::proxy {

class FunctionPolicyHolder {
 public:
  using Snapshot = std::shared_ptr<const routing::FunctionPolicy>;

  // Starts with `initial` (the built-in fallback plus the allowlist, until pg_proc is loaded).
  explicit FunctionPolicyHolder(routing::FunctionPolicy initial = {})
      : policy_(std::make_shared<const routing::FunctionPolicy>(std::move(initial))) {}

  // Never null.
  Snapshot Get() const { return policy_.load(std::memory_order_acquire); }
  void Publish(Snapshot policy) { policy_.store(std::move(policy), std::memory_order_release); }

 private:
  std::atomic<Snapshot> policy_;
};

}  // namespace nerava::proxy
