// Everything a PostgreSQL session needs that outlives it and is shared by all sessions of one
// listener: the config section, TLS contexts, users with precomputed SCRAM secrets, and the
// process-wide services (topology, cancel keys, drain). Immutable after start-up.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "nerava/config/config.h"
#include "nerava/protocol/pg/auth.h"
#include "nerava/protocol/pg/framer.h"
#include "nerava/routing/router.h"
#include "nerava/routing/sql_classifier.h"
#include "proxy/asio.h"
#include "proxy/cancel_registry.h"
#include "proxy/function_policy_holder.h"
#include "proxy/session_registry.h"
#include "proxy/topology_holder.h"
#include "proxy/write_gate.h"

namespace nerava::proxy {

class ClientRegistry;
class Metrics;

struct PgUserEntry {
  std::string name;
  std::string password;          // checks md5 clients
  std::string backend_password;  // what the proxy sends to servers
  pg::ScramSecret scram;         // derived once at start-up: PBKDF2 is deliberately slow
};

struct PgContext {
  config::Postgres settings;
  std::chrono::milliseconds failover_wait{30000};
  config::TcpKeepalive server_keepalive;
  bool read_only = false;  // the pg_readonly listener
  pg::Limits limits;
  std::map<std::string, PgUserEntry, std::less<>> users;
  pg::ScramSecret unknown_user_scram;  // unknown users get a full, failing exchange
  std::shared_ptr<ssl::context> server_tls;  // null: SSLRequest answered 'N'
  std::shared_ptr<ssl::context> backend_tls;
  TopologyHolder* topology = nullptr;
  CancelRegistry* cancels = nullptr;
  SessionRegistry* sessions = nullptr;
  Metrics* metrics = nullptr;  // null: nothing counted
  ClientRegistry* clients = nullptr;  // null: sessions not listed by `show clients`
  WriteGate* write_gate = nullptr;    // null: writes never held (tests without a server)
  // Read/write splitting (DESIGN §4, §6).
  routing::RoutePolicy route_policy;
  routing::FunctionPolicy functions;  // built-in volatile fallback + config allowlist
  // The current policy from pg_proc (FunctionLoader); replaces `functions`. Null: use `functions`.
  FunctionPolicyHolder* function_policies = nullptr;
};

struct PgServices {
  TopologyHolder* topology;
  CancelRegistry* cancels;
  SessionRegistry* sessions;
  Metrics* metrics = nullptr;
  ClientRegistry* clients = nullptr;
  WriteGate* write_gate = nullptr;
  FunctionPolicyHolder* function_policies = nullptr;
};

// Builds the context of one PostgreSQL listener: derives SCRAM secrets, loads TLS material.
// InvalidArgument (naming the file and key) when a certificate or key cannot be loaded.
absl::StatusOr<std::shared_ptr<const PgContext>> MakePgContext(const config::Config& config,
                                                               bool read_only,
                                                               const PgServices& services);

}  // namespace nerava::proxy
