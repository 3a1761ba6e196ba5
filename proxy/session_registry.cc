#include "proxy/session_registry.h"

#include <vector>

namespace nerava::proxy {

uint64_t SessionRegistry::Add(SessionHooks hooks) {
  std::lock_guard lock(mutex_);
  const uint64_t id = next_id_++;
  sessions_.emplace(id, std::move(hooks));
  return id;
}

void SessionRegistry::Remove(uint64_t id) {
  std::lock_guard lock(mutex_);
  sessions_.erase(id);
  if (sessions_.empty()) empty_.notify_all();
}

size_t SessionRegistry::size() const {
  std::lock_guard lock(mutex_);
  return sessions_.size();
}

void SessionRegistry::ShutdownAll() {
  std::vector<std::function<void()>> callbacks;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, hooks] : sessions_) callbacks.push_back(hooks.shutdown);
  }
  for (auto& fn : callbacks) fn();  // outside the lock: they post to other threads
}

void SessionRegistry::NodeDown(routing::Protocol protocol, const std::string& node) {
  std::vector<std::function<void(const std::string&)>> callbacks;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, hooks] : sessions_) {
      if (hooks.protocol == protocol && hooks.node_down) callbacks.push_back(hooks.node_down);
    }
  }
  for (auto& fn : callbacks) fn(node);  // outside the lock: they post to other threads
}

bool SessionRegistry::WaitEmpty(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return empty_.wait_for(lock, timeout, [this] { return sessions_.empty(); });
}

}  // namespace nerava::proxy
