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
};

// What the relay reports about finished batches (metrics, read-your-writes bookkeeping).
struct PgBatchObserver {
  std::function<void(const PgServer& server, char transaction_status,
                     std::chrono::steady_clock::duration took)>
      on_batch_done;
  // The server that now runs the session's requests changed (cancel requests must follow it).
  std::function<void(const PgBackend& server)> on_active_server;
};

class PgRelay {
 public:
  PgRelay(const PgContext& context, Stream& client, ByteBuffer& client_in,
          std::unique_ptr<PgBackend> first_server, PgBatchObserver observer);

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
  PgServer& RouteBatch(char first_type);
  void Wake();

  const PgContext& context_;
  Stream& client_;
  ByteBuffer& client_in_;
  pg::Framer client_framer_;
  PgBatchObserver observer_;

  std::map<std::string, std::unique_ptr<PgServer>> servers_;  // by node name
  PgServer* primary_ = nullptr;
  PgServer* batch_server_ = nullptr;       // where the open extended batch goes
  PgServer* transaction_server_ = nullptr; // holds the open transaction, if any
  PgServer* last_server_ = nullptr;        // the most recent batch's server (COPY data follows it)
  PgServer* active_server_ = nullptr;      // last reported to observer_.on_active_server
  char client_message_type_ = 0;           // type of the client message being read
  bool server_sent_fatal_ = false;         // a server explained its own close
  struct InFlight {
    PgServer* server;
    std::chrono::steady_clock::time_point started;
  };
  std::deque<InFlight> in_flight_;
  std::string client_out_;
  asio::steady_timer work_signal_;

  bool shutdown_requested_ = false;
  bool client_done_ = false;
  bool client_stream_clean_ = true;
  std::optional<pg::Error> closing_error_;
};

}  // namespace nerava::proxy
