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
//
// Failover (DESIGN §7, pg_relay_failover.cc): a server connection that is lost without a FATAL
// of its own (crash, network, a switchover's abort) does not end the session. Its batches get
// a retryable error (or are re-run elsewhere when nothing was sent yet and that is safe), a
// transaction it held is answered as PostgreSQL answers an aborted one until the client ends
// it, and the next batch runs on whichever node is primary now, session state replayed.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

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
#include "proxy/wake_signal.h"
#include "proxy/write_gate.h"

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
  std::string sending;     // what WriteServer is writing now
  uint64_t settings_version = 0;  // the session's SET state this server has applied
  bool discard_pending = false;   // the session ran DISCARD ALL elsewhere
  // Named prepared statements this server has, with the session's version of each.
  std::map<std::string, uint64_t, std::less<>> prepared;
  bool writing = false;  // a write to the server is under way (both loops may write)
  // The idle session watches its primary for messages of its own (NOTIFY, a FATAL): the wait
  // stays armed across batches, since arming it costs a syscall.
  bool watch_armed = false;
  bool async_readable = false;  // the watch fired while the session was idle
  bool lost = false;     // the connection broke; kept only while batches still refer to it
  int in_use = 0;        // coroutines suspended with a reference to it (ServerInUse)
};

// Marks a server as referenced across a suspension: a lost server is destroyed only when no
// coroutine can resume into it.
class ServerInUse {
 public:
  explicit ServerInUse(PgServer& server) : server_(server) { ++server_.in_use; }
  ~ServerInUse() { --server_.in_use; }
  ServerInUse(const ServerInUse&) = delete;
  ServerInUse& operator=(const ServerInUse&) = delete;

 private:
  PgServer& server_;
};

// What the relay reports about finished batches (metrics, read-your-writes bookkeeping).
struct PgBatchObserver {
  // `route` is "primary" or "replica": the role of the node when the batch was routed.
  std::function<void(const PgServer& server, const char* route, char transaction_status,
                     std::chrono::steady_clock::duration took)>
      on_batch_done;
  // The server that now runs the session's requests changed (cancel requests must follow it).
  std::function<void(const PgBackend& server)> on_active_server;
  // A batch was routed by the policy (not by a transaction or a pin to its server).
  std::function<void(routing::RouteReason reason)> on_routed;
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
  ~PgRelay();
  PgRelay(const PgRelay&) = delete;
  PgRelay& operator=(const PgRelay&) = delete;

  // Runs until the client terminates or goes away, a server is lost, the client sends something
  // unframeable, or RequestShutdown() is called.
  awaitable<void> Run();
  // From the session's executor: stop at the next message boundary.
  void RequestShutdown();
  // From the session's executor: the monitor gave up on `node` (it stopped answering its
  // checks). A connection to it is lost as if it had broken: a frozen or unreachable server
  // sends no RST, and a statement waiting on it would wait for TCP to give up (minutes).
  void OnNodeDown(const std::string& node);

  // After Run(): the error the client should be sent, if the stream is at a message boundary.
  const std::optional<pg::Error>& closing_error() const { return closing_error_; }
  bool client_stream_clean() const { return client_stream_clean_; }
  void CloseServers();
  // After Run(): the server connections a next session could use as they are (idle, nothing
  // owed, the client ended the session cleanly); they leave the relay.
  std::vector<std::unique_ptr<PgBackend>> TakeReusableServers();

 private:
  awaitable<void> ClientToServers();
  awaitable<void> ForwardClientRequests();
  awaitable<void> ServersToClient();
  awaitable<bool> ForwardRepliesOf(PgServer& server);
  // kWoken: a parked read (below) ended by Wake().
  enum class ReadResult { kOk, kLost, kEnd, kWoken };
  // With `park`, the read is one Wake() may end (the idle reply loop's).
  awaitable<ReadResult> ReadServer(PgServer& server, asio::cancellation_signal* park = nullptr);
  // Sends the server's `out`, one writer at a time (the reply loop writes retries too).
  awaitable<bool> WriteServer(PgServer& server);
  // The common case of WriteServer without its coroutine frames: when nothing else is writing
  // to the server and its socket takes all of `out` now. False when WriteServer must send the
  // rest; otherwise `written` says whether the write succeeded.
  bool WriteOutInPlace(PgServer& server, bool& written);
  void MarkActive(PgServer& server);
  // The batch at the front got its ReadyForQuery: transaction and read-your-writes bookkeeping.
  void FinishBatch(PgServer& server, char status);
  // Chooses the server for a batch that starts with the client message at the front of
  // `pending` (which holds the rest of what the client sent, for a look at the whole batch).
  // Pushes the batch's InFlight entry; null when the proxy answers the batch itself.
  awaitable<PgServer*> RouteBatch(std::string_view pending, bool complete);
  routing::StatementClass ClassifyBatch(std::string_view pending);
  void ApplyPins(const routing::StatementClass& batch);
  void ApplySettings(const routing::StatementClass& batch, PgServer& target);
  // The session's connection to `node` (opened on first use); null when `node` is null or the
  // connection cannot be opened.
  awaitable<PgServer*> ServerFor(const routing::NodeState* node);
  // Waits while the write gate holds this kind of work; false when `deadline` passed first.
  awaitable<bool> PassGate(bool write, std::chrono::steady_clock::time_point deadline);
  // Route() until a node takes the batch: waits while the write gate holds it or while no
  // primary is known (a failover), up to failover.wait. Null when nothing could take it.
  awaitable<PgServer*> ChooseServer(const routing::StatementClass& batch);
  bool InTransaction() const { return transaction_server_ != nullptr || lost_transaction_; }

  // pg_relay_idle.cc
  awaitable<bool> WaitForWork();
  // The idle reply loop waits on a server's socket instead of a posted wake-up when it can:
  // the server the last batch went to (the next batch most likely goes there too, and its
  // replies then resume the loop straight from the reactor), or the primary when its watch saw
  // it send something of its own.
  PgServer* IdleReadTarget();
  // Forwards the whole messages a server sent while no batch was in flight (NOTIFY, a FATAL).
  awaitable<bool> ForwardUnrequested(PgServer& server);
  // A batch was queued: does the reply loop see it without Wake()? (It is parked on the server
  // that answers the batch now at the front.)
  bool ReplyLoopWillSeeReplies() const;
  bool BatchWaitsOn(const PgServer& server) const;  // an in-flight batch expects its replies
  void WatchForAsyncMessages(PgServer& server);
  void OnServerReadable(PgServer* server, error_code ec);
  // Resumes the idle reply loop: ends its parked read, or signals it.
  void Wake();

  // pg_relay_failover.cc
  void LoseServer(PgServer& server, const std::string& why);
  void AbortWrites();
  void MaybeReleaseWriteTicket();
  awaitable<bool> AnswerFailedBatch();
  // Runs the front batch again on the primary; false when the session must end.
  awaitable<bool> RetryBatch();
  bool Retryable(const routing::StatementClass& batch) const;
  // Replies that precede a statement's result (ParseComplete, BindComplete, descriptions).
  static bool IsPreamble(char type);
  // An ErrorResponse body that a retry on the primary answers better: 25006 (a write on a
  // standby) or the server's FATAL goodbye before it ran anything.
  static bool RetryWorthy(std::string_view error_body);
  static bool IsFatal(std::string_view error_message);  // a whole ErrorResponse message
  struct InFlight;
  void AnswerInLostTransaction(const routing::StatementClass& batch, InFlight& entry);
  // A read bigger than this is not kept for a retry.
  static constexpr size_t kMaxRetryBytes = 64 * 1024;
  // Requests of the proxy's own, ahead of a client message, so the server matches the session.
  void BringUpToDate(PgServer& server);
  void PrepareLazily(PgServer& server, char type, std::string_view message);

  // What the proxy answers by itself for a batch whose server is gone.
  enum class LocalAnswer : uint8_t {
    kNone,             // the server answers
    kError,            // `error`, then ReadyForQuery(status_after)
    kRollback,         // COMMIT/ROLLBACK of a transaction lost with its server: it ended
  };
  struct InFlight {
    PgServer* server = nullptr;  // null: answered by the proxy (LocalAnswer)
    std::chrono::steady_clock::time_point started{};
    const char* route = "primary";  // "primary" / "replica"
    bool writes = false;  // acknowledged writes move the session's read-your-writes mark
    routing::StatementKind kind = routing::StatementKind::kRead;
    bool complete = false;       // the client sent the batch's end (Query, Sync)
    bool in_transaction = false;  // routed inside a transaction block
    LocalAnswer answer = LocalAnswer::kNone;
    std::optional<pg::Error> error;
    bool error_sent = false;
    char status_after = 'I';
    std::string types;  // message types of a batch the proxy answers (extended protocol)
    // A read that may run again elsewhere (replica 25006, a replica lost before it answered):
    // its bytes, until the first reply that reaches the client.
    bool retryable = false;
    bool forwarded = false;  // something of its reply reached the client
    bool refused = false;    // the server refused it in a way a retry fixes: replies swallowed
    std::string retry_bytes;
    std::string held_replies;  // ParseComplete & co. held back while a retry is still possible
    std::string retry_error;   // the replica's refusal, for the client if the retry cannot run
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
  WakeSignal work_signal_;  // wakes the idle reply loop
  PgServer* parked_on_ = nullptr;  // the idle reply loop's read waits on this server
  asio::cancellation_signal park_cancel_;  // Wake() ends that read
  // Marks the reply loop parked for one read, however the read ends.
  class Parked {
   public:
    Parked(PgRelay& relay, PgServer* server) : relay_(relay) { relay_.parked_on_ = server; }
    ~Parked() {
      relay_.parked_on_ = nullptr;
      relay_.park_cancel_.slot().clear();
    }
    Parked(const Parked&) = delete;
    Parked& operator=(const Parked&) = delete;

   private:
    PgRelay& relay_;
  };
  PgServer* replies_from_ = nullptr;  // the server that answered the last batch

  Login login_;
  std::map<std::string, std::unique_ptr<PgServer>> servers_;  // by node name
  // Kept while batches or suspended coroutines refer to them.
  std::vector<std::unique_ptr<PgServer>> lost_servers_;
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
  bool batch_open_ = false;                // an extended batch is open (until its Sync)
  PgServer* transaction_server_ = nullptr; // holds the open transaction, if any
  PgServer* last_server_ = nullptr;        // the most recent batch's server (COPY data follows it)
  PgServer* active_server_ = nullptr;      // last reported to observer_.on_active_server
  char client_message_type_ = 0;           // type of the client message being read
  bool server_sent_fatal_ = false;         // a server explained its own close
  std::deque<InFlight> in_flight_;
  std::string client_out_;

  // Failover: a transaction whose server was lost, until the client ends it.
  bool lost_transaction_ = false;
  std::optional<pg::Error> lost_transaction_error_;  // not told to the client yet
  std::unique_ptr<WriteGate::Seat> gate_seat_;  // taken at the first write; before the ticket
  std::optional<WriteGate::Ticket> write_ticket_;
  PgServer* write_server_ = nullptr;  // where the ticket's write work runs
  // Lets the write gate's abort callback find this relay while it lives (same executor).
  std::shared_ptr<PgRelay*> self_ = std::make_shared<PgRelay*>(this);

  bool shutdown_requested_ = false;
  bool client_done_ = false;
  bool client_stream_clean_ = true;
  std::optional<pg::Error> closing_error_;
};

}  // namespace nerava::proxy
