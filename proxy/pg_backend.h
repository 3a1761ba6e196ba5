// A proxy-owned connection to one PostgreSQL server, opened for one client session and kept for
// that session's whole life (so temp tables, SET ROLE, advisory locks behave as direct).
//
//   ConnectPgBackend:  TCP connect ─▶ [SSLRequest ─▶ TLS] ─▶ StartupMessage (client's own
//   parameters, verbatim) ─▶ SCRAM / MD5 / cleartext ─▶ ParameterStatus*, BackendKeyData,
//   ReadyForQuery ─▶ ready for the data phase.
// Everything is bounded by one connect deadline.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nerava/config/config.h"
#include "nerava/protocol/pg/framer.h"
#include "nerava/protocol/pg/messages.h"
#include "nerava/routing/topology.h"
#include "proxy/asio.h"
#include "proxy/byte_buffer.h"
#include "proxy/metrics.h"
#include "proxy/stream.h"

namespace nerava::proxy {

struct PgBackendTarget {
  std::string node_name;
  std::string host;
  uint16_t port = 0;
  // The node's role when the connection was asked for: a connection opened to a standby is not
  // reused after its promotion (it told its client in_hot_standby=on).
  routing::Role role = routing::Role::kPrimary;
  // NodeState::times_marked_down then: a parked connection is reused only while it is the same.
  uint64_t times_marked_down = 0;
};

struct PgBackendOptions {
  config::BackendTls tls;
  std::shared_ptr<ssl::context> tls_context;
  std::chrono::milliseconds connect_timeout{5000};
  pg::Limits limits;
  Metrics* metrics = nullptr;  // counts the open connection in backend_connections when set
  config::TcpKeepalive keepalive;
};

struct PgBackend {
  explicit PgBackend(tcp::socket socket) : stream(std::move(socket)) {}

  PgBackendTarget target;
  Stream stream;
  ByteBuffer buffer;           // bytes read past the start-up ReadyForQuery, if any
  pg::BackendKeyData key;      // the server's key, for cancel requests
  std::string startup_replay;  // ParameterStatus and NoticeResponse messages, as received
  char transaction_status = 'I';
  GaugeHold open_gauge;  // backend_connections{protocol="postgres",node} while it exists
};

struct PgBackendResult {
  std::unique_ptr<PgBackend> backend;  // null on failure
  // On failure: a complete ErrorResponse for the client (the server's own when it sent one).
  std::string client_error;
};

using StartupParameters = std::vector<std::pair<std::string, std::string>>;

awaitable<PgBackendResult> ConnectPgBackend(const PgBackendTarget& target,
                                            const PgBackendOptions& options,
                                            const StartupParameters& parameters,
                                            const std::string& user, const std::string& password);

}  // namespace nerava::proxy
