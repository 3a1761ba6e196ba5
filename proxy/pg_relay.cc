#include "proxy/pg_relay.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace nerava::proxy {
namespace {

using namespace asio::experimental::awaitable_operators;

constexpr size_t kReadChunk = 64 * 1024;

pg::Error Fatal(std::string code, std::string message) {
  return pg::Error{"FATAL", std::move(code), std::move(message), "", ""};
}

// How much to read next: a message that must be whole may be larger than one chunk.
size_t ReadSize(const ByteBuffer& buffer, const pg::Framer& framer, uint32_t max_message) {
  size_t wanted = kReadChunk;
  if (!framer.in_message()) {
    auto header = pg::PeekHeader(buffer.data(), max_message);
    if (header.ok() && header->has_value() && (*header)->total_size() > buffer.size()) {
      wanted = std::max(wanted, (*header)->total_size() - buffer.size());
    }
  }
  return wanted;
}

}  // namespace

PgRelay::PgRelay(const PgContext& context, Stream& client, ByteBuffer& client_in,
                 std::unique_ptr<PgBackend> first_server, Login login,
                 PgBatchObserver observer)
    : context_(context),
      client_(client),
      client_in_(client_in),
      client_framer_(pg::Direction::kFrontend, context.limits),
      observer_(std::move(observer)),
      work_signal_(client.socket().get_executor()),
      login_(std::move(login)) {
  // Spreads sessions over equally good replicas, stable for the session's life.
  route_state_.affinity = reinterpret_cast<uintptr_t>(this) >> 4;
  const std::string name = first_server->target.node_name;
  auto server = std::make_unique<PgServer>(std::move(first_server), context.limits);
  primary_ = server.get();
  last_server_ = server.get();
  active_server_ = server.get();
  servers_.emplace(name, std::move(server));
}

void PgRelay::RequestShutdown() {
  shutdown_requested_ = true;
  for (auto& [name, server] : servers_) server->backend->stream.Cancel();
  Wake();
}

void PgRelay::Wake() { work_signal_.cancel(); }

void PgRelay::CloseServers() {
  for (auto& [name, server] : servers_) server->backend->stream.Close();
}

void PgRelay::MarkActive(PgServer& server) {
  if (active_server_ == &server) return;
  active_server_ = &server;
  if (observer_.on_active_server) observer_.on_active_server(*server.backend);
}

awaitable<PgServer*> PgRelay::ServerFor(const routing::NodeState& node) {
  if (auto it = servers_.find(node.name); it != servers_.end()) co_return it->second.get();
  PgBackendTarget target{node.name, node.host, node.port};
  PgBackendOptions options{context_.settings.backend_tls, context_.backend_tls,
                           context_.settings.connect_timeout, context_.limits};
  PgBackendResult result =
      co_await ConnectPgBackend(target, options, login_.parameters, login_.user, login_.password);
  if (!result.backend) {
    spdlog::warn("pg: cannot open a server connection to {} for user {}; using another node",
                 node.name, login_.user);
    co_return nullptr;
  }
  if (observer_.on_server_opened) observer_.on_server_opened(*result.backend);
  auto server = std::make_unique<PgServer>(std::move(result.backend), context_.limits);
  PgServer* raw = server.get();
  servers_.emplace(node.name, std::move(server));
  co_return raw;
}

awaitable<PgServer*> PgRelay::RouteBatch(std::string_view pending) {
  const routing::StatementClass batch = ClassifyBatch(pending);
  ApplyPins(batch);
  PgServer* target = nullptr;
  batch_route_ = "primary";
  if (transaction_server_) {
    // A transaction stays on the server that started it.
    target = transaction_server_;
    batch_route_ = transaction_route_;
  } else if (!in_flight_.empty()) {
    // Pipelined behind unanswered batches: their effect on the transaction state is unknown.
    target = in_flight_.back().server;
    batch_route_ = in_flight_.back().route;
  } else {
    auto snapshot = context_.topology->Get();
    const routing::ProtocolTopology& topology = snapshot->postgres;
    routing::RouteRequest request;
    request.intent = routing::IntentFor(batch, context_.functions);
    request.listener =
        context_.read_only ? routing::Listener::kReadOnly : routing::Listener::kReadWrite;
    request.session = &route_state_;
    request.topology = &topology;
    request.policy = &context_.route_policy;
    auto decision = routing::Route(request);
    if (decision.ok() && decision->node >= 0) {
      const routing::NodeState& node = topology.nodes[decision->node];
      target = co_await ServerFor(node);
      if (target && node.role == routing::Role::kReplica) batch_route_ = "replica";
    }
    if (!target) {
      // No decision (no primary known) or the chosen node cannot be reached: the primary as
      // the session last knew it answers, as it did before splitting.
      const routing::NodeState* primary = topology.Primary();
      if (primary) target = co_await ServerFor(*primary);
      if (!target) target = primary_;
      batch_route_ = "primary";
    }
  }
  BringUpToDate(*target);
  ApplySettings(batch, *target);
  // COMMIT acknowledges the transaction's writes, unless it ran on a replica (read only).
  batch_writes_ = batch.Writes() || (batch.kind == routing::StatementKind::kTransactionEnd &&
                                     std::string_view(batch_route_) == "primary");
  co_return target;
}

awaitable<void> PgRelay::Run() {
  co_await (ClientToServers() || ServersToClient());
}

awaitable<void> PgRelay::ClientToServers() {
  for (;;) {
    size_t used = 0;
    while (!closing_error_) {
      auto piece = client_framer_.Next(client_in_.data().substr(used));
      if (!piece.ok()) {
        closing_error_ = Fatal("08P01", "invalid message from client: " +
                                            std::string(piece.status().message()));
        break;
      }
      if (piece->kind == pg::Piece::Kind::kNeedMore) break;
      const size_t start = used;
      const std::string_view bytes = client_in_.data().substr(start, piece->size);
      used += piece->size;
      if (piece->starts_message) client_message_type_ = piece->type;
      const char type = client_message_type_;
      if (type == pg::msg::kTerminate) {
        client_done_ = true;
        break;
      }
      PgServer* target = nullptr;
      switch (type) {
        case pg::msg::kQuery:
        case pg::msg::kFunctionCall:
          target = co_await RouteBatch(client_in_.data().substr(start));
          in_flight_.push_back(
              {target, std::chrono::steady_clock::now(), batch_route_, batch_writes_});
          batch_server_ = nullptr;
          break;
        case pg::msg::kCopyData:
        case pg::msg::kCopyDone:
        case pg::msg::kCopyFail:
          target = last_server_;  // COPY data belongs to the batch that started the COPY
          break;
        case pg::msg::kFlush:
          target = batch_server_ ? batch_server_ : last_server_;
          break;
        default:  // extended protocol: the first message after a Sync opens a batch
          if (!batch_server_) {
            batch_server_ = co_await RouteBatch(client_in_.data().substr(start));
            in_flight_.push_back(
                {batch_server_, std::chrono::steady_clock::now(), batch_route_, batch_writes_});
          }
          target = batch_server_;
          if (piece->kind == pg::Piece::Kind::kMessage) PrepareLazily(*target, type, bytes);
          if (type == pg::msg::kSync) batch_server_ = nullptr;
          break;
      }
      last_server_ = target;
      if (piece->starts_message) target->tracker.OnRequest(type, pg::Origin::kClient);
      target->out.append(bytes);
    }
    client_in_.Consume(used);
    Wake();
    for (auto& [name, server] : servers_) {
      if (server->out.empty()) continue;
      auto [ec, n] = co_await server->backend->stream.Write(asio::buffer(server->out));
      server->out.clear();
      if (ec) co_return;  // the reply loop sees the loss and says so
    }
    if (client_done_ || closing_error_) co_return;
    auto space = client_in_.Prepare(
        ReadSize(client_in_, client_framer_, context_.limits.max_message));
    auto [ec, n] = co_await client_.ReadSome(space);
    if (ec) {
      client_done_ = true;
      co_return;
    }
    client_in_.Commit(n);
    if (client_in_.empty()) client_in_.ShrinkTo(kReadChunk * 4);
  }
}

awaitable<void> PgRelay::ServersToClient() {
  for (;;) {
    if (in_flight_.empty()) {
      if (client_done_ || closing_error_ || shutdown_requested_) co_return;
      if (!co_await WaitForWork()) co_return;
      continue;
    }
    PgServer& server = *in_flight_.front().server;
    MarkActive(server);
    if (!co_await ForwardRepliesOf(server)) co_return;
  }
}

awaitable<bool> PgRelay::WaitForWork() {
  // Idle: wake for a new batch, or for what the primary sends on its own (NOTIFY for a LISTEN,
  // a FATAL before it closes). Waiting for readability consumes nothing, so it is safe to abandon.
  work_signal_.expires_at(asio::steady_timer::time_point::max());
  if (!primary_ || !primary_->backend->buffer.empty()) {
    co_await work_signal_.async_wait(kNoThrow);
    co_return true;
  }
  auto woke = co_await (work_signal_.async_wait(kNoThrow) ||
                        primary_->backend->stream.socket().async_wait(
                            tcp::socket::wait_read, kNoThrow));
  if (woke.index() == 1 && in_flight_.empty() && !shutdown_requested_) {
    // Asynchronous messages: forward them whole, as they are.
    PgServer& primary = *primary_;
    if (!co_await ReadServer(primary)) co_return false;
    ByteBuffer& in = primary.backend->buffer;
    size_t used = 0;
    for (;;) {
      auto piece = primary.framer.Next(in.data().substr(used));
      if (!piece.ok() || piece->kind == pg::Piece::Kind::kNeedMore) break;
      if (piece->starts_message) primary.tracker.OnReply(piece->type);
      if (piece->type == pg::msg::kErrorResponse) server_sent_fatal_ = true;
      used += piece->size;
    }
    if (used > 0) {
      client_stream_clean_ = false;
      auto [ec, n] = co_await client_.Write(asio::buffer(in.data().data(), used));
      if (ec) co_return false;
      in.Consume(used);
      client_stream_clean_ = !primary.framer.in_message();
    }
  }
  co_return true;
}

awaitable<bool> PgRelay::ReadServer(PgServer& server) {
  ByteBuffer& in = server.backend->buffer;
  auto space = in.Prepare(ReadSize(in, server.framer, context_.limits.max_message));
  auto [ec, n] = co_await server.backend->stream.ReadSome(space);
  if (ec) {
    // Cancelled: a drain is under way, or the client side ended first and has said why.
    if (ec != asio::error::operation_aborted && !shutdown_requested_ && !server_sent_fatal_ &&
        !closing_error_) {
      closing_error_ = Fatal("08006", "server connection to PostgreSQL node \"" +
                                          server.backend->target.node_name + "\" was lost");
    }
    co_return false;
  }
  in.Commit(n);
  co_return true;
}

awaitable<bool> PgRelay::ForwardRepliesOf(PgServer& server) {
  ByteBuffer& in = server.backend->buffer;
  for (;;) {
    size_t used = 0;
    bool batch_done = false;
    bool gathered = false;  // some piece was swallowed: forwarded bytes are gathered in client_out_
    client_out_.clear();
    while (!batch_done) {
      auto piece = server.framer.Next(in.data().substr(used));
      if (!piece.ok()) {
        spdlog::warn("pg: server {} sent an unframeable stream: {}",
                     server.backend->target.node_name, std::string(piece.status().message()));
        closing_error_ = Fatal("08P01", "protocol error from the server");
        co_return false;
      }
      if (piece->kind == pg::Piece::Kind::kNeedMore) break;
      const std::string_view bytes = in.data().substr(used, piece->size);
      if (piece->starts_message) {
        const auto verdict = server.tracker.OnReply(piece->type);
        server.forwarding = verdict.forward;
        if (verdict.unexpected) {
          spdlog::debug("pg: reply '{}' from {} matches no request", piece->type,
                        server.backend->target.node_name);
        }
        if (piece->kind == pg::Piece::Kind::kMessage) {
          const std::string_view body = bytes.substr(5);
          if (piece->type == pg::msg::kReadyForQuery && verdict.batch_done) {
            const char status = pg::ParseReadyForQuery(body).value_or('I');
            server.backend->transaction_status = status;
            transaction_server_ = status == 'I' ? nullptr : &server;
            batch_done = true;
            const InFlight& batch = in_flight_.front();
            if (status != 'I') transaction_route_ = batch.route;
            // Read-your-writes: a write counts once the server is idle again (committed).
            write_unacknowledged_ = write_unacknowledged_ || batch.writes;
            if (status == 'I' && write_unacknowledged_) {
              route_state_.last_write_ack = std::chrono::steady_clock::now();
              write_unacknowledged_ = false;
            }
            if (observer_.on_batch_done) {
              observer_.on_batch_done(server, batch.route, status,
                                      std::chrono::steady_clock::now() - batch.started);
            }
          } else if (piece->type == pg::msg::kErrorResponse) {
            auto fields = pg::ParseErrorFields(body);
            const bool fatal =
                fields.ok() && (fields->severity == "FATAL" || fields->severity == "PANIC");
            server_sent_fatal_ = server_sent_fatal_ || fatal;
            if (verdict.proxy_error && fields.ok()) {
              spdlog::warn("pg: a request the proxy sent to {} failed: {}",
                           server.backend->target.node_name, std::string(fields->message));
            }
          }
        }
      }
      if (server.forwarding) {
        if (gathered) client_out_.append(bytes);
      } else if (!gathered) {
        client_out_.append(in.data().substr(0, used));
        gathered = true;
      }
      used += piece->size;
    }
    const std::string_view to_client = gathered ? std::string_view(client_out_)
                                                : in.data().substr(0, used);
    if (!to_client.empty()) {
      client_stream_clean_ = false;
      auto [ec, n] = co_await client_.Write(asio::buffer(to_client.data(), to_client.size()));
      if (ec) co_return false;
      client_stream_clean_ = !server.framer.in_message();
    }
    in.Consume(used);
    if (in.empty()) in.ShrinkTo(kReadChunk * 4);
    if (batch_done) {
      in_flight_.pop_front();
      co_return true;
    }
    if (shutdown_requested_) co_return false;
    if (!co_await ReadServer(server)) co_return false;
  }
}

}  // namespace nerava::proxy
