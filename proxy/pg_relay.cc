#include "proxy/pg_relay.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <tuple>

#include "proxy/metrics.h"
#include "proxy/pg_server_pool.h"

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

void PgRelay::CloseServers() {
  for (auto& [name, server] : servers_) server->backend->stream.Close();
}

std::vector<std::unique_ptr<PgBackend>> PgRelay::TakeReusableServers() {
  std::vector<std::unique_ptr<PgBackend>> reusable;
  // Only after the client ended the session between batches, and not because of an error.
  if (!client_done_ || closing_error_ || server_sent_fatal_ || shutdown_requested_ ||
      !in_flight_.empty() || lost_transaction_) {
    return reusable;
  }
  for (auto it = servers_.begin(); it != servers_.end();) {
    PgServer& server = *it->second;
    const bool idle = !server.lost && !server.writing && server.out.empty() &&
                      server.tracker.idle() && !server.framer.in_message() &&
                      server.backend->buffer.empty() &&
                      server.backend->transaction_status == 'I';
    if (!idle) {
      ++it;
      continue;
    }
    reusable.push_back(std::move(server.backend));
    it = servers_.erase(it);
  }
  return reusable;
}

void PgRelay::MarkActive(PgServer& server) {
  if (active_server_ == &server) return;
  active_server_ = &server;
  if (observer_.on_active_server) observer_.on_active_server(*server.backend);
}

awaitable<bool> PgRelay::PassGate(bool write, std::chrono::steady_clock::time_point deadline) {
  WriteGate* gate = context_.write_gate;
  if (!gate || !gate->Holds(write)) co_return true;
  co_return co_await gate->WaitOpen(write, deadline);
}

awaitable<PgServer*> PgRelay::ServerFor(const routing::NodeState* wanted) {
  if (!wanted) co_return nullptr;
  const routing::NodeState& node = *wanted;
  if (auto it = servers_.find(node.name); it != servers_.end()) co_return it->second.get();
  PgBackendTarget target{node.name, node.host, node.port, node.role, node.times_marked_down};
  PgBackendResult result =
      co_await OpenPgServer(context_, target, login_.parameters, login_.user, login_.password);
  if (!result.backend) {
    spdlog::warn("pg: cannot open a server connection to {} for user {}; using another node",
                 node.name, login_.user);
    co_return nullptr;
  }
  // Another batch may have opened one meanwhile (the reply loop retries reads): keep that one.
  if (auto it = servers_.find(node.name); it != servers_.end()) co_return it->second.get();
  auto server = std::make_unique<PgServer>(std::move(result.backend), context_.limits);
  PgServer* raw = server.get();
  servers_.emplace(node.name, std::move(server));
  co_return raw;
}

awaitable<PgServer*> PgRelay::ChooseServer(const routing::StatementClass& batch) {
  // pg_proc volatility as the function loader last published it (config fallback before).
  const auto functions = context_.function_policies ? context_.function_policies->Get() : nullptr;
  const routing::RouteIntent intent =
      routing::IntentFor(batch, functions ? *functions : context_.functions);
  // The write gate holds what may write; reads and SETs keep flowing during a switchover.
  const bool write = !intent.replica_ok && !intent.session_state;
  WriteGate* gate = context_.write_gate;
  const auto deadline = std::chrono::steady_clock::now() + context_.failover_wait;
  std::optional<asio::steady_timer> pause;  // only while no node takes the batch
  for (;;) {
    // Checked here first: the gate is open nearly always, and a coroutine call costs a frame.
    if (gate != nullptr && gate->Holds(write)) {
      const bool may_proceed = co_await PassGate(write, deadline);
      if (!may_proceed) co_return nullptr;
    }
    if (shutdown_requested_) co_return nullptr;
    auto snapshot = context_.topology->Get();
    const routing::ProtocolTopology& topology = snapshot->postgres;
    routing::RouteRequest request;
    request.intent = intent;
    request.listener =
        context_.read_only ? routing::Listener::kReadOnly : routing::Listener::kReadWrite;
    request.session = &route_state_;
    request.topology = &topology;
    request.policy = &context_.route_policy;
    auto decision = routing::Route(request);
    const routing::NodeState* node = nullptr;
    if (decision.ok() && decision->node >= 0) node = &topology.nodes[decision->node];
    if (decision.ok() && observer_.on_routed) observer_.on_routed(decision->reason);
    if (decision.ok() && decision->reason == routing::RouteReason::kReadPrimaryFallbackRyw &&
        context_.metrics) {
      context_.metrics->StaleReadAvoided(routing::Protocol::kPostgres).Increment();
    }
    PgServer* target = nullptr;
    if (node) {
      // The session's connection to the node, opened on first use.
      if (auto open = servers_.find(node->name); open != servers_.end()) {
        target = open->second.get();
      } else {
        target = co_await ServerFor(node);
      }
    }
    if (target) {
      const bool on_primary = node->role != routing::Role::kReplica;
      batch_route_ = on_primary ? "primary" : "replica";
      if (on_primary && write) {
        primary_ = target;  // asynchronous messages (NOTIFY) come from where the writes go
        if (gate && !write_ticket_) {
          if (!gate_seat_) {
            std::weak_ptr<PgRelay*> self = self_;
            auto executor = client_.socket().get_executor();
            gate_seat_ = gate->TakeSeat([self, executor] {
              asio::post(executor, [self] {
                if (auto relay = self.lock(); relay && *relay) (*relay)->AbortWrites();
              });
            });
          }
          auto ticket = gate->TryEnter(*gate_seat_);
          if (!ticket) continue;  // the gate closed in between: wait for it
          write_ticket_ = std::move(*ticket);
        }
        if (write_ticket_) write_server_ = target;
      }
      co_return target;
    }
    // No node takes it: a failover is under way (no primary yet, or the one named does not
    // answer before the monitor notices). Wait for the topology to settle, within bounds.
    if (std::chrono::steady_clock::now() >= deadline) co_return nullptr;
    if (!pause) pause.emplace(client_.socket().get_executor());
    pause->expires_after(std::chrono::milliseconds(50));
    co_await pause->async_wait(kNoThrow);
  }
}

awaitable<PgServer*> PgRelay::RouteBatch(std::string_view pending, bool complete) {
  const routing::StatementClass batch = ClassifyBatch(pending);
  ApplyPins(batch);
  if (in_flight_.empty() && !batch_open_) {  // no batch refers to them
    std::erase_if(lost_servers_, [](const auto& server) { return server->in_use == 0; });
  }
  InFlight entry;
  entry.started = std::chrono::steady_clock::now();
  entry.kind = batch.kind;
  entry.complete = complete;
  entry.in_transaction = InTransaction();
  PgServer* target = nullptr;
  batch_route_ = "primary";
  if (lost_transaction_) {
    AnswerInLostTransaction(batch, entry);
  } else if (context_.read_only && batch.kind == routing::StatementKind::kWrite) {
    // READ_DATABASE_URL never writes, whichever node serves it and whatever the session SET
    // (a replica would say the same; the primary fallback could be talked into writing).
    entry.answer = LocalAnswer::kError;
    entry.error = pg::Error{"ERROR", "25006",
                            "cannot execute a write on the read-only listener (nerava-proxy "
                            "pg_readonly: use the read-write address for writes)",
                            "", ""};
    entry.status_after = InTransaction() ? 'E' : 'I';
  } else if (transaction_server_) {
    // A transaction stays on the server that started it.
    target = transaction_server_;
    batch_route_ = transaction_route_;
  } else if (!in_flight_.empty() && in_flight_.back().server &&
             !in_flight_.back().server->lost) {
    // Pipelined behind unanswered batches: their effect on the transaction state is unknown.
    target = in_flight_.back().server;
    batch_route_ = in_flight_.back().route;
  } else {
    target = co_await ChooseServer(batch);
    if (!target) {
      entry.answer = LocalAnswer::kError;
      entry.error = pg::Error{"ERROR", "57P03",
                              "no PostgreSQL node can take this statement: no primary was "
                              "found within failover.wait (a failover is taking too long)",
                              "", ""};
    }
  }
  if (target) {
    BringUpToDate(*target);
    ApplySettings(batch, *target);
  }
  // COMMIT acknowledges the transaction's writes, unless it ran on a replica (read only).
  batch_writes_ = batch.Writes() || (batch.kind == routing::StatementKind::kTransactionEnd &&
                                     std::string_view(batch_route_) == "primary");
  entry.server = target;
  entry.route = batch_route_;
  entry.writes = batch_writes_;
  entry.retryable = target && std::string_view(batch_route_) == "replica" && Retryable(batch) &&
                    !entry.in_transaction;
  in_flight_.push_back(std::move(entry));
  co_return target;
}

awaitable<void> PgRelay::Run() {
  co_await (ClientToServers() || ServersToClient());
}

awaitable<void> PgRelay::ClientToServers() {
  // However this loop ends, the reply loop hears of it: `||` does not cancel a parked read
  // (its cancellation slot is the relay's own).
  std::exception_ptr failure;
  try {
    co_await ForwardClientRequests();
  } catch (...) {
    failure = std::current_exception();
  }
  Wake();
  if (failure) std::rethrow_exception(failure);
}

awaitable<void> PgRelay::ForwardClientRequests() {
  std::vector<PgServer*> to_write;
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
        case pg::msg::kFunctionCall: {
          target = co_await RouteBatch(client_in_.data().substr(start), /*complete=*/true);
          batch_open_ = false;
          batch_server_ = nullptr;
          InFlight& query = in_flight_.back();
          if (query.retryable && piece->kind == pg::Piece::Kind::kMessage) {
            query.retry_bytes.assign(bytes);
          } else {
            query.retryable = false;
          }
          break;
        }
        case pg::msg::kCopyData:
        case pg::msg::kCopyDone:
        case pg::msg::kCopyFail:
          target = last_server_;  // COPY data belongs to the batch that started the COPY
          break;
        case pg::msg::kFlush:
          target = batch_open_ ? batch_server_ : last_server_;
          break;
        default: {  // extended protocol: the first message after a Sync opens a batch
          if (!batch_open_) {
            batch_server_ = co_await RouteBatch(client_in_.data().substr(start), false);
            batch_open_ = true;
          }
          target = batch_server_;
          InFlight& open = in_flight_.back();
          if (!target && piece->starts_message) open.types.push_back(type);
          if (open.retryable) {
            open.retry_bytes.append(bytes);
            if (open.retry_bytes.size() > kMaxRetryBytes) {
              open.retryable = false;
              open.retry_bytes = std::string();
            }
          }
          if (type == pg::msg::kSync) {
            open.complete = true;
            batch_open_ = false;
            batch_server_ = nullptr;
          }
          if (target && !target->lost && piece->kind == pg::Piece::Kind::kMessage) {
            PrepareLazily(*target, type, bytes);
          }
          break;
        }
      }
      last_server_ = target;
      // Answered by the proxy, or bound for a server that is gone: nothing to send.
      if (!target || target->lost) continue;
      if (piece->starts_message) target->tracker.OnRequest(type, pg::Origin::kClient);
      target->out.append(bytes);
    }
    client_in_.Consume(used);
    if (closing_error_ || client_done_ || !ReplyLoopWillSeeReplies()) Wake();
    to_write.clear();
    for (auto& [name, server] : servers_) {
      if (!server->out.empty()) to_write.push_back(server.get());
    }
    for (PgServer* server : to_write) {
      bool written = false;
      if (!WriteOutInPlace(*server, written)) written = co_await WriteServer(*server);
      if (!written) {
        LoseServer(*server, "server connection to PostgreSQL node \"" +
                                server->backend->target.node_name + "\" was lost");
      }
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

bool PgRelay::WriteOutInPlace(PgServer& server, bool& written) {
  if (server.writing || server.lost) return false;  // WriteServer waits its turn or says so
  error_code ec;
  const size_t sent = server.backend->stream.WriteInPlace(asio::buffer(server.out), ec);
  if (!ec && sent < server.out.size()) {
    server.out.erase(0, sent);  // the rest goes when the socket has room
    return false;
  }
  server.out.clear();
  written = !ec;
  return true;
}

awaitable<bool> PgRelay::WriteServer(PgServer& server) {
  const ServerInUse in_use(server);
  if (server.writing) {
    // The other loop is writing to this server: ours follows, in append order.
    asio::steady_timer wait(client_.socket().get_executor());
    while (server.writing && !server.lost) {
      wait.expires_after(std::chrono::milliseconds(1));
      co_await wait.async_wait(kNoThrow);
    }
  }
  if (server.lost) co_return false;
  if (server.out.empty()) co_return true;
  server.writing = true;
  std::swap(server.out, server.sending);  // keeps both buffers' capacity
  auto [ec, n] = co_await server.backend->stream.Write(asio::buffer(server.sending));
  server.sending.clear();
  server.writing = false;
  co_return !ec && !server.lost;
}

awaitable<void> PgRelay::ServersToClient() {
  for (;;) {
    if (in_flight_.empty()) {
      if (client_done_ || closing_error_ || shutdown_requested_) co_return;
      if (!co_await WaitForWork()) co_return;
      continue;
    }
    PgServer* server = in_flight_.front().server;
    const bool failed = !server || server->lost;
    if (!failed) MarkActive(*server);
    // One await per iteration (GCC 12: awaits in several branches of a loop corrupt frames).
    awaitable<bool> step = failed ? AnswerFailedBatch() : ForwardRepliesOf(*server);
    const bool more = co_await std::move(step);
    if (!more) co_return;
  }
}

awaitable<PgRelay::ReadResult> PgRelay::ReadServer(PgServer& server,
                                                   asio::cancellation_signal* park) {
  ByteBuffer& in = server.backend->buffer;
  server.async_readable = false;  // this read takes what made it readable
  auto space = in.Prepare(ReadSize(in, server.framer, context_.limits.max_message));
  Stream& stream = server.backend->stream;
  // One await (GCC 12: awaits in both branches of a conditional corrupt coroutine frames).
  auto reading = park ? stream.ReadSome(space, park->slot()) : stream.ReadSome(space);
  auto [ec, n] = co_await std::move(reading);
  if (!ec) {
    in.Commit(n);
    co_return ReadResult::kOk;
  }
  if (server.lost) co_return ReadResult::kLost;  // given up on by the session (an abort)
  if (park && ec == asio::error::operation_aborted && !shutdown_requested_) {
    co_return ReadResult::kWoken;
  }
  // Cancelled: a drain is under way, or the client side ended first and has said why. A server
  // that said FATAL first ended the session itself, as it would have direct.
  if (ec == asio::error::operation_aborted || shutdown_requested_ || closing_error_ ||
      server_sent_fatal_) {
    co_return ReadResult::kEnd;
  }
  // Gone without a word (crash, network, failover): the session survives it.
  LoseServer(server, "server connection to PostgreSQL node \"" + server.backend->target.node_name +
                         "\" was lost");
  co_return ReadResult::kLost;
}

awaitable<bool> PgRelay::ForwardRepliesOf(PgServer& server) {
  const ServerInUse in_use(server);
  ByteBuffer& in = server.backend->buffer;
  InFlight& batch = in_flight_.front();
  for (;;) {
    size_t used = 0;
    bool batch_done = false;
    bool gathered = false;  // some piece was not forwarded as is: output is in client_out_
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
      bool hold = false;  // keep it back while the batch may still be retried elsewhere
      if (piece->starts_message) {
        const auto verdict = server.tracker.OnReply(piece->type);
        server.forwarding = verdict.forward;
        if (verdict.unexpected) {
          spdlog::debug("pg: reply '{}' from {} matches no request", piece->type,
                        server.backend->target.node_name);
        }
        if (verdict.forward && batch.retryable && !batch.forwarded && !batch.refused) {
          if (piece->type == pg::msg::kErrorResponse && piece->kind == pg::Piece::Kind::kMessage &&
              RetryWorthy(bytes.substr(5))) {
            batch.refused = true;
            batch.retry_error.assign(bytes);
          } else if (IsPreamble(piece->type) && piece->kind == pg::Piece::Kind::kMessage) {
            hold = true;
          } else {
            batch.forwarded = true;  // the answer starts: no retry from here on
            batch.retry_bytes = std::string();
            if (!batch.held_replies.empty()) {
              if (!gathered) {
                client_out_.append(in.data().substr(0, used));
                gathered = true;
              }
              client_out_.append(batch.held_replies);
              batch.held_replies = std::string();
            }
          }
        }
        if (piece->kind == pg::Piece::Kind::kMessage) {
          const std::string_view body = bytes.substr(5);
          if (piece->type == pg::msg::kReadyForQuery && verdict.batch_done) {
            batch_done = true;
            if (!batch.refused) FinishBatch(server, pg::ParseReadyForQuery(body).value_or('I'));
          } else if (piece->type == pg::msg::kErrorResponse && !batch.refused) {
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
      const bool forward = server.forwarding && !hold && !batch.refused;
      if (forward) {
        if (gathered) client_out_.append(bytes);
      } else {
        if (!gathered) {
          client_out_.append(in.data().substr(0, used));
          gathered = true;
        }
        if (hold) batch.held_replies.append(bytes);
      }
      used += piece->size;
    }
    const std::string_view to_client = gathered ? std::string_view(client_out_)
                                                : in.data().substr(0, used);
    if (!to_client.empty()) {
      client_stream_clean_ = false;
      const auto reply = asio::buffer(to_client.data(), to_client.size());
      error_code ec;
      const size_t sent = client_.WriteInPlace(reply, ec);
      if (!ec && sent < reply.size()) {
        std::tie(ec, std::ignore) = co_await client_.WriteRest(reply, sent);
      }
      if (ec) co_return false;
      client_stream_clean_ = !server.framer.in_message();
    }
    in.Consume(used);
    if (in.empty()) in.ShrinkTo(kReadChunk * 4);
    if (batch.refused && (batch_done || IsFatal(batch.retry_error))) {
      // After a FATAL the server closes: it is lost to the session, and the read moves.
      if (!batch_done) {
        LoseServer(server, "PostgreSQL node \"" + server.backend->target.node_name +
                               "\" closed the connection");
      }
      break;
    }
    if (batch_done) {
      in_flight_.pop_front();
      MaybeReleaseWriteTicket();
      co_return true;
    }
    if (shutdown_requested_) co_return false;
    const ReadResult read = co_await ReadServer(server);
    if (read == ReadResult::kEnd) co_return false;
    if (read == ReadResult::kLost) {
      // Mid-message to the client there is no way back; at a boundary the session goes on.
      if (!client_stream_clean_) {
        closing_error_ = Fatal("08006", "server connection to PostgreSQL node \"" +
                                            server.backend->target.node_name + "\" was lost");
        co_return false;
      }
      co_return true;  // the batch is answered as failed (or retried) by ServersToClient
    }
  }
  co_return co_await RetryBatch();  // refused by the replica: once more on the primary
}

void PgRelay::FinishBatch(PgServer& server, char status) {
  server.backend->transaction_status = status;
  replies_from_ = &server;
  transaction_server_ = status == 'I' ? nullptr : &server;
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
}

}  // namespace nerava::proxy
