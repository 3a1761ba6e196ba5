// The data phase of a PostgreSQL session: client requests are grouped into batches (a Query, a
// FunctionCall, or extended-protocol messages up to Sync); each batch goes to one of the
// session's server connections, and replies go back to the client in batch order.
//
//   client ─read─▶ client_in ─frame─▶ Route(batch) ─┬─▶ server A  (tracker A: pending requests)
//                                                   └─▶ server B  (tracker B)
//   in_flight_: [A, B, A]  (servers owing the client a batch's replies, in request order)
//   client ◀─write─ replies of in_flight_.front() until its ReadyForQuery, then the next
//
// Before a batch, a server that lags behind the session's state is brought up to date with
// requests of the proxy's own (SET replay, lazily prepared statements); their replies are
// swallowed by the server's ReplyTracker. Only the reply loop writes to the client.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "nerava/protocol/pg/framer.h"
#include "nerava/protocol/pg/messages.h"
#include "nerava/protocol/pg/reply_tracker.h"
#include "nerava/routing/router.h"
#include "nerava/routing/sql_classifier.h"
#include "proxy/asio.h"
#include "proxy/byte_buffer.h"
#include "proxy/pg_backend.h"
#include "proxy/pg_context.h"
#include "proxy/stream.h"

namespace nerava::proxy {

// One server connection of a session, with what the session knows about its state.
struct PgServer {
  explicit PgServer(std::unique_ptr<PgBackend> connection, const pg::Limits& limits)
      : backend(std::move(connection)), framer(pg::Direction::kBackend, limits) {}

  std::unique_ptr<PgBackend> backend;
  pg::Framer framer;
  pg::ReplyTracker tracker;
  bool forwarding = true;  // verdict for the pieces of the message being read
  std::string out;         // requests gathered for this server from one client read
  uint64_t settings_version = 0;  // the session's SET state this server has applied
  bool discard_pending = false;   // the session ran DISCARD ALL elsewhere
  // Named prepared statements this server has, with the session's version of each.
  std::map<std::string, uint64_t, std::less<>> prepared;
};

// What the relay reports about finished batches (metrics, read-your-writes bookkeeping).
struct PgBatchObserver {
  // `route` is "primary" or "replica": the role of the node when the batch was routed.
  std::function<void(const PgServer& server, const char* route, char transaction_status,
                     std::chrono::steady_clock::duration took)>
      on_batch_done;
  // A server connection was opened for the session (after the first).
  std::function<void(const PgBackend& server)> on_server_opened;
  // The server that now runs the session's requests changed (cancel requests must follow it).
  std::function<void(const PgBackend& server)> on_active_server;
};

class PgRelay {
 public:
  // How the relay opens further server connections: as the client, with its own parameters.
  struct Login {
    StartupParameters parameters;
    std::string user;
    std::string password;
  };

  PgRelay(const PgContext& context, Stream& client, ByteBuffer& client_in,
          std::unique_ptr<PgBackend> first_server, Login login, PgBatchObserver observer);

  // Runs until the client terminates or goes away, a server is lost, the client sends something
  // unframeable, or RequestShutdown() is called.
  awaitable<void> Run();
  // From the session's executor: stop at the next message boundary.
  void RequestShutdown();

  // After Run(): the error the client should be sent, if the stream is at a message boundary.
  const std::optional<pg::Error>& closing_error() const { return closing_error_; }
  bool client_stream_clean() const { return client_stream_clean_; }
  void CloseServers();

 private:
  awaitable<void> ClientToServers();
  awaitable<void> ServersToClient();
  awaitable<bool> ForwardRepliesOf(PgServer& server);
  awaitable<bool> WaitForWork();
  awaitable<bool> ReadServer(PgServer& server);
  void MarkActive(PgServer& server);
  // Chooses the server for a batch that starts with the client message at the front of
  // `pending` (which holds the rest of what the client sent, for a look at the whole batch).
  awaitable<PgServer*> RouteBatch(std::string_view pending);
  routing::StatementClass ClassifyBatch(std::string_view pending);
  void ApplyPins(const routing::StatementClass& batch);
  void ApplySettings(const routing::StatementClass& batch, PgServer& target);
  awaitable<PgServer*> ServerFor(const routing::NodeState& node);
  // Requests of the proxy's own, ahead of a client message, so the server matches the session.
  void BringUpToDate(PgServer& server);
  void PrepareLazily(PgServer& server, char type, std::string_view message);
  void Wake();

  struct InFlight {
    PgServer* server;
    std::chrono::steady_clock::time_point started;
    const char* route;  // "primary" / "replica"
    bool writes;        // acknowledged writes move the session's read-your-writes mark
  };
  // Named prepared statements of the session: the client's Parse message, kept to prepare the
  // statement lazily on whichever server runs it.
  struct Prepared {
    std::string parse_message;
    uint64_t version;
    std::shared_ptr<const routing::StatementClass> statement;
  };
  const PgContext& context_;
  Stream& client_;
  ByteBuffer& client_in_;
  pg::Framer client_framer_;
  PgBatchObserver observer_;
  asio::steady_timer work_signal_;  // wakes the idle reply loop

  Login login_;
  std::map<std::string, std::unique_ptr<PgServer>> servers_;  // by node name
  routing::SessionRouteState route_state_;
  uint32_t pins_ = routing::kPinNone;
  // SET state to replay on other servers: (parameter, statement) in the order first set.
  std::vector<std::pair<std::string, std::string>> settings_;
  uint64_t settings_version_ = 0;
  std::map<std::string, Prepared, std::less<>> prepared_;
  uint64_t prepared_versions_ = 0;
  const char* batch_route_ = "primary";  // of the batch RouteBatch chose last
  const char* transaction_route_ = "primary";  // of the batch that left a transaction open
  bool batch_writes_ = true;
  bool write_unacknowledged_ = false;   // a write was sent; its ReadyForQuery 'I' not seen yet
  PgServer* primary_ = nullptr;
  PgServer* batch_server_ = nullptr;       // where the open extended batch goes
  PgServer* transaction_server_ = nullptr; // holds the open transaction, if any
  PgServer* last_server_ = nullptr;        // the most recent batch's server (COPY data follows it)
  PgServer* active_server_ = nullptr;      // last reported to observer_.on_active_server
  char client_message_type_ = 0;           // type of the client message being read
  bool server_sent_fatal_ = false;         // a server explained its own close
  std::deque<InFlight> in_flight_;
  std::string client_out_;

  bool shutdown_requested_ = false;
  bool client_done_ = false;
  bool client_stream_clean_ = true;
  std::optional<pg::Error> closing_error_;
};

}  // namespace nerava::proxy
