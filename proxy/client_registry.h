// Who is connected, for `show clients` on the admin socket. A session adds its row when it
// connects and changes it at the few moments that matter (logged in, server chosen); the
// coarse state is one lock-free pointer store, so even a per-query state change costs nothing
// measurable. The registry's lock is taken at connect, login, node change and disconnect only.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/asio.h"

namespace nerava::proxy {

struct ClientInfo {
  uint64_t id = 0;
  std::string protocol;  // "postgres" / "redis"
  std::string listener;  // listener name, as in client_connections{listener}
  std::string peer;      // "address:port" of the client
  std::string user;
  std::string database;
  std::string node;   // server node the session is connected to, "" before that
  std::string state;  // session state name
  std::string route;  // why the last request went where it did (RouteReasonName), "" before
  std::chrono::system_clock::time_point connected_at;
};

class ClientRegistry {
 public:
  struct Entry {
    ClientInfo info;                               // guarded by the registry's mutex
    std::atomic<const char*> state{"connecting"};  // a string literal
    std::atomic<const char*> route{""};            // a string literal (RouteReasonName)
  };

  std::shared_ptr<Entry> Add(std::string_view protocol, std::string_view listener,
                             std::string peer);
  void Remove(uint64_t id);
  // Changes `entry`'s row under the registry's lock.
  template <typename Fn>
  void Update(Entry& entry, Fn&& fn) {
    std::lock_guard lock(mutex_);
    fn(entry.info);
  }
  // A copy of every row, oldest connection first.
  std::vector<ClientInfo> List() const;
  size_t size() const;

 private:
  mutable std::mutex mutex_;
  uint64_t next_id_ = 1;
  std::map<uint64_t, std::shared_ptr<Entry>> entries_;
};

// "address:port" of the socket's peer ("[v6]:port"), "?" when it is already gone.
std::string PeerOf(const tcp::socket& socket);

// One session's row: added on construction, removed on destruction. A record without a
// registry (default-constructed) ignores every call.
class ClientRecord {
 public:
  ClientRecord() = default;
  ClientRecord(ClientRegistry* registry, std::string_view protocol, std::string_view listener,
               std::string peer);
  ~ClientRecord();
  ClientRecord(const ClientRecord&) = delete;
  ClientRecord& operator=(const ClientRecord&) = delete;

  void SetLogin(std::string user, std::string database);
  void SetNode(std::string node);
  // `state` must be a string with static storage (a literal): it is stored, not copied.
  void SetState(const char* state) {
    if (entry_) entry_->state.store(state, std::memory_order_relaxed);
  }
  // Lock-free, per request: `route` must be a string literal too.
  void SetRoute(const char* route) {
    if (entry_) entry_->route.store(route, std::memory_order_relaxed);
  }

 private:
  ClientRegistry* registry_ = nullptr;
  std::shared_ptr<ClientRegistry::Entry> entry_;
};

}  // namespace nerava::proxy
