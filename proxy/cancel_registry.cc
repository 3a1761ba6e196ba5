#include "proxy/cancel_registry.h"

#include <openssl/rand.h>

namespace nerava::proxy {
namespace {

int32_t RandomInt32() {
  int32_t value = 0;
  // RAND_bytes only fails when the OS has no entropy source, where nothing else works either.
  RAND_bytes(reinterpret_cast<unsigned char*>(&value), sizeof(value));
  return value;
}

}  // namespace

pg::BackendKeyData CancelRegistry::Register() {
  std::lock_guard lock(mutex_);
  for (;;) {
    // Positive pids, like a server's, for clients that print them.
    const int32_t pid = RandomInt32() & 0x7fffffff;
    if (pid == 0 || entries_.contains(pid)) continue;
    const int32_t secret = RandomInt32();
    entries_.emplace(pid, std::make_pair(secret, std::nullopt));
    return {pid, secret};
  }
}

void CancelRegistry::SetTarget(const pg::BackendKeyData& client_key, CancelTarget target) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(client_key.process_id);
  if (it != entries_.end()) it->second.second = std::move(target);
}

void CancelRegistry::Unregister(const pg::BackendKeyData& client_key) {
  std::lock_guard lock(mutex_);
  entries_.erase(client_key.process_id);
}

std::optional<CancelTarget> CancelRegistry::Find(const pg::BackendKeyData& client_key) const {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(client_key.process_id);
  if (it == entries_.end() || it->second.first != client_key.secret_key) return std::nullopt;
  return it->second.second;
}

}  // namespace nerava::proxy
