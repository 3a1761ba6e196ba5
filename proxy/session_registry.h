// Live client sessions, so that a drain can ask each to finish (SIGTERM) and know when all have.
// A session registers a callback that runs on its own executor; registration happens at connect
// and disconnect only, never per query.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_map>

namespace nerava::proxy {

class SessionRegistry {
 public:
  using ShutdownFn = std::function<void()>;  // must be safe to call from any thread

  uint64_t Add(ShutdownFn shutdown);
  void Remove(uint64_t id);
  size_t size() const;
  // Calls every session's shutdown function.
  void ShutdownAll();
  // Waits until no session is left or the timeout passes; true when none is left.
  bool WaitEmpty(std::chrono::milliseconds timeout);

 private:
  mutable std::mutex mutex_;
  std::condition_variable empty_;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, ShutdownFn> sessions_;
};

// Removes a session from its registry when the session's coroutine frame ends, however it ends.
class SessionRegistration {
 public:
  SessionRegistration(SessionRegistry& registry, SessionRegistry::ShutdownFn shutdown)
      : registry_(registry), id_(registry.Add(std::move(shutdown))) {}
  ~SessionRegistration() { registry_.Remove(id_); }
  SessionRegistration(const SessionRegistration&) = delete;
  SessionRegistration& operator=(const SessionRegistration&) = delete;

 private:
  SessionRegistry& registry_;
  uint64_t id_;
};

}  // namespace nerava::proxy
