// A Redis client session: every request goes to a server connection the session owns (opened
// lazily, one per node, session state replayed) or, for plain reads, to the worker's shared
// connection to the node (redis_shared_link.h); replies go back in request order. Where a
// request goes is decided in redis_routing.cc.
// What each request means (route, answer here, read whole) is decided in redis_requests.cc.
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
