// What a PgRelay does when a server connection goes away under a session (DESIGN §7, §9): the
// client is told what happened to each batch in PostgreSQL's own terms, and the session goes on
// with whichever node is primary now.
//
//   batch in flight on the lost server ──▶ 08007 (a write whose commit may have happened)
//                                      ──▶ 40001 (anything else: rolled back, retry it)
//   read that may run again elsewhere  ──▶ re-run on the primary (nothing reached the client)
//   transaction open on the lost server ─▶ the next statements: 40001 once, then 25P02, until
//                                          COMMIT/ROLLBACK, answered "ROLLBACK"
#include <spdlog/spdlog.h>

#include "proxy/pg_cancel.h"
#include "proxy/pg_relay.h"

namespace nerava::proxy {
namespace {

using routing::StatementKind;

pg::Error FailoverError(bool outcome_unknown, const std::string& why) {
  if (outcome_unknown) {
    return pg::Error{"ERROR", "08007",
                     why + " (failover): the statement may or may not have committed; the "
                           "connection is still usable",
                     "", ""};
  }
  return pg::Error{"ERROR", "40001",
                   why + " (failover): the transaction was rolled back; retry it, the "
                         "connection is still usable",
                   "", ""};
}

void AppendEmptyMessage(std::string& out, char type) {
  out.push_back(type);
  out.append({0, 0, 0, 4});
}

// PostgreSQL's answer to COMMIT or ROLLBACK of an aborted transaction, per client message.
void AppendRollback(std::string& out, std::string_view types) {
  if (types.empty()) {
    pg::AppendCommandComplete(out, "ROLLBACK");
    return;
  }
  for (const char type : types) {
    switch (type) {
      case pg::msg::kParse:
        AppendEmptyMessage(out, pg::msg::kParseComplete);
        break;
      case pg::msg::kBind:
        AppendEmptyMessage(out, pg::msg::kBindComplete);
        break;
      case pg::msg::kDescribe:
        AppendEmptyMessage(out, pg::msg::kNoData);
        break;
      case pg::msg::kClose:
        AppendEmptyMessage(out, pg::msg::kCloseComplete);
        break;
      case pg::msg::kExecute:
        pg::AppendCommandComplete(out, "ROLLBACK");
        break;
      default:  // Sync (answered by the ReadyForQuery that follows), Flush
        break;
    }
  }
}

}  // namespace

PgRelay::~PgRelay() { *self_ = nullptr; }

bool PgRelay::Retryable(const routing::StatementClass& batch) const {
  // The read-only listener's primary refuses writes as its replicas do: nothing to gain.
  return !context_.read_only && batch.kind == StatementKind::kRead;
}

bool PgRelay::IsPreamble(char type) {
  return type == pg::msg::kParseComplete || type == pg::msg::kBindComplete ||
         type == pg::msg::kCloseComplete || type == pg::msg::kParameterDescription ||
         type == pg::msg::kNoData || type == pg::msg::kRowDescription;
}

bool PgRelay::RetryWorthy(std::string_view error_body) {
  auto fields = pg::ParseErrorFields(error_body);
  if (!fields.ok()) return false;
  // 25006: a function wrote on the standby; 40001: canceled for a conflict with recovery;
  // FATAL: the server is going away before it ran the read.
  return fields->code == "25006" || fields->code == "40001" || fields->severity == "FATAL";
}

bool PgRelay::IsFatal(std::string_view error_message) {
  if (error_message.size() < 5) return false;
  auto fields = pg::ParseErrorFields(error_message.substr(5));
  return fields.ok() && (fields->severity == "FATAL" || fields->severity == "PANIC");
}

void PgRelay::LoseServer(PgServer& server, const std::string& why) {
  if (server.lost) return;
  server.lost = true;
  server.backend->stream.Close();
  spdlog::warn("pg: {} (user {}); the client session goes on", why, login_.user);
  // What each batch on it becomes, in order: inside a transaction the work is rolled back;
  // a write outside one (or a COMMIT) may have committed before the connection broke.
  bool in_transaction = transaction_server_ == &server;
  bool told = false;
  for (InFlight& batch : in_flight_) {
    if (batch.server != &server) continue;
    if (batch.kind == StatementKind::kTransactionBegin) in_transaction = true;
    const bool ends = batch.kind == StatementKind::kTransactionEnd;
    batch.error = FailoverError(batch.writes && (ends || !in_transaction), why);
    batch.status_after = in_transaction && !ends ? 'E' : 'I';
    if (ends) in_transaction = false;
    told = true;
  }
  if (transaction_server_ == &server) transaction_server_ = nullptr;
  if (in_transaction) {
    lost_transaction_ = true;
    if (!told) lost_transaction_error_ = FailoverError(false, why);
  }
  if (primary_ == &server) primary_ = nullptr;
  if (write_server_ == &server) write_server_ = nullptr;
  if (replies_from_ == &server) replies_from_ = nullptr;
  for (auto it = servers_.begin(); it != servers_.end(); ++it) {
    if (it->second.get() == &server) {
      lost_servers_.push_back(std::move(it->second));
      servers_.erase(it);
      break;
    }
  }
  Wake();
}

void PgRelay::OnNodeDown(const std::string& node) {
  auto it = servers_.find(node);
  if (it == servers_.end()) return;
  PgServer& server = *it->second;
  if (BatchWaitsOn(server) && !server.lost) {
    // A node too slow to answer its checks may still be alive: cancel what it runs for this
    // session, so that a statement the client is told failed does not go on (and commit) there.
    // Best effort: a batch the server has read already but not begun runs after the cancel.
    // The address the connection is open to, not the name: no lookup on the way.
    PgBackend& backend = *server.backend;
    error_code ec;
    const tcp::endpoint address = backend.stream.socket().remote_endpoint(ec);
    if (!ec) {
      spdlog::debug("pg: cancelling the statement in flight on PostgreSQL node \"{}\"", node);
      asio::co_spawn(client_.socket().get_executor(),
                     SendCancelRequest(address, backend.key, context_.settings.connect_timeout),
                     asio::detached);
    }
  }
  LoseServer(server, "PostgreSQL node \"" + node + "\" stopped answering health checks");
}

void PgRelay::AbortWrites() {
  if (!write_server_ || write_server_->lost) return;
  LoseServer(*write_server_, "the write transaction on PostgreSQL node \"" +
                                 write_server_->backend->target.node_name +
                                 "\" was aborted by a planned switchover");
}

void PgRelay::MaybeReleaseWriteTicket() {
  if (!write_ticket_ || !in_flight_.empty() || batch_open_ || InTransaction()) return;
  write_ticket_.reset();
  write_server_ = nullptr;
}

void PgRelay::AnswerInLostTransaction(const routing::StatementClass& batch, InFlight& entry) {
  entry.in_transaction = true;
  entry.answer = LocalAnswer::kError;
  if (batch.kind == StatementKind::kTransactionEnd) {
    // The transaction is over either way; COMMIT of an aborted transaction reports ROLLBACK.
    if (lost_transaction_error_) {
      entry.error = *lost_transaction_error_;
    } else {
      entry.answer = LocalAnswer::kRollback;
    }
    entry.status_after = 'I';
    lost_transaction_ = false;
  } else {
    entry.error = lost_transaction_error_.value_or(
        pg::Error{"ERROR", "25P02",
                  "current transaction is aborted, commands ignored until end of transaction "
                  "block",
                  "", ""});
    entry.status_after = 'E';
  }
  lost_transaction_error_.reset();
}

awaitable<bool> PgRelay::AnswerFailedBatch() {
  InFlight& batch = in_flight_.front();
  if (batch.server && batch.retryable && !batch.forwarded) {
    // A read lost with its server before any answer: once the client has sent all of it,
    // it runs again on the primary.
    if (!batch.complete) co_return co_await WaitForWork();
    co_return co_await RetryBatch();
  }
  std::string out;
  if (batch.error && !batch.error_sent) {
    pg::AppendErrorResponse(out, *batch.error);
    batch.error_sent = true;
  }
  // Decided before the write: the client's Sync may arrive while it is under way.
  const bool complete = batch.complete;
  if (complete) {
    if (batch.answer == LocalAnswer::kRollback) AppendRollback(out, batch.types);
    pg::AppendReadyForQuery(out, batch.status_after);
  }
  if (!out.empty()) {
    auto [ec, n] = co_await client_.Write(asio::buffer(out));
    if (ec) co_return false;
  }
  // PostgreSQL answers an error at once and the ReadyForQuery at the client's Sync (if it came
  // during the write, the next pass sends it: its wake-up went to nobody).
  if (!complete && batch.complete) co_return true;
  if (!complete) co_return co_await WaitForWork();
  in_flight_.pop_front();
  MaybeReleaseWriteTicket();
  co_return true;
}

awaitable<bool> PgRelay::RetryBatch() {
  InFlight& batch = in_flight_.front();
  auto snapshot = context_.topology->Get();
  const routing::NodeState* primary = snapshot->postgres.Primary();
  PgServer* target = co_await ServerFor(primary);
  // Batches already queued on the target would answer first: then the retry cannot run.
  bool queued = false;
  for (size_t i = 1; i < in_flight_.size(); ++i) queued = queued || in_flight_[i].server == target;
  if (!target || target->lost || target == batch.server || queued) {
    batch.retryable = false;
    if (batch.server && !batch.server->lost && batch.refused) {
      // The replica's own answer, as it was.
      std::string out = std::move(batch.held_replies);
      out += batch.retry_error;
      pg::AppendReadyForQuery(out, 'I');
      auto [ec, n] = co_await client_.Write(asio::buffer(out));
      if (ec) co_return false;
      in_flight_.pop_front();
      MaybeReleaseWriteTicket();
    }
    co_return true;  // a lost server's batch is answered as failed by ServersToClient
  }
  spdlog::debug("pg: a read {} by {} runs again on the primary {}",
                batch.refused ? "refused" : "lost", batch.server->backend->target.node_name,
                target->backend->target.node_name);
  batch.server = target;
  batch.route = "primary";
  batch.retryable = false;  // once
  batch.refused = false;
  batch.error.reset();
  batch.held_replies = std::string();
  batch.retry_error = std::string();
  BringUpToDate(*target);
  std::string_view rest = batch.retry_bytes;
  while (!rest.empty()) {
    auto header = pg::PeekHeader(rest, context_.limits.max_message);
    if (!header.ok() || !header->has_value() || (*header)->total_size() > rest.size()) break;
    const std::string_view message = rest.substr(0, (*header)->total_size());
    const char type = (*header)->type;
    if (type != pg::msg::kQuery) PrepareLazily(*target, type, message);
    target->tracker.OnRequest(type, pg::Origin::kClient);
    target->out.append(message);
    rest.remove_prefix(message.size());
  }
  batch.retry_bytes = std::string();
  if (!co_await WriteServer(*target)) {
    LoseServer(*target, "server connection to PostgreSQL node \"" +
                            target->backend->target.node_name + "\" was lost");
  }
  co_return true;
}

}  // namespace nerava::proxy
