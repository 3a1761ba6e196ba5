// The Redis client session's class, shared by its three parts: redis_session.cc (start, the
// request reader), redis_routing.cc (where a request goes) and redis_replies.cc (the reply
// writer). Private to proxy/.
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nerava/protocol/redis/decoder.h"
#include "nerava/routing/router.h"
#include "proxy/asio.h"
#include "proxy/byte_buffer.h"
#include "proxy/client_registry.h"
#include "proxy/metrics.h"
#include "proxy/redis_backend.h"
#include "proxy/redis_commands.h"
#include "proxy/redis_context.h"
#include "proxy/redis_shared_link.h"
#include "proxy/stream.h"
#include "proxy/wake_signal.h"

namespace nerava::proxy::redis_session {

inline constexpr size_t kReadChunk = 64 * 1024;
// A value this large is streamed in pieces instead of being held until it is complete.
inline constexpr size_t kStreamThreshold = 64 * 1024;
// Leading request arguments captured for classification (XREAD ... BLOCK ms STREAMS needs 6).
inline constexpr size_t kCaptureArgs = 8;
// After the drain's timeout, replies already on their way get this long; a command that may
// block for ever (BLPOP key 0) would otherwise hold the session, and the proxy's exit.
inline constexpr auto kShutdownGrace = std::chrono::seconds(1);

enum class SessionState {
  kTls,         // server-side TLS handshake (Redis TLS starts with the first byte)
  kNeedAuth,    // redis.password is set and the client has not authenticated yet
  kReady,       // forwarding
  kSubscribed,  // RESP2 pub/sub: the session relays its backend's messages
  kClosing,     // no more requests are read; pending replies are flushed, then close
};

const char* StateName(SessionState state);

inline bool IsError(redis::Type type) {
  return type == redis::Type::kError || type == redis::Type::kBlobError;
}

struct Pending {
  std::shared_ptr<RedisBackend> backend;  // null: `local` is the reply
  std::string local;
  bool close_after = false;  // QUIT, protocol error: close once this reply is written
  bool swallow = false;      // a request the proxy added: its reply is not the client's
  PubSubCommand pubsub;
  int64_t expected = 1;  // replies still due; -1: one per subscription of the kind (when head)
  std::optional<RedisStateChange> on_ok;
  // May change data: its reply is the write's acknowledgement (read-your-writes).
  bool write = false;
  // A request sent over the worker's shared connection (backend null): its reply arrives here.
  std::shared_ptr<SharedReply> shared;
  bool fence = false;          // the swallowed no-op before a WAIT (FenceWait)
  bool fence_refused = false;  // the WAIT behind a refused fence: answered with an error
};

class RedisSession : public std::enable_shared_from_this<RedisSession> {
 public:
  RedisSession(tcp::socket socket, std::shared_ptr<const RedisContext> context)
      : context_(std::move(context)),
        record_(context_->clients, "redis", "redis", PeerOf(socket)),
        client_gauge_(context_->metrics ? &context_->metrics->ClientConnections("redis") : nullptr),
        executor_(socket.get_executor()),
        client_(std::move(socket)),
        requests_(context_->limits, kCaptureArgs, /*capture_bytes=*/64),
        reader_wake_(executor_),
        writer_wake_(executor_),
        shutdown_wake_(executor_) {}

  ~RedisSession();

  awaitable<void> Run();
  void RequestShutdown();
  // The monitor gave up on `node`: its connections are closed, so what they owe is answered
  // with -TRYAGAIN now (an unreachable server sends no reset; TCP would take minutes).
  void OnNodeDown(const std::string& node);

 private:
  enum class Action { kUndecided, kForward, kDrop, kWhole };
  struct Batch {
    std::shared_ptr<RedisBackend> target;
    std::vector<asio::const_buffer> buffers;
    std::deque<std::string> owned;  // composed requests (deque: stable addresses)
  };

  void SetState(SessionState state);
  bool Subscribed() const { return channels_ + patterns_ + shards_ > 0; }
  bool Pinned() const {
    return pin_ && (in_multi_ || watching_ || pubsub_active_ || tracking_);
  }

  // Reader side.
  awaitable<void> ReadRequests();
  awaitable<bool> HandleInput();
  bool ReadyToDecide(bool complete) const;
  awaitable<void> Decide(bool complete);
  static bool LeavesConnectionAsIs(const std::vector<std::string>& args);
  awaitable<void> HandleWhole(std::string_view bytes);
  // The request's class from the arguments received whole so far.
  routing::RedisCommandClass Classify(bool complete);
  void SetPins(bool multi, bool watching, bool pubsub, bool tracking,
               const std::shared_ptr<RedisBackend>& target);
  // Routing (DESIGN §5, §6): the pin, else a replica for a read Route() allows, else the primary.
  awaitable<std::shared_ptr<RedisBackend>> Target(const routing::RouteIntent& intent,
                                                  std::string& error);
  std::optional<routing::NodeState> PickReplica(const routing::RouteIntent& intent);
  // The same on a snapshot the caller holds: a node of `topology`, or null for the primary.
  const routing::NodeState* ChooseReplica(const routing::RouteIntent& intent,
                                          const routing::ProtocolTopology& topology);
  // The primary's connection; a write first passes the write gate and takes a ticket. With
  // wait_if_unreachable, a primary that refuses connections is waited for (failover.wait).
  awaitable<std::shared_ptr<RedisBackend>> PrimaryBackend(bool write, bool wait_if_unreachable,
                                                          std::string& error);
  void AbortWrites();
  // Takes the write-gate ticket once per run of unanswered writes; false: a switchover started.
  bool TakeWriteTicket(WriteGate& gate);
  // A write may go over a shared connection now (gate open, ticket taken).
  bool MayWriteShared();
  // Sends the request over the worker's shared connection; false: use the session's own.
  awaitable<bool> TrySendShared(const routing::RouteIntent& intent, Pending& entry);
  awaitable<void> WaitSharedAnswered();
  // Before a WAIT/WAITAOF on `target`: false when it was answered here instead.
  awaitable<bool> FenceWait(std::string_view name, const std::shared_ptr<RedisBackend>& target);
  // The reply to `entry` is `error`, composed here: its server request is given up.
  void AnswerLocally(Pending& entry, std::string_view error);
  static void Abandon(SharedReply& reply);
  // The session's own connection to `node`, opened when it has none that works.
  awaitable<RedisBackendResult> BackendFor(const routing::NodeState& node);
  // Replays the session's connection state on a backend that missed a change (SELECT, HELLO...).
  awaitable<void> BringUpToDate(const std::shared_ptr<RedisBackend>& backend);
  void CountQuery(std::string_view node_name);  // looks the node's role up
  void CountQuery(std::string_view node_name, bool replica);
  // A read the worker's shared connection may carry (see redis_shared_link.h).
  bool CanShare(const routing::RedisCommandClass& command, bool complete) const;
  // The shared connection to the node a read goes to; null when it is not open (yet).
  std::shared_ptr<RedisSharedLink> SharedLinkFor(const routing::RouteIntent& intent);
  // The primary in use; with none (a failover), waits for one until give_up.
  awaitable<std::optional<routing::NodeState>> WaitPrimary(
      std::chrono::steady_clock::time_point give_up);
  awaitable<void> Append(const std::shared_ptr<RedisBackend>& target, std::string_view bytes);
  awaitable<void> AppendOwned(const std::shared_ptr<RedisBackend>& target, std::string bytes);
  awaitable<void> Flush();
  void Enqueue(Pending entry);
  void EnqueueLocalError(std::string_view message, bool close_after = false);
  // Sends `bytes` (a view into client_in_, or `composed` when not empty) to the target.
  // Connection-state commands go where session state goes (the primary, or the pin).
  awaitable<void> ForwardToTarget(std::string_view bytes, Pending entry, std::string composed = {});

  // Ends once shutdown was requested and kShutdownGrace passed: Run() then closes the session,
  // cutting a reply half written (the client is being closed either way).
  awaitable<void> CloseAfterShutdownGrace();
  // Runs a half of the session (reader, writer) so that an exception escaping it ends it like a
  // return, logged: `||` then ends the session instead of waiting for the shutdown grace.
  static awaitable<void> EndOnException(awaitable<void> half);

  // Writer side.
  awaitable<void> WriteReplies();
  awaitable<bool> WriteLocal();
  awaitable<bool> Pump(std::shared_ptr<RedisBackend> backend);
  bool OnValue(RedisBackend& backend, redis::Type type, std::string_view bytes, bool my_turn);
  void PopHead();
  bool FailBackend(RedisBackend& backend);

  std::shared_ptr<const RedisContext> context_;
  ClientRecord record_;  // `show clients`; before client_: built from the socket before it moves
  GaugeHold client_gauge_;  // client_connections{listener="redis"}
  asio::any_io_executor executor_;
  Stream client_;
  ByteBuffer client_in_;
  redis::Decoder requests_;
  SessionState state_ = SessionState::kReady;

  // Reader: the request being decoded and the batch of bytes for one backend.
  Action action_ = Action::kUndecided;
  std::shared_ptr<RedisBackend> action_target_;
  size_t request_fed_ = 0;  // bytes of the current request fed to requests_ (from pos_)
  size_t pos_ = 0;          // bytes at the front of client_in_ already handled
  Batch batch_;
  bool stop_reading_ = false;
  std::chrono::steady_clock::time_point no_primary_until_{};

  // Connection state (remembered for replay) and routing pins.
  RedisConnState conn_;
  bool authenticated_ = false;
  std::map<std::string, std::shared_ptr<RedisBackend>, std::less<>> backends_;
  std::shared_ptr<RedisBackend> pin_;  // MULTI/WATCH/subscriptions stay on one backend
  bool in_multi_ = false;
  bool watching_ = false;
  bool pubsub_active_ = false;
  bool tracking_ = false;  // CLIENT TRACKING ON: invalidations come from the tracking connection

  // Read/write splitting.
  routing::SessionRouteState route_state_;  // last_write_ack: when a write's reply arrived
  std::unique_ptr<WriteGate::Seat> gate_seat_;      // taken at the first write
  std::optional<WriteGate::Ticket> write_ticket_;  // while writes are unanswered (after the seat)
  int64_t unacknowledged_ = 0;  // pending writes and state changes: reads stay on the primary
  // Requests in flight on the session's own connections and on shared ones. A session uses
  // one kind at a time, so that its requests run in the order it sent them.
  int64_t dedicated_in_flight_ = 0;
  int64_t shared_in_flight_ = 0;
  // The shared connection of the requests in flight there: a request for another one waits
  // until they are answered, so that the session's requests run in the order sent.
  std::weak_ptr<RedisSharedLink> shared_link_;
  // The node a write went to over a shared connection since the last WAIT fence (see Decide).
  std::string shared_write_node_;
  bool may_share_ = true;  // false once the client used CLIENT, MONITOR...
  uint64_t conn_generation_ = 0;  // bumped whenever conn_ changes (backends catch up lazily)
  std::shared_ptr<const routing::RedisCommandTable> commands_;
  uint64_t commands_generation_ = 0;
  std::string avoid_node_;  // a replica that just refused a connection, until avoid_until_
  std::chrono::steady_clock::time_point avoid_until_{};
  struct QueryCounter {
    std::string node;
    bool replica;
    prometheus::Counter* counter;
  };
  std::vector<QueryCounter> query_counters_;  // a handful: one per node and role

  // Writer.
  std::deque<Pending> pending_;
  std::shared_ptr<RedisBackend> last_backend_;  // waited on for pushes when nothing is pending
  std::shared_ptr<RedisBackend> client_owner_;  // its value is half written to the client
  RedisBackend* idle_reading_ = nullptr;        // the writer waits for unsolicited data on it
  int64_t channels_ = 0;
  int64_t patterns_ = 0;
  int64_t shards_ = 0;

  WakeSignal reader_wake_;  // pending_ has room again
  WakeSignal writer_wake_;  // pending_ got an entry, or the reader stopped
  WakeSignal shutdown_wake_;  // RequestShutdown() was called
  bool client_writing_ = false;
  bool shutdown_requested_ = false;
  bool client_read_cancelled_ = false;
};

}  // namespace nerava::proxy::redis_session
