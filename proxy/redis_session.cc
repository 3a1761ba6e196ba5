// A Redis client session: every request goes to a server connection the session owns (opened
// lazily, one per node, session state replayed) or, for plain reads, to the worker's shared
// connection to the node (redis_shared_link.h); replies go back in request order. Where a
// request goes is decided in redis_routing.cc.
// Reads (readonly, not blocking, per the primary's COMMAND table) go to a replica that Route()
// allows (local region first, lag-checked, read-your-writes); everything else, and everything
// while MULTI/WATCH/pub-sub/CLIENT TRACKING last, goes to the primary.
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

#include <tuple>

#include "nerava/protocol/redis/encoder.h"
#include "proxy/redis_session_impl.h"

namespace nerava::proxy {
namespace redis_session {
namespace {

using namespace asio::experimental::awaitable_operators;

constexpr auto kTlsHandshakeTimeout = std::chrono::seconds(10);
// AUTH, HELLO, SELECT, CLIENT SETNAME are read whole before acting on them; no more than this.
constexpr size_t kMaxWholeRequest = 1 << 20;

constexpr std::string_view kNoAuth = "NOAUTH Authentication required.";
constexpr std::string_view kWrongPass =
    "WRONGPASS invalid username-password pair or user is disabled.";
// Whether the reply to `command` acknowledges a possible data change (read-your-writes).
// Unknown commands, scripts and EXEC may write; PING, INFO, PUBLISH, SUBSCRIBE... do not.
bool MayWrite(const routing::RedisCommandClass& command) {
  using routing::RedisKind;
  // The server's own word (EVALSHA_RO is sent to the primary, yet writes nothing).
  if ((command.flags & routing::kRedisReadonly) != 0) return false;
  switch (command.kind) {
    case RedisKind::kRead:
    case RedisKind::kConnectionState:
      return false;
    case RedisKind::kOther:
      return (command.flags & (routing::kRedisScript | routing::kRedisTransaction |
                               routing::kRedisAdmin)) != 0;
    case RedisKind::kWrite:
    case RedisKind::kUnknown:
      break;
  }
  return true;
}

}  // namespace

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

void RedisSession::SetState(SessionState state) {
  // The record is written even when the state does not change: a session starts in kReady,
  // and its row in `show clients` starts as "connecting" until told.
  record_.SetState(StateName(state));
  if (state_ == state) return;
  spdlog::debug("redis: session {} -> {}", StateName(state_), StateName(state));
  state_ = state;
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
  writer_wake_.Notify();
  shutdown_wake_.Notify();
}

awaitable<void> RedisSession::CloseAfterShutdownGrace() {
  while (!shutdown_requested_) co_await shutdown_wake_.Wait();
  asio::steady_timer grace(executor_, kShutdownGrace);
  auto [ec] = co_await grace.async_wait(kNoThrow);
  if (ec) co_return;  // the session ended on its own within the grace
  spdlog::info("redis: closing a session at shutdown with {} replies still due", pending_.size());
}

awaitable<void> RedisSession::EndOnException(awaitable<void> half) {
  std::string error;
  try {
    co_await std::move(half);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (error.empty()) co_return;
  // `||` ending the session cancels its other halves, which may end by throwing: not news.
  const asio::cancellation_state state = co_await asio::this_coro::cancellation_state;
  if (state.cancelled() == asio::cancellation_type::none) {
    spdlog::error("redis: session ended by an unexpected exception: {}", error);
  }
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
  writer_wake_.Notify();
  if (idle_reading_ != nullptr && pending_.empty()) idle_reading_->stream.Cancel();
  // The writer flushes what is pending and ends the session (cancelling this wait).
  for (;;) co_await reader_wake_.Wait();
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
        co_await reader_wake_.Wait();
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
      if (!ReadyToDecide(complete)) break;
      co_await Decide(complete);
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

// An argument is whole once the next one started. Routing needs the name and the first
// argument (a subcommand), CLIENT the second too (TRACKING ON), XREAD all (BLOCK). An argument
// too long to capture whole is no subcommand: decide at once rather than buffer it.
bool RedisSession::ReadyToDecide(bool complete) const {
  if (complete || requests_.args_truncated()) return true;
  const std::vector<std::string>& args = requests_.args();
  if (args.empty()) return false;
  size_t needed = 2;
  if (args.size() >= 2 && EqualsIgnoreCase(args[0], "CLIENT")) needed = 3;
  if (args.size() >= 2 && EqualsIgnoreCase(args[0], "XREAD")) return false;
  needed = std::min<size_t>(needed, static_cast<size_t>(requests_.arg_count()));
  return args.size() > needed;
}

routing::RedisCommandClass RedisSession::Classify(bool complete) {
  RedisCommandCatalog& catalog = RedisCommandCatalog::Instance();
  if (const uint64_t generation = catalog.generation();
      !commands_ || generation != commands_generation_) {
    commands_ = catalog.Get();
    commands_generation_ = generation;
  }
  const std::vector<std::string>& args = requests_.args();
  size_t whole = args.size();
  if (!complete && whole > 0) --whole;  // the last one may still be arriving
  routing::RedisCommandClass command =
      routing::ClassifyRedisCommand(*commands_, std::span<const std::string>(args.data(), whole));
  if (command.name == "xread" && (command.flags & routing::kRedisBlocking) == 0) {
    // Not blocking only when STREAMS was seen without BLOCK before it.
    bool streams = false;
    for (size_t i = 1; i < whole; ++i) streams = streams || EqualsIgnoreCase(args[i], "STREAMS");
    if (!streams) command.flags |= routing::kRedisBlocking;
  }
  if (command.name == "evalsha_ro") {
    // Redis 7 does not replicate SCRIPT LOAD: a replica would answer NOSCRIPT.
    command.kind = routing::RedisKind::kOther;
  }
  return command;
}

void RedisSession::SetPins(bool multi, bool watching, bool pubsub, bool tracking,
                           const std::shared_ptr<RedisBackend>& target) {
  in_multi_ = multi;
  watching_ = watching;
  pubsub_active_ = pubsub;
  tracking_ = tracking;
  if (!multi && !watching && !pubsub && !tracking) {
    pin_.reset();
  } else if (!pin_) {
    pin_ = target;
  }
}

// CLIENT subcommands that only label or describe the connection: the shared connections give
// the same answers to the reads that follow. redis-py >= 5 and go-redis 9 send SETINFO on
// every new connection; counting it as connection state would keep them off sharing for good.
bool RedisSession::LeavesConnectionAsIs(const std::vector<std::string>& args) {
  if (args.size() < 2) return false;
  const std::string sub = AsciiUpper(args[1]);
  return sub == "SETINFO" || sub == "ID" || sub == "INFO" || sub == "GETNAME" || sub == "LIST";
}

// Decides what to do with the request whose name (and first arguments) just became known.
awaitable<void> RedisSession::Decide(bool complete) {
  action_ = Action::kDrop;
  if (requests_.arg_count() == 0) co_return;  // an empty request: Redis ignores it too
  if (requests_.args().empty()) {
    EnqueueLocalError("ERR Protocol error: expected '$' for a command name", /*close_after=*/true);
    co_return;
  }
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
  // Connection-level settings (CLIENT REPLY, NO-TOUCH...) would not hold on a shared connection.
  if (name == "MONITOR" || name == "READONLY" || name == "READWRITE" ||
      (name == "CLIENT" && !LeavesConnectionAsIs(requests_.args()))) {
    may_share_ = false;
  }
  if (name == "AUTH" || name == "HELLO" || name == "SELECT" || (name == "CLIENT" && argc == 3)) {
    action_ = Action::kWhole;
    co_return;
  }
  if (!context_->settings.password.empty() && !authenticated_) {
    EnqueueLocalError(kNoAuth);
    co_return;
  }
  // Transactions, subscriptions and tracking pin the session to the primary while they last.
  // The command itself goes where the pin was before it (EXEC to the MULTI's backend).
  const routing::RedisCommandClass command = Classify(complete);
  Pending entry;
  entry.write = MayWrite(command);
  bool multi = in_multi_;
  bool watching = watching_;
  bool pubsub = pubsub_active_;
  bool tracking = tracking_;
  if ((command.pin_begin & routing::kRedisPinTracking) != 0) tracking = true;
  if ((command.pin_end & routing::kRedisPinTracking) != 0) tracking = false;
  const bool reset = name == "RESET";
  if (reset) {
    RedisStateChange change;
    change.reset = true;
    entry.on_ok = change;
    multi = watching = pubsub = tracking = false;
  } else if (name == "MULTI") {
    multi = true;
  } else if (name == "EXEC" || name == "DISCARD") {
    multi = watching = false;
  } else if (name == "WATCH") {
    watching = true;
  } else if (name == "UNWATCH") {
    watching = false;
  } else if (PubSubCommand kind = ClassifyPubSub(name); kind.kind != PubSubKind::kNone) {
    entry.pubsub = kind;
    if (argc > 1) {
      entry.expected = argc - 1;
    } else {
      entry.expected = kind.unsubscribe ? -1 : 1;
    }
    if (!kind.unsubscribe) pubsub = true;
  }
  if (!Pinned()) pin_.reset();
  routing::RouteIntent intent = routing::IntentFor(command);
  // Opening a pin on a replica would leave MULTI or tracking there: the primary takes it.
  if (multi || watching || pubsub || tracking) intent.replica_ok = false;
  if (!multi && !watching && !pubsub && !tracking && CanShare(command, complete) &&
      (!entry.write || MayWriteShared())) {
    if (co_await TrySendShared(intent, entry)) co_return;  // kDrop: the bytes went to the link
  }
  co_await WaitSharedAnswered();  // so that this request runs after them
  std::string error;
  auto target = co_await Target(intent, error);
  if (!target) {
    EnqueueLocalError(error);
    co_return;
  }
  SetPins(multi, watching, pubsub, tracking, target);
  if (!multi && (name == "WAIT" || name == "WAITAOF") && !co_await FenceWait(name, target)) {
    co_return;  // kDrop: answered here
  }
  if (reset) {
    // Other servers of the session keep the old state: drop them, they reopen fresh.
    std::erase_if(backends_, [&](const auto& item) { return item.second != target; });
    if (!context_->settings.password.empty()) {
      authenticated_ = false;
      SetState(SessionState::kNeedAuth);
    }
  }
  entry.backend = target;
  Enqueue(std::move(entry));
  action_ = Action::kForward;
  action_target_ = target;
  if (reset && !context_->settings.password.empty() &&
      !context_->settings.backend_password.empty()) {
    // RESET logged the server connection out; log it back in with the proxy's credentials,
    // right after the RESET itself.
    co_await Append(target, client_in_.data().substr(pos_, request_fed_));
    pos_ += request_fed_;
    request_fed_ = 0;
    std::string login_bytes;
    redis::AppendCommand(login_bytes, ReplayCommands(RedisConnState{}, context_->settings)[0]);
    Pending login;
    login.backend = target;
    login.swallow = true;
    Enqueue(std::move(login));
    co_await AppendOwned(target, std::move(login_bytes));
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
    std::string rewritten;
    if (proxy_auth && hello.auth) redis::AppendCommand(rewritten, hello.WithoutAuth());
    co_await ForwardToTarget(bytes, std::move(entry), std::move(rewritten));
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
  } else if (name == "CLIENT") {
    // CLIENT <x> <y>: TRACKING ON|OFF opens or closes the pin; the rest runs on the primary.
    const routing::RedisCommandClass command =
        routing::ClassifyRedisCommand(routing::RedisCommandTable::Builtin(), args);
    bool tracking = tracking_;
    if ((command.pin_begin & routing::kRedisPinTracking) != 0) tracking = true;
    if ((command.pin_end & routing::kRedisPinTracking) != 0) tracking = false;
    if (!Pinned()) pin_.reset();
    std::string error;
    const routing::RouteIntent primary_intent;
    auto target = co_await Target(primary_intent, error);
    if (!target) {
      EnqueueLocalError(error);
      co_return;
    }
    SetPins(in_multi_, watching_, pubsub_active_, tracking, target);
    entry.backend = target;
    entry.write = MayWrite(command);
    Enqueue(std::move(entry));
    co_await Append(target, bytes);
    co_return;
  }
  co_await ForwardToTarget(bytes, std::move(entry));
}

awaitable<void> RedisSession::ForwardToTarget(std::string_view bytes, Pending entry,
                                              std::string composed) {
  std::string error;
  routing::RouteIntent intent;
  intent.session_state = true;
  auto target = co_await Target(intent, error);
  if (!target) {
    EnqueueLocalError(error);
    co_return;
  }
  entry.backend = target;
  Enqueue(std::move(entry));
  if (composed.empty()) {
    co_await Append(target, bytes);
  } else {
    co_await AppendOwned(target, std::move(composed));
  }
}

awaitable<void> RedisSession::Append(const std::shared_ptr<RedisBackend>& target,
                                     std::string_view bytes) {
  if (bytes.empty()) co_return;
  if (batch_.target && batch_.target != target) co_await Flush();
  batch_.target = target;
  batch_.buffers.push_back(asio::buffer(bytes.data(), bytes.size()));
}

awaitable<void> RedisSession::AppendOwned(const std::shared_ptr<RedisBackend>& target,
                                          std::string bytes) {
  if (batch_.target && batch_.target != target) co_await Flush();
  batch_.target = target;
  const std::string& kept = batch_.owned.emplace_back(std::move(bytes));
  batch_.buffers.push_back(asio::buffer(kept.data(), kept.size()));
}

// Writes the batch (all requests for one backend, in order) and drops the handled input.
awaitable<void> RedisSession::Flush() {
  if (!batch_.buffers.empty()) {
    std::shared_ptr<RedisBackend> target = batch_.target;
    error_code ec;
    const size_t sent = target->stream.WriteInPlace(batch_.buffers, ec);
    if (!ec && sent < asio::buffer_size(batch_.buffers)) {
      std::tie(ec, std::ignore) = co_await target->stream.WriteRest(batch_.buffers, sent);
    }
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
  if (entry.write || entry.on_ok) ++unacknowledged_;
  if (entry.backend) ++dedicated_in_flight_;
  if (entry.shared) ++shared_in_flight_;
  // The writer may be waiting for pushes on another connection: wake it for this entry.
  if (idle_reading_ != nullptr && entry.backend.get() != idle_reading_) {
    idle_reading_->stream.Cancel();
  }
  pending_.push_back(std::move(entry));
  writer_wake_.Notify();
}

void RedisSession::EnqueueLocalError(std::string_view message, bool close_after) {
  Pending entry;
  redis::AppendError(entry.local, message);
  entry.close_after = close_after;
  if (close_after) stop_reading_ = true;
  Enqueue(std::move(entry));
}

// ------------------------------------------------------------------------------------ session

RedisSession::~RedisSession() {
  // Replies still owed on a shared connection have no reader any more: the link drops them
  // rather than hold the other sessions on it behind a large one.
  for (Pending& entry : pending_) {
    if (entry.shared) Abandon(*entry.shared);
  }
}

awaitable<void> RedisSession::Run() {
  // Spreads sessions over equally good replicas, stable for the session's life.
  route_state_.affinity = reinterpret_cast<uintptr_t>(this) >> 4;
  std::weak_ptr<RedisSession> weak = weak_from_this();
  SessionHooks hooks;
  hooks.protocol = routing::Protocol::kRedis;
  hooks.shutdown = [weak, executor = executor_] {
    asio::post(executor, [weak] {
      if (auto self = weak.lock()) self->RequestShutdown();
    });
  };
  hooks.node_down = [weak, executor = executor_](const std::string& node) {
    asio::post(executor, [weak, node] {
      if (auto self = weak.lock()) self->OnNodeDown(node);
    });
  };
  SessionRegistration registration(*context_->sessions, std::move(hooks));
  if (context_->server_tls) {
    SetState(SessionState::kTls);
    asio::steady_timer deadline(executor_, kTlsHandshakeTimeout);
    auto handshake =
        co_await (client_.AcceptTls(*context_->server_tls) || deadline.async_wait(kNoThrow));
    if (handshake.index() == 1 || std::get<0>(handshake)) {
      spdlog::debug("redis: TLS handshake with client failed");
      client_.Close();
      co_return;
    }
  }
  const bool need_auth = !context_->settings.password.empty();
  SetState(need_auth ? SessionState::kNeedAuth : SessionState::kReady);
  co_await (EndOnException(ReadRequests()) || EndOnException(WriteReplies()) ||
             CloseAfterShutdownGrace());
  SetState(SessionState::kClosing);
  for (auto& [name, backend] : backends_) backend->stream.Close();
  for (Pending& entry : pending_) {
    if (entry.backend) entry.backend->stream.Close();
  }
  if (pin_) pin_->stream.Close();
  client_.Close();
}

}  // namespace redis_session

awaitable<void> RunRedisSession(tcp::socket socket, std::shared_ptr<const RedisContext> context) {
  auto session =
      std::make_shared<redis_session::RedisSession>(std::move(socket), std::move(context));
  co_await session->Run();
}

awaitable<void> RefuseRedisClient(tcp::socket& socket) {
  std::string out;
  redis::AppendError(out, "ERR max number of clients reached");
  co_await asio::async_write(socket, asio::buffer(out), kNoThrow);
}

}  // namespace nerava::proxy
