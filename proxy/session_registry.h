// Live client sessions, so that a drain can ask each to finish (SIGTERM) and know when all have,
// and so that the monitor can tell them a node stopped answering. A session registers callbacks
// that run on its own executor; registration happens at connect and disconnect only, never per
// query.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>

#include "nerava/routing/topology.h"

namespace nerava::proxy {

// What a session can be asked from other threads; each must be safe to call from any thread.
struct SessionHooks {
  routing::Protocol protocol = routing::Protocol::kPostgres;  // whose nodes the session uses
  std::function<void()> shutdown;  // finish at the next message boundary (drain)
  // The monitor gave up on one of the protocol's nodes: drop the connections to it.
  std::function<void(const std::string& node)> node_down;
};

class SessionRegistry {
 public:
  uint64_t Add(SessionHooks hooks);
  void Remove(uint64_t id);
  size_t size() const;
  // Calls every session's shutdown function.
  void ShutdownAll();
  // Calls node_down of every session of `protocol`.
  void NodeDown(routing::Protocol protocol, const std::string& node);
  // Waits until no session is left or the timeout passes; true when none is left.
  bool WaitEmpty(std::chrono::milliseconds timeout);

 private:
  mutable std::mutex mutex_;
  std::condition_variable empty_;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, SessionHooks> sessions_;
};

// Removes a session from its registry when the session's coroutine frame ends, however it ends.
class SessionRegistration {
 public:
  SessionRegistration(SessionRegistry& registry, SessionHooks hooks)
      : registry_(registry), id_(registry.Add(std::move(hooks))) {}
  ~SessionRegistration() { registry_.Remove(id_); }
  SessionRegistration(const SessionRegistration&) = delete;
  SessionRegistration& operator=(const SessionRegistration&) = delete;

 private:
  SessionRegistry& registry_;
  uint64_t id_;
};

}  // namespace nerava::proxy
