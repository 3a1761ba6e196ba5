#include "proxy/client_registry.h"

namespace nerava::proxy {

std::shared_ptr<ClientRegistry::Entry> ClientRegistry::Add(std::string_view protocol,
                                                           std::string_view listener,
                                                           std::string peer) {
  auto entry = std::make_shared<Entry>();
  entry->info.protocol = protocol;
  entry->info.listener = listener;
  entry->info.peer = std::move(peer);
  entry->info.connected_at = std::chrono::system_clock::now();
  std::lock_guard lock(mutex_);
  entry->info.id = next_id_++;
  entries_.emplace(entry->info.id, entry);
  return entry;
}

void ClientRegistry::Remove(uint64_t id) {
  std::lock_guard lock(mutex_);
  entries_.erase(id);
}

std::vector<ClientInfo> ClientRegistry::List() const {
  std::lock_guard lock(mutex_);
  std::vector<ClientInfo> out;
  out.reserve(entries_.size());
  for (const auto& [id, entry] : entries_) {
    out.push_back(entry->info);
    out.back().state = entry->state.load(std::memory_order_relaxed);
    out.back().route = entry->route.load(std::memory_order_relaxed);
  }
  return out;
}

size_t ClientRegistry::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

ClientRecord::ClientRecord(ClientRegistry* registry, std::string_view protocol,
                           std::string_view listener, std::string peer)
    : registry_(registry) {
  if (registry_) entry_ = registry_->Add(protocol, listener, std::move(peer));
}

ClientRecord::~ClientRecord() {
  if (registry_ && entry_) registry_->Remove(entry_->info.id);
}

void ClientRecord::SetLogin(std::string user, std::string database) {
  if (!entry_) return;
  registry_->Update(*entry_, [&](ClientInfo& info) {
    info.user = std::move(user);
    info.database = std::move(database);
  });
}

std::string PeerOf(const tcp::socket& socket) {
  error_code ec;
  const tcp::endpoint peer = socket.remote_endpoint(ec);
  if (ec) return "?";
  const std::string address = peer.address().to_string();
  return (peer.address().is_v6() ? "[" + address + "]" : address) + ":" +
         std::to_string(peer.port());
}

void ClientRecord::SetNode(std::string node) {
  if (!entry_) return;
  registry_->Update(*entry_, [&](ClientInfo& info) { info.node = std::move(node); });
}

}  // namespace nerava::proxy
