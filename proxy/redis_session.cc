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
  if (name == "AUTH" || name == "HELLO" || name == "SELECT" || (name == "CLIENT" && argc == 3)) {
    action_ = Action::kWhole;
    co_return;
  }
  if (!context_->settings.password.empty() && !authenticated_) {
    EnqueueLocalError(kNoAuth);
    co_return;
  }
  // Transactions and subscriptions pin the session to one backend while they last. The
  // command itself goes where the pin was before it (EXEC to the MULTI's backend).
  Pending entry;
  bool multi = in_multi_;
  bool watching = watching_;
  bool pubsub = pubsub_active_;
  const bool reset = name == "RESET";
  if (reset) {
    RedisStateChange change;
    change.reset = true;
    entry.on_ok = change;
    multi = watching = pubsub = false;
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
  std::string error;
  auto target = co_await Target(error);
  if (!target) {
    EnqueueLocalError(error);
    co_return;
  }
  in_multi_ = multi;
  watching_ = watching;
  pubsub_active_ = pubsub;
  if (!multi && !watching && !pubsub) {
    pin_.reset();
  } else if (!pin_) {
    pin_ = target;
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
  }
  co_await ForwardToTarget(bytes, std::move(entry));
}

awaitable<void> RedisSession::ForwardToTarget(std::string_view bytes, Pending entry,
                                              std::string composed) {
  std::string error;
  auto target = co_await Target(error);
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
  co_await (ReadRequests() || WriteReplies());
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
