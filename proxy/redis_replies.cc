// The reply half of a Redis session: the writer that streams replies from the backends to the
// client in request order (see the diagram in redis_session.cc).
#include <spdlog/spdlog.h>

#include <tuple>

#include "nerava/protocol/redis/encoder.h"
#include "proxy/redis_session_impl.h"

namespace nerava::proxy::redis_session {

using redis::Type;

awaitable<void> RedisSession::WriteReplies() {
  for (;;) {
    std::shared_ptr<RedisBackend> source;
    bool local = false;
    if (client_owner_) {
      source = client_owner_;  // finish the value half written to the client first
    } else if (!pending_.empty()) {
      const Pending& head = pending_.front();
      source = head.backend;
      // A shared connection's reply with nothing here yet: wait for it (null source).
      local = source == nullptr &&
              (!head.shared || head.shared->done || !head.shared->bytes.empty());
    } else if (stop_reading_) {
      break;
    } else if (last_backend_ && !last_backend_->broken) {
      source = last_backend_;  // nothing pending: wait for pushes where they may come from
    }
    bool go_on = true;
    if (local) {
      go_on = co_await WriteLocal();
    } else if (source) {
      go_on = co_await Pump(std::move(source));
    } else {
      co_await writer_wake_.Wait();
    }
    if (!go_on) break;
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
  std::shared_ptr<SharedReply> piece;  // a large shared reply still arriving
  while (!pending_.empty() && !pending_.front().backend && !close_after) {
    const Pending& head = pending_.front();
    if (head.shared) {
      if (head.shared->broken) co_return false;  // cut half way: the client cannot resync
      out += head.shared->bytes;
      head.shared->bytes.clear();
      if (!head.shared->done) {
        piece = head.shared;
        break;
      }
    } else {
      out += head.local;
    }
    close_after = head.close_after;
    PopHead();
  }
  client_writing_ = true;
  error_code ec;
  const size_t sent = client_.WriteInPlace(asio::buffer(out), ec);
  if (!ec && sent < out.size()) {
    std::tie(ec, std::ignore) = co_await client_.WriteRest(asio::buffer(out), sent);
  }
  client_writing_ = false;
  if (piece && piece->on_drained) piece->on_drained();
  co_return !ec && !close_after;
}

void RedisSession::PopHead() {
  const Pending& head = pending_.front();
  if (head.write || head.on_ok) --unacknowledged_;
  if (head.backend) --dedicated_in_flight_;
  if (head.shared) --shared_in_flight_;
  if (unacknowledged_ == 0 && !in_multi_) write_ticket_.reset();  // MULTI: until EXEC
  // Read-your-writes: the write is acknowledged now that its reply is here; a watermark sample
  // taken from now on includes it.
  if (head.write) route_state_.last_write_ack = std::chrono::steady_clock::now();
  pending_.pop_front();
  reader_wake_.Notify();
}

// Forwards what `backend` has for the client while it is its turn (or, with nothing pending,
// what it sends unasked), else reads more from it. False: the session must end.
awaitable<bool> RedisSession::Pump(std::shared_ptr<RedisBackend> backend) {
  RedisBackend& b = *backend;
  if (b.broken) co_return FailBackend(b);
  size_t ready = 0;      // bytes at the front of b.in to write to the client
  bool dropped = false;  // a swallowed reply was consumed
  for (;;) {
    const bool owner = client_owner_.get() == &b;
    const bool my_turn = !pending_.empty() && pending_.front().backend.get() == &b;
    if (!owner && !my_turn && !pending_.empty()) break;  // another one's turn
    // The WAIT behind a refused fence would overstate what the replicas have: it gets an error.
    const bool replace = my_turn && pending_.front().fence_refused;
    const bool swallow = my_turn && (pending_.front().swallow || replace);
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
    client_owner_.reset();
    const bool reply = OnValue(b, progress->type, value, my_turn);
    if (reply && !my_turn) {
      spdlog::warn("redis: server {} sent a reply nobody asked for", b.node_name);
      co_return false;
    }
    if (reply && swallow) {
      if (IsError(progress->type) && pending_.front().fence) {
        spdlog::warn("redis: server {} refused the WAIT fence (PUBLISH): {}", b.node_name,
                     b.decoder.scalar());
        if (pending_.size() > 1) pending_[1].fence_refused = true;  // its WAIT, enqueued next
      } else if (IsError(progress->type) && !replace) {
        spdlog::warn("redis: server {} refused the proxy's login: {}", b.node_name,
                     b.decoder.scalar());
      }
      b.in.Consume(b.value_bytes);  // ready == 0 here
      dropped = true;
      if (replace) {
        AnswerLocally(pending_.front(),
                      "ERR WAIT cannot count the writes this client made over the proxy's "
                      "shared connection: the server refused the proxy's PUBLISH fence");
        b.value_bytes = 0;
        co_return true;  // the writer sends the error in its turn
      }
    } else {
      ready += b.value_bytes;
    }
    b.value_bytes = 0;
    if (reply) {
      last_backend_ = backend;
      Pending& head = pending_.front();
      if (head.pubsub.kind == PubSubKind::kNone || IsError(progress->type) ||
          --head.expected <= 0) {
        if (head.on_ok && !IsError(progress->type)) {
          head.on_ok->ApplyTo(conn_);
          // Every other server connection now lags behind; this one ran the change itself.
          b.state_generation = ++conn_generation_;
        }
        PopHead();
      }
    }
  }
  if (ready > 0) {
    client_writing_ = true;
    const auto replies = asio::buffer(b.in.data().data(), ready);
    error_code ec;
    const size_t sent = client_.WriteInPlace(replies, ec);
    if (!ec && sent < ready) std::tie(ec, std::ignore) = co_await client_.WriteRest(replies, sent);
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
bool RedisSession::OnValue(RedisBackend& backend, Type type, std::string_view bytes, bool my_turn) {
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
      if (confirmation.kind == PubSubKind::kChannel)
        channels_ = std::max<int64_t>(0, *count - patterns_);
      if (confirmation.kind == PubSubKind::kPattern)
        patterns_ = std::max<int64_t>(0, *count - channels_);
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
    channels_ = patterns_ = shards_ = 0;  // RESET left every channel
    if (state_ == SessionState::kSubscribed) SetState(SessionState::kReady);
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
    --dedicated_in_flight_;
    if (!entry.swallow) {
      // TRYAGAIN: the node went away (failover, restart); whether the command ran is unknown.
      redis::AppendError(entry.local, "TRYAGAIN connection to Redis node \"" + backend.node_name +
                                          "\" was lost (failover?); the command may have run");
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

}  // namespace nerava::proxy::redis_session
