// Everything a Redis session needs that outlives it and is shared by all sessions of the Redis
// listener: the config section, TLS contexts, decoder limits and the process-wide services
// (topology, drain). Immutable after start-up.
#pragma once

#include <chrono>
#include <memory>

#include "absl/status/statusor.h"
#include "nerava/config/config.h"
#include "nerava/protocol/redis/decoder.h"
#include "nerava/routing/router.h"
#include "proxy/asio.h"
#include "proxy/session_registry.h"
#include "proxy/topology_holder.h"
#include "proxy/write_gate.h"

namespace nerava::proxy {

class Metrics;

class ClientRegistry;

struct RedisContext {
  config::Redis settings;
  std::chrono::milliseconds failover_wait{30000};
  config::TcpKeepalive server_keepalive;
  redis::Limits limits;
  std::shared_ptr<ssl::context> server_tls;   // null: clients speak plain RESP
  std::shared_ptr<ssl::context> backend_tls;  // null: servers are reached without TLS
  TopologyHolder* topology = nullptr;
  SessionRegistry* sessions = nullptr;
  WriteGate* write_gate = nullptr;  // null: writes never held
  ClientRegistry* clients = nullptr;  // null: sessions not listed by `show clients`
  Metrics* metrics = nullptr;  // null: nothing counted
  routing::RoutePolicy route_policy;  // read/write splitting (DESIGN §5, §6)
};

// Builds the context of the Redis listener and loads its TLS material. InvalidArgument (naming
// the file and key) when a certificate or key cannot be loaded.
absl::StatusOr<std::shared_ptr<const RedisContext>> MakeRedisContext(const config::Config& config,
                                                                     TopologyHolder* topology,
                                                                     SessionRegistry* sessions,
                                                                     Metrics* metrics = nullptr,
                                                                     WriteGate* write_gate = nullptr,
                                                                     ClientRegistry* clients = nullptr);

}  // namespace nerava::proxy
