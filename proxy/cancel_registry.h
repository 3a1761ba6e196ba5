// Maps the BackendKeyData the proxy handed to a client to the server connection that currently
// runs that client's queries, so a CancelRequest (which arrives on a new connection, maybe on
// another worker thread) reaches the right server process.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "nerava/protocol/pg/messages.h"

namespace nerava::proxy {

struct CancelTarget {
  std::string host;
  uint16_t port = 0;
  pg::BackendKeyData key;  // the server's own key
};

class CancelRegistry {
 public:
  // A fresh random key for a new client session, registered with no target yet.
  pg::BackendKeyData Register();
  void SetTarget(const pg::BackendKeyData& client_key, CancelTarget target);
  void Unregister(const pg::BackendKeyData& client_key);
  // The target for a cancel request, if the key (pid and secret) matches a live session.
  std::optional<CancelTarget> Find(const pg::BackendKeyData& client_key) const;

 private:
  mutable std::mutex mutex_;  // cancels and session starts are rare next to queries
  std::unordered_map<int32_t, std::pair<int32_t, std::optional<CancelTarget>>> entries_;
};

}  // namespace nerava::proxy
