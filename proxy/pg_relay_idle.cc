// How a PgRelay's reply loop waits between batches: on the socket of the server that answered
// the last batch, so that the next batch to it needs no wake-up of its own (its replies resume
// the loop straight from the reactor: no posted handler, no extra epoll_wait); a batch
// elsewhere, a lost server, a shutdown or the end of the client loop cancel that read. Also what
// servers send unasked while the session is idle (the primary's NOTIFY, its FATAL).
#include <algorithm>

#include "proxy/pg_relay.h"

namespace nerava::proxy {

void PgRelay::Wake() {
  // A parked reply loop resumes when its read ends; any other waits for the signal.
  if (parked_on_) {
    park_cancel_.emit(asio::cancellation_type::terminal);
  } else {
    work_signal_.Notify();
  }
}

awaitable<bool> PgRelay::WaitForWork() {
  // Idle: wake for a new batch, or for what a server sends on its own (NOTIFY for a LISTEN, a
  // FATAL before it closes). The primary's readability watch reports the latter when the loop
  // does not read there itself.
  if (shutdown_requested_) co_return false;
  PgServer* target = IdleReadTarget();
  PgServer* primary = primary_;
  if (primary && primary != target && !primary->lost && primary->backend->buffer.empty()) {
    WatchForAsyncMessages(*primary);
  }
  if (!target) {
    co_await work_signal_.Wait();
    co_return true;
  }
  const ServerInUse in_use(*target);
  // What the primary sends unasked goes to the client as it would direct. Another server's
  // waits for its next batch: its connection is the proxy's business (a replica's FATAL before
  // it closes must not end the session; the close makes it lost, and the session goes on).
  const bool forward = target == primary_;
  const size_t buffered = target->backend->buffer.size();
  if (buffered > 0 && forward && !BatchWaitsOn(*target)) {  // came after the last batch's end
    if (!co_await ForwardUnrequested(*target)) co_return false;
    if (target->backend->buffer.size() < buffered) co_return true;  // look again
  }
  // A TLS read is not cancelled inside a record: a TLS server's replies wake the loop by signal.
  const bool park = !target->backend->stream.is_tls();
  ReadResult read = ReadResult::kEnd;
  {
    const Parked parked(*this, park ? target : nullptr);
    read = co_await ReadServer(*target, park ? &park_cancel_ : nullptr);
  }
  target->async_readable = false;  // this read took what made it readable
  if (read == ReadResult::kEnd) co_return false;
  // Bytes for a batch queued meanwhile are its replies (ForwardRepliesOf takes them).
  if (read != ReadResult::kOk || BatchWaitsOn(*target) || !forward) co_return true;
  co_return co_await ForwardUnrequested(*target);
}

PgServer* PgRelay::IdleReadTarget() {
  PgServer* primary = primary_;
  // The primary's own messages first: it said something (its watch fired), or something it
  // sent after a batch's end is still buffered (read on only where the read can be cancelled).
  if (primary && !primary->lost &&
      (primary->async_readable ||
       (!primary->backend->buffer.empty() && !primary->backend->stream.is_tls()))) {
    return primary;
  }
  PgServer* last = replies_from_;
  if (last && !last->lost && !last->backend->stream.is_tls()) return last;
  return nullptr;
}

bool PgRelay::BatchWaitsOn(const PgServer& server) const {
  return std::any_of(in_flight_.begin(), in_flight_.end(),
                     [&server](const InFlight& batch) { return batch.server == &server; });
}

bool PgRelay::ReplyLoopWillSeeReplies() const {
  if (!parked_on_ || parked_on_->lost) return false;
  return in_flight_.empty() || in_flight_.front().server == parked_on_;
}

awaitable<bool> PgRelay::ForwardUnrequested(PgServer& server) {
  ByteBuffer& in = server.backend->buffer;
  size_t used = 0;
  for (;;) {
    auto piece = server.framer.Next(in.data().substr(used));
    if (!piece.ok() || piece->kind == pg::Piece::Kind::kNeedMore) break;
    if (piece->starts_message) server.tracker.OnReply(piece->type);
    if (piece->type == pg::msg::kErrorResponse) server_sent_fatal_ = true;
    used += piece->size;
  }
  if (used > 0) {
    client_stream_clean_ = false;
    auto [ec, n] = co_await client_.Write(asio::buffer(in.data().data(), used));
    if (ec) co_return false;
    in.Consume(used);
    client_stream_clean_ = !server.framer.in_message();
  }
  co_return true;
}

void PgRelay::WatchForAsyncMessages(PgServer& server) {
  if (server.watch_armed || server.async_readable) return;
  server.watch_armed = true;
  std::weak_ptr<PgRelay*> self = self_;
  PgServer* watched = &server;
  server.backend->stream.socket().async_wait(
      tcp::socket::wait_read, [self, watched](error_code ec) {
        if (auto relay = self.lock(); relay && *relay) (*relay)->OnServerReadable(watched, ec);
      });
}

void PgRelay::OnServerReadable(PgServer* server, error_code ec) {
  // Only a connection the session still has counts (a lost one may be destroyed already).
  const bool live = std::any_of(servers_.begin(), servers_.end(),
                                [server](const auto& entry) { return entry.second.get() == server; });
  if (!live) return;
  server->watch_armed = false;
  // While a batch is in flight the reply loop reads the servers anyway; the next idle wait
  // re-arms the watch (and it fires at once if the server sent more).
  if (ec || !in_flight_.empty()) return;
  server->async_readable = true;
  Wake();
}

}  // namespace nerava::proxy
