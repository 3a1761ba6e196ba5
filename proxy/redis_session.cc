// A Redis client session: every request goes to a server connection the session owns (opened
// lazily, one per node, session state replayed), and replies go back in request order.
//
//   client ─read─▶ client_in_ ─request decoder─▶ decide per request:
//        │           forward ──▶ batch of whole requests (bytes as sent) ─write─▶ backends_[node]
//        │           answer locally (QUIT, proxy AUTH, NOAUTH, TRYAGAIN, protocol error)
//        └─ each request appends one entry to pending_ (bounded by redis.max_pipeline; when
//           full, reading stops: back-pressure)
//
//   pending_ (FIFO):  [node A] [node A] [local "+OK"] [node B] ...
//                        │ head
//   writer ◀─ streams exactly one reply (per the backend's reply decoder) from the head's backend,
//             pops, and goes on with the next head; pushes (RESP3 '>') and RESP2 pub/sub messages
//             are forwarded as they come and pop nothing. With nothing pending it waits on the
//             backend it used last, so messages of a subscribed client flow without requests.
//
// The reader and the writer run joined with `||`: the client going away ends both. QUIT, a
// protocol error and a drain stop the reader; the writer then flushes what is pending and ends.
#include "proxy/redis_session.h"

#include <spdlog/spdlog.h>

#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "nerava/protocol/redis/encoder.h"
#include "proxy/byte_buffer.h"
#include "proxy/redis_backend.h"
#include "proxy/redis_commands.h"
#include "proxy/stream.h"

namespace nerava::proxy {
namespace {

using namespace asio::experimental::awaitable_operators;
using redis::Type;

constexpr auto kTlsHandshakeTimeout = std::chrono::seconds(10);
constexpr size_t kReadChunk = 64 * 1024;
// A value this large is streamed in pieces instead of being held until it is complete.
constexpr size_t kStreamThreshold = 64 * 1024;
// AUTH, HELLO, SELECT, CLIENT SETNAME are read whole before acting on them; no more than this.
constexpr size_t kMaxWholeRequest = 1 << 20;

constexpr std::string_view kNoAuth = "NOAUTH Authentication required.";
constexpr std::string_view kWrongPass =
    "WRONGPASS invalid username-password pair or user is disabled.";

enum class SessionState {
  kTls,         // server-side TLS handshake (Redis TLS starts with the first byte)
  kNeedAuth,    // redis.password is set and the client has not authenticated yet
  kReady,       // forwarding
  kSubscribed,  // RESP2 pub/sub: the session relays its backend's messages
  kClosing,     // no more requests are read; pending replies are flushed, then close
};

const char* StateName(SessionState state) {
  switch (state) {
    case SessionState::kTls:
      return "tls";
    case SessionState::kNeedAuth:
      return "need-auth";
    case SessionState::kReady:
      return "ready";
    case SessionState::kSubscribed:
      return "subscribed";
    case SessionState::kClosing:
      return "closing";
  }
  return "?";
}

bool IsError(Type type) { return type == Type::kError || type == Type::kBlobError; }

struct Pending {
  std::shared_ptr<RedisBackend> backend;  // null: `local` is the reply
  std::string local;
  bool close_after = false;  // QUIT, protocol error: close once this reply is written
  bool swallow = false;      // a request the proxy added: its reply is not the client's
  PubSubCommand pubsub;
  int64_t expected = 1;  // replies still due; -1: one per subscription of the kind (when head)
  std::optional<RedisStateChange> on_ok;
};

class RedisSession : public std::enable_shared_from_this<RedisSession> {
 public:
  RedisSession(tcp::socket socket, std::shared_ptr<const RedisContext> context)
      : context_(std::move(context)),
        executor_(socket.get_executor()),
        client_(std::move(socket)),
        requests_(context_->limits, /*capture_args=*/2, /*capture_bytes=*/64),
        reader_wake_(executor_),
        writer_wake_(executor_) {}

  awaitable<void> Run();
  void RequestShutdown();

 private:
  enum class Action { kUndecided, kForward, kDrop, kWhole };
  struct Batch {
    std::shared_ptr<RedisBackend> target;
    std::vector<asio::const_buffer> buffers;
    std::deque<std::string> owned;  // composed requests (deque: stable addresses)
  };

  void SetState(SessionState state);
  bool Subscribed() const { return channels_ + patterns_ + shards_ > 0; }
  bool Pinned() const { return pin_ && (in_multi_ || watching_ || pubsub_active_); }

  // Reader side.
  awaitable<void> ReadRequests();
  awaitable<bool> HandleInput();
  awaitable<void> Decide();
  awaitable<void> HandleWhole(std::string_view bytes);
  awaitable<std::shared_ptr<RedisBackend>> Target(std::string& error);
  awaitable<std::optional<routing::NodeState>> WaitPrimary();
  awaitable<void> Append(const std::shared_ptr<RedisBackend>& target, std::string_view bytes);
  awaitable<void> Flush();
  void Enqueue(Pending entry);
  void EnqueueLocalError(std::string_view message, bool close_after = false);
  awaitable<void> Forward(const std::shared_ptr<RedisBackend>& target, std::string_view bytes,
                          Pending entry);
  awaitable<void> ForwardToTarget(std::string_view bytes, Pending entry);

  // Writer side.
  awaitable<void> WriteReplies();
  awaitable<bool> WriteLocal();
  awaitable<bool> Pump(std::shared_ptr<RedisBackend> backend);
  bool OnValue(RedisBackend& backend, Type type, std::string_view bytes, bool my_turn);
  void PopHead();
  bool FailBackend(RedisBackend& backend);

  awaitable<void> Wait(asio::steady_timer& timer);

  std::shared_ptr<const RedisContext> context_;
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

  // Writer.
  std::deque<Pending> pending_;
  std::shared_ptr<RedisBackend> last_backend_;  // waited on for pushes when nothing is pending
  std::shared_ptr<RedisBackend> client_owner_;  // its value is half written to the client
  RedisBackend* idle_reading_ = nullptr;        // the writer waits for unsolicited data on it
  int64_t channels_ = 0;
  int64_t patterns_ = 0;
  int64_t shards_ = 0;

  asio::steady_timer reader_wake_;  // pending_ has room again
  asio::steady_timer writer_wake_;  // pending_ got an entry, or the reader stopped
  bool client_writing_ = false;
  bool shutdown_requested_ = false;
  bool client_read_cancelled_ = false;
};

void RedisSession::SetState(SessionState state) {
  if (state_ == state) return;
  spdlog::debug("redis: session {} -> {}", StateName(state_), StateName(state));
  state_ = state;
}

awaitable<void> RedisSession::Wait(asio::steady_timer& timer) {
  timer.expires_at(std::chrono::steady_clock::time_point::max());
  co_await timer.async_wait(kNoThrow);  // ends when cancelled: the event
}

void RedisSession::RequestShutdown() {
  shutdown_requested_ = true;
  stop_reading_ = true;
  SetState(SessionState::kClosing);
  // Cancelling the socket would also abort a reply being written; the writer cancels the read
  // once its write is done.
  if (!client_writing_) {
    client_read_cancelled_ = true;
    client_.Cancel();
  }
  if (idle_reading_ != nullptr) idle_reading_->stream.Cancel();
  writer_wake_.cancel();
}

// ------------------------------------------------------------------------------------ reader

awaitable<void> RedisSession::ReadRequests() {
  for (;;) {
    if (!co_await HandleInput()) break;
    auto [ec, n] = co_await client_.ReadSome(client_in_.Prepare(kReadChunk));
    if (ec) {
      // EOF or reset: Redis drops such a client at once, pending replies included.
      if (!shutdown_requested_) co_return;
      break;
    }
    client_in_.Commit(n);
  }
  stop_reading_ = true;
  SetState(SessionState::kClosing);
  writer_wake_.cancel();
  if (idle_reading_ != nullptr && pending_.empty()) idle_reading_->stream.Cancel();
  // The writer flushes what is pending and ends the session (cancelling this wait).
  for (;;) co_await Wait(reader_wake_);
}

awaitable<bool> RedisSession::HandleInput() {
  for (;;) {
    if (shutdown_requested_ && action_ == Action::kUndecided) break;
    const std::string_view data = client_in_.data();
    if (pos_ + request_fed_ >= data.size()) break;
    if (action_ == Action::kUndecided && request_fed_ == 0 &&
        pending_.size() >= static_cast<size_t>(context_->settings.max_pipeline)) {
      co_await Flush();
      while (pending_.size() >= static_cast<size_t>(context_->settings.max_pipeline)) {
        co_await Wait(reader_wake_);
      }
      continue;
    }
    auto progress = requests_.Feed(data.substr(pos_ + request_fed_));
    if (!progress.ok()) {
      spdlog::info("redis: protocol error from client: {}",
                   std::string(progress.status().message()));
      co_await Flush();
      EnqueueLocalError("ERR Protocol error: " + std::string(progress.status().message()),
                        /*close_after=*/true);
      co_return false;
    }
    request_fed_ += progress->consumed;
    const bool complete = progress->complete;
    if (action_ == Action::kUndecided) {
      // The command name is known once the next argument started (or it was cut).
      if (!complete && requests_.args().size() < 2 && !requests_.args_truncated()) break;
      co_await Decide();
    }
    if (action_ == Action::kWhole) {
      if (!complete) {
        if (request_fed_ <= kMaxWholeRequest) break;
        EnqueueLocalError("ERR request too large for this command");
        action_ = Action::kDrop;
      } else {
        co_await HandleWhole(client_in_.data().substr(pos_, request_fed_));
        if (action_ == Action::kWhole) action_ = Action::kDrop;  // bytes were taken care of
      }
    }
    if (action_ == Action::kForward) {
      co_await Append(action_target_, client_in_.data().substr(pos_, request_fed_));
    }
    pos_ += request_fed_;  // forwarded (into the batch) or dropped
    request_fed_ = 0;
    if (complete) {
      action_ = Action::kUndecided;
      action_target_.reset();
      if (stop_reading_) {
        co_await Flush();
        co_return false;
      }
    }
  }
  co_await Flush();
  co_return !stop_reading_;
}

// Decides what to do with the request whose command name just became known.
awaitable<void> RedisSession::Decide() {
  action_ = Action::kDrop;
  if (requests_.arg_count() == 0 || requests_.args().empty()) co_return;  // empty: ignored
  const std::string name = AsciiUpper(requests_.args()[0]);
  const int64_t argc = requests_.arg_count();
  if (name == "QUIT") {
    Pending entry;
    redis::AppendSimpleString(entry.local, "OK");
    entry.close_after = true;
    Enqueue(std::move(entry));
    stop_reading_ = true;
    co_return;
  }
  if (name == "AUTH" || name == "HELLO" || name == "SELECT" || (name == "CLIENT" && argc == 3)) {
    action_ = Action::kWhole;
    co_return;
  }
  if (!context_->settings.password.empty() && !authenticated_) {
    EnqueueLocalError(kNoAuth);
    co_return;
  }
  Pending entry;
  if (name == "RESET") {
    RedisStateChange reset;
    reset.reset = true;
    entry.on_ok = reset;
    in_multi_ = watching_ = pubsub_active_ = false;
    if (!context_->settings.password.empty()) authenticated_ = false;
  } else if (name == "MULTI") {
    in_multi_ = true;
  } else if (name == "EXEC" || name == "DISCARD") {
    in_multi_ = watching_ = false;
  } else if (name == "WATCH") {
    watching_ = true;
  } else if (name == "UNWATCH") {
    watching_ = false;
  } else if (PubSubCommand pubsub = ClassifyPubSub(name); pubsub.kind != PubSubKind::kNone) {
    entry.pubsub = pubsub;
    entry.expected = argc > 1 ? argc - 1 : (pubsub.unsubscribe ? -1 : 1);
    if (!pubsub.unsubscribe) pubsub_active_ = true;
  }
  // Pins are taken from the target chosen for this very command.
  std::shared_ptr<RedisBackend> pinned_before = Pinned() ? pin_ : nullptr;
  std::string error;
  auto target = co_await Target(error);
  if (!target) {
    EnqueueLocalError(error);
    co_return;
  }
  if (!pinned_before && (in_multi_ || watching_ || pubsub_active_)) pin_ = target;
  if (name == "RESET") {
    // Other servers of the session keep the old state: drop them, they reopen fresh.
    std::erase_if(backends_, [&](const auto& item) { return item.second != target; });
    pin_.reset();
  }
  entry.backend = target;
  Enqueue(std::move(entry));
  action_ = Action::kForward;
  action_target_ = target;
  if (name == "RESET" && !context_->settings.password.empty() &&
      !context_->settings.backend_password.empty()) {
    // RESET logged the server connection out; log it back in with the proxy's credentials,
    // after the RESET itself (Flush keeps the order of the batch).
    co_await Append(target, client_in_.data().substr(pos_, request_fed_));
    pos_ += request_fed_;
    request_fed_ = 0;
    auto replay = ReplayCommands(RedisConnState{}, context_->settings);
    std::string& out = batch_.owned.emplace_back();
    redis::AppendCommand(out, replay.front());
    Pending login;
    login.backend = target;
    login.swallow = true;
    Enqueue(std::move(login));
    co_await Append(target, out);
  }
}

// AUTH, HELLO, SELECT and CLIENT <x> <y>, now complete in the buffer.
awaitable<void> RedisSession::HandleWhole(std::string_view bytes) {
  redis::Decoder full(context_->limits, /*capture_args=*/16, /*capture_bytes=*/64 * 1024);
  auto parsed = full.Feed(bytes);
  if (!parsed.ok() || full.args_truncated() || full.args().empty()) {
    EnqueueLocalError("ERR invalid arguments");
    co_return;
  }
  const std::vector<std::string>& args = full.args();
  const std::string name = AsciiUpper(args[0]);
  const bool proxy_auth = !context_->settings.password.empty();
  Pending entry;
  if (name == "AUTH") {
    if (args.size() < 2 || args.size() > 3) {
      EnqueueLocalError("ERR wrong number of arguments for 'auth' command");
      co_return;
    }
    if (proxy_auth) {
      // The proxy checks the password itself; servers see the configured credentials.
      if (args.back() != context_->settings.password) {
        EnqueueLocalError(kWrongPass);
        co_return;
      }
      authenticated_ = true;
      SetState(SessionState::kReady);
      Pending ok;
      redis::AppendSimpleString(ok.local, "OK");
      Enqueue(std::move(ok));
      co_return;
    }
    RedisStateChange change;
    change.auth = std::vector<std::string>(args.begin() + 1, args.end());
    entry.on_ok = std::move(change);
    co_await ForwardToTarget(bytes, std::move(entry));
    co_return;
  }
  if (name == "HELLO") {
    const HelloArgs hello = ParseHello(args);
    if (proxy_auth && hello.valid && hello.auth) {
      if (hello.auth->back() != context_->settings.password) {
        EnqueueLocalError(kWrongPass);
        co_return;
      }
      authenticated_ = true;
      SetState(SessionState::kReady);
    }
    if (proxy_auth && !authenticated_) {
      EnqueueLocalError(kNoAuth);
      co_return;
    }
    RedisStateChange change;
    change.protocol = hello.protocol;
    change.name = hello.name;
    if (!proxy_auth) change.auth = hello.auth;
    if (hello.valid) entry.on_ok = std::move(change);
    if (proxy_auth && hello.auth) {
      std::string rewritten;
      redis::AppendCommand(rewritten, hello.WithoutAuth());
      batch_.owned.push_back(std::move(rewritten));
      co_await ForwardToTarget(batch_.owned.back(), std::move(entry));
      co_return;
    }
    co_await ForwardToTarget(bytes, std::move(entry));
    co_return;
  }
  if (proxy_auth && !authenticated_) {
    EnqueueLocalError(kNoAuth);
    co_return;
  }
  if (name == "SELECT" && args.size() == 2) {
    RedisStateChange change;
    change.db = args[1];
    entry.on_ok = std::move(change);
  } else if (name == "CLIENT" && args.size() == 3 && EqualsIgnoreCase(args[1], "SETNAME")) {
    RedisStateChange change;
    change.name = args[2];
    entry.on_ok = std::move(change);
  }
  co_await ForwardToTarget(bytes, std::move(entry));
}

awaitable<void> RedisSession::ForwardToTarget(std::string_view bytes, Pending entry) {
  std::string error;
  auto target = co_await Target(error);
  if (!target) {
    EnqueueLocalError(error);
    co_return;
  }
  co_await Forward(target, bytes, std::move(entry));
}

awaitable<void> RedisSession::Forward(const std::shared_ptr<RedisBackend>& target,
                                      std::string_view bytes, Pending entry) {
  entry.backend = target;
  Enqueue(std::move(entry));
  co_await Append(target, bytes);
}

awaitable<std::optional<routing::NodeState>> RedisSession::WaitPrimary() {
  auto primary_of = [this]() -> std::optional<routing::NodeState> {
    auto snapshot = context_->topology->Get();
    if (const routing::NodeState* primary = snapshot->redis.Primary()) return *primary;
    return std::nullopt;
  };
  std::optional<routing::NodeState> primary = primary_of();
  const auto now = std::chrono::steady_clock::now();
  if (primary || now < no_primary_until_) co_return primary;
  // A failover may be under way: wait for a primary instead of failing at once.
  co_await Flush();
  const auto give_up = now + context_->failover_wait;
  asio::steady_timer poll(executor_);
  while (!primary && std::chrono::steady_clock::now() < give_up && !shutdown_requested_) {
    poll.expires_after(std::chrono::milliseconds(20));
    co_await poll.async_wait(kNoThrow);
    primary = primary_of();
  }
  // The requests right behind this one are answered at once instead of waiting again each.
  if (!primary) no_primary_until_ = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  co_return primary;
}

awaitable<std::shared_ptr<RedisBackend>> RedisSession::Target(std::string& error) {
  if (Pinned()) {
    if (!pin_->broken) co_return pin_;
    error = "ERR connection to Redis node \"" + pin_->node_name + "\" was lost";
    pin_.reset();
    in_multi_ = watching_ = pubsub_active_ = false;
    co_return nullptr;
  }
  std::optional<routing::NodeState> primary = co_await WaitPrimary();
  if (!primary) {
    error = "TRYAGAIN no primary Redis node is reachable";
    co_return nullptr;
  }
  if (auto it = backends_.find(primary->name); it != backends_.end()) {
    if (!it->second->broken) co_return it->second;
    backends_.erase(it);
  }
  co_await Flush();  // requests before this one must not wait for the connect
  RedisBackendTarget where{primary->name, primary->host, primary->port};
  RedisBackendOptions options{context_->backend_tls, context_->settings.connect_timeout,
                              context_->limits};
  RedisBackendResult result =
      co_await ConnectRedisBackend(where, options, ReplayCommands(conn_, context_->settings));
  if (!result.backend) {
    spdlog::warn("redis: cannot open server connection to {}: {}", where.node_name, result.error);
    error = std::move(result.error);
    co_return nullptr;
  }
  backends_.emplace(primary->name, result.backend);
  co_return result.backend;
}

awaitable<void> RedisSession::Append(const std::shared_ptr<RedisBackend>& target,
                                     std::string_view bytes) {
  if (bytes.empty()) co_return;
  if (batch_.target && batch_.target != target) co_await Flush();
  batch_.target = target;
  batch_.buffers.push_back(asio::buffer(bytes.data(), bytes.size()));
}

// Writes the batch (all requests for one backend, in order) and drops the handled input.
awaitable<void> RedisSession::Flush() {
  if (!batch_.buffers.empty()) {
    std::shared_ptr<RedisBackend> target = batch_.target;
    auto [ec, n] = co_await target->stream.WriteBuffers(batch_.buffers);
    if (ec && !target->broken) {
      // The writer turns its pending requests into errors when it reaches them.
      target->broken = true;
      target->stream.Cancel();
    }
  }
  batch_.buffers.clear();
  batch_.owned.clear();
  batch_.target.reset();
  client_in_.Consume(pos_);
  pos_ = 0;
}

void RedisSession::Enqueue(Pending entry) {
  // The writer may be waiting for pushes on another connection: wake it for this entry.
  if (idle_reading_ != nullptr && entry.backend.get() != idle_reading_) {
    idle_reading_->stream.Cancel();
  }
  pending_.push_back(std::move(entry));
  writer_wake_.cancel();
}

void RedisSession::EnqueueLocalError(std::string_view message, bool close_after) {
  Pending entry;
  redis::AppendError(entry.local, message);
  entry.close_after = close_after;
  if (close_after) stop_reading_ = true;
  Enqueue(std::move(entry));
}

// ------------------------------------------------------------------------------------ writer

awaitable<void> RedisSession::WriteReplies() {
  for (;;) {
    if (client_owner_) {
      if (!co_await Pump(client_owner_)) co_return;
    } else if (!pending_.empty()) {
      if (!pending_.front().backend) {
        if (!co_await WriteLocal()) co_return;
      } else if (!co_await Pump(pending_.front().backend)) {
        co_return;
      }
    } else if (stop_reading_) {
      co_return;
    } else if (last_backend_ && !last_backend_->broken) {
      if (!co_await Pump(last_backend_)) co_return;
    } else {
      co_await Wait(writer_wake_);
    }
    if (shutdown_requested_ && !client_read_cancelled_) {
      client_read_cancelled_ = true;
      client_.Cancel();
    }
  }
}

// Writes the replies the proxy composed itself at the head of the FIFO; false: close now.
awaitable<bool> RedisSession::WriteLocal() {
  std::string out;
  bool close_after = false;
  while (!pending_.empty() && !pending_.front().backend && !close_after) {
    out += pending_.front().local;
    close_after = pending_.front().close_after;
    PopHead();
  }
  client_writing_ = true;
  auto [ec, n] = co_await client_.Write(asio::buffer(out));
  client_writing_ = false;
  co_return !ec && !close_after;
}

void RedisSession::PopHead() {
  pending_.pop_front();
  reader_wake_.cancel();
}

// Forwards what `backend` has for the client while it is its turn (or, with nothing pending,
// what it sends unasked), else reads more from it. False: the session must end.
awaitable<bool> RedisSession::Pump(std::shared_ptr<RedisBackend> backend) {
  RedisBackend& b = *backend;
  if (b.broken) co_return FailBackend(b);
  size_t ready = 0;     // bytes at the front of b.in to write to the client
  bool dropped = false;  // a swallowed reply was consumed
  for (;;) {
    const bool owner = client_owner_.get() == &b;
    const bool my_turn = !pending_.empty() && pending_.front().backend.get() == &b;
    if (!owner && !my_turn && !pending_.empty()) break;  // another one's turn
    const bool swallow = my_turn && pending_.front().swallow;
    if (swallow && ready > 0) break;  // write the forwarded part first
    const std::string_view rest = b.in.data().substr(ready + b.value_bytes);
    if (rest.empty()) break;
    auto progress = b.decoder.Feed(rest);
    if (!progress.ok()) {
      spdlog::warn("redis: server {} sent an unframeable reply: {}", b.node_name,
                   std::string(progress.status().message()));
      co_return false;
    }
    b.value_bytes += progress->consumed;
    if (!progress->complete) {
      if (!swallow && b.value_bytes >= kStreamThreshold) {
        ready += b.value_bytes;  // a large value: stream what is here
        b.value_bytes = 0;
        client_owner_ = backend;
      }
      break;
    }
    const std::string_view value = b.in.data().substr(ready, b.value_bytes);
    const bool was_owner = owner;
    client_owner_.reset();
    const bool reply = OnValue(b, progress->type, value, my_turn);
    if (reply && !my_turn && !was_owner) {
      spdlog::warn("redis: server {} sent a reply nobody asked for", b.node_name);
      co_return false;
    }
    if (reply && swallow) {
      if (IsError(progress->type)) {
        spdlog::warn("redis: server {} refused the proxy's login: {}", b.node_name,
                     b.decoder.scalar());
      }
      b.in.Consume(b.value_bytes);  // ready == 0 here
      dropped = true;
    } else {
      ready += b.value_bytes;
    }
    b.value_bytes = 0;
    if (reply) {
      last_backend_ = backend;
      Pending& head = pending_.front();
      if (head.pubsub.kind == PubSubKind::kNone || IsError(progress->type) || --head.expected <= 0) {
        if (head.on_ok && !IsError(progress->type)) head.on_ok->ApplyTo(conn_);
        PopHead();
      }
    }
  }
  if (ready > 0) {
    client_writing_ = true;
    auto [ec, n] = co_await client_.Write(asio::buffer(b.in.data().data(), ready));
    client_writing_ = false;
    if (ec) co_return false;
    b.in.Consume(ready);
    co_return true;
  }
  if (dropped) co_return true;
  const bool owner = client_owner_.get() == &b;
  const bool my_turn = !pending_.empty() && pending_.front().backend.get() == &b;
  if (!owner && !my_turn && !pending_.empty()) co_return true;
  const bool idle = !owner && pending_.empty();
  if (idle && stop_reading_) co_return true;
  if (idle) idle_reading_ = &b;
  auto [ec, n] = co_await b.stream.ReadSome(b.in.Prepare(kReadChunk));
  if (idle) idle_reading_ = nullptr;
  if (ec == asio::error::operation_aborted && idle && !b.broken) co_return true;  // woken up
  if (ec) co_return FailBackend(b);
  b.in.Commit(n);
  if (b.in.empty()) b.in.ShrinkTo(kReadChunk * 4);
  co_return true;
}

// Classifies one complete value from `backend`: true when it answers the FIFO head (false for
// pushes and pub/sub messages). Keeps the subscription counts.
bool RedisSession::OnValue(RedisBackend& backend, Type type, std::string_view bytes,
                           bool my_turn) {
  const bool aggregate = type == Type::kArray || type == Type::kPush;
  const std::string first =
      aggregate && !backend.decoder.args().empty() ? backend.decoder.args()[0] : std::string();
  Pending* head = my_turn ? &pending_.front() : nullptr;
  const bool head_pubsub = head != nullptr && head->pubsub.kind != PubSubKind::kNone;
  const PubSubCommand confirmation = ClassifyConfirmation(first);
  if (confirmation.kind != PubSubKind::kNone && (type == Type::kPush || head_pubsub)) {
    if (head_pubsub && head->expected < 0) {
      // UNSUBSCRIBE without arguments: one confirmation per subscription, at least one.
      const int64_t count = head->pubsub.kind == PubSubKind::kChannel   ? channels_
                            : head->pubsub.kind == PubSubKind::kPattern ? patterns_
                                                                        : shards_;
      head->expected = std::max<int64_t>(count, 1);
    }
    if (std::optional<int64_t> count = TrailingInteger(bytes)) {
      // The count is channels + patterns, or shard channels for the S* family.
      if (confirmation.kind == PubSubKind::kChannel) channels_ = std::max<int64_t>(0, *count - patterns_);
      if (confirmation.kind == PubSubKind::kPattern) patterns_ = std::max<int64_t>(0, *count - channels_);
      if (confirmation.kind == PubSubKind::kShard) shards_ = std::max<int64_t>(0, *count);
    }
    if (!Subscribed()) pubsub_active_ = false;
    if (conn_.protocol == 2 && state_ != SessionState::kClosing) {
      SetState(Subscribed() ? SessionState::kSubscribed : SessionState::kReady);
    }
    return head_pubsub;
  }
  if (type == Type::kPush) return false;
  if (type == Type::kArray && Subscribed() && IsPubSubMessage(first)) return false;
  if (head != nullptr && head->on_ok && head->on_ok->reset && !IsError(type)) {
    channels_ = patterns_ = shards_ = 0;
  }
  return true;
}

// The connection to `backend` is gone. Requests waiting for it get an error each (whether they
// ran is unknown, as with a direct connection); the session goes on unless a reply was half
// written or the client's subscriptions lived there.
bool RedisSession::FailBackend(RedisBackend& backend) {
  const bool was_broken = backend.broken;
  backend.broken = true;
  if (client_owner_.get() == &backend) return false;
  bool affected = false;
  for (Pending& entry : pending_) {
    if (entry.backend.get() != &backend) continue;
    affected = true;
    entry.backend.reset();
    if (!entry.swallow) {
      redis::AppendError(entry.local, "ERR connection to Redis node \"" + backend.node_name +
                                          "\" was lost");
    }
  }
  if (pin_.get() == &backend && Subscribed()) return false;
  if (!was_broken || affected) {
    spdlog::info("redis: server connection to {} closed", backend.node_name);
  }
  if (last_backend_.get() == &backend) last_backend_.reset();
  std::erase_if(backends_, [&](const auto& item) { return item.second.get() == &backend; });
  return true;
}

// ------------------------------------------------------------------------------------ session

awaitable<void> RedisSession::Run() {
  std::weak_ptr<RedisSession> weak = weak_from_this();
  SessionRegistration registration(*context_->sessions, [weak, executor = executor_] {
    asio::post(executor, [weak] {
      if (auto self = weak.lock()) self->RequestShutdown();
    });
  });
  if (context_->server_tls) {
    SetState(SessionState::kTls);
    asio::steady_timer deadline(executor_, kTlsHandshakeTimeout);
    auto handshake = co_await (client_.AcceptTls(*context_->server_tls) ||
                               deadline.async_wait(kNoThrow));
    if (handshake.index() == 1 || std::get<0>(handshake)) {
      spdlog::debug("redis: TLS handshake with client failed");
      client_.Close();
      co_return;
    }
  }
  const bool need_auth = !context_->settings.password.empty();
  SetState(need_auth ? SessionState::kNeedAuth : SessionState::kReady);
  if (!shutdown_requested_) co_await (ReadRequests() || WriteReplies());
  SetState(SessionState::kClosing);
  for (auto& [name, backend] : backends_) backend->stream.Close();
  for (Pending& entry : pending_) {
    if (entry.backend) entry.backend->stream.Close();
  }
  if (pin_) pin_->stream.Close();
  client_.Close();
}

}  // namespace

awaitable<void> RunRedisSession(tcp::socket socket, std::shared_ptr<const RedisContext> context) {
  auto session = std::make_shared<RedisSession>(std::move(socket), std::move(context));
  co_await session->Run();
}

awaitable<void> RefuseRedisClient(tcp::socket& socket) {
  std::string out;
  redis::AppendError(out, "ERR max number of clients reached");
  co_await asio::async_write(socket, asio::buffer(out), kNoThrow);
}

}  // namespace nerava::proxy
