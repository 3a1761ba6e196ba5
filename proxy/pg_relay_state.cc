// The session state a PgRelay keeps in step across its server connections: what a batch is
// (classification), which SETs to replay on a server that has fallen behind, and which named
// statements to prepare on a server before it runs them.
#include <algorithm>

#include "nerava/routing/sql_classifier.h"
#include "proxy/pg_relay.h"

namespace nerava::proxy {
namespace {

// One statement cache per worker thread: sessions of a worker share it without locks.
routing::ClassificationCache& WorkerClassificationCache() {
  thread_local routing::ClassificationCache cache;
  return cache;
}

// The stronger of two statement kinds, for a batch of several statements.
int Strength(routing::StatementKind kind) {
  using K = routing::StatementKind;
  switch (kind) {
    case K::kRead:
      return 0;
    case K::kProxyDirective:
      return 1;
    case K::kSessionSet:
      return 2;
    case K::kTransactionScoped:
    case K::kTransactionEnd:
    case K::kTransactionBegin:
      return 3;
    case K::kWrite:
    case K::kPin:
    case K::kUnparsable:
      break;
  }
  return 4;
}

void Merge(routing::StatementClass& into, const routing::StatementClass& part) {
  if (Strength(part.kind) > Strength(into.kind)) {
    into.kind = part.kind;
    into.read_only_transaction = part.read_only_transaction;
  }
  into.pins |= part.pins;
  into.unpins |= part.unpins;
  into.session_effects.insert(into.session_effects.end(), part.session_effects.begin(),
                              part.session_effects.end());
  into.functions.insert(into.functions.end(), part.functions.begin(), part.functions.end());
  if (into.hint == routing::RouteHint::kNone) into.hint = part.hint;
  if (part.max_lag_ms && (!into.max_lag_ms || *part.max_lag_ms < *into.max_lag_ms)) {
    into.max_lag_ms = part.max_lag_ms;
  }
  if (part.route_directive) into.route_directive = part.route_directive;
}

void AppendCloseStatement(std::string& out, std::string_view name) {
  const uint32_t length = static_cast<uint32_t>(4 + 1 + name.size() + 1);
  out.push_back(pg::msg::kClose);
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(length >> shift));
  out.push_back('S');
  out.append(name);
  out.push_back('\0');
}

}  // namespace

routing::StatementClass PgRelay::ClassifyBatch(std::string_view pending) {
  routing::ClassificationCache& cache = WorkerClassificationCache();
  routing::StatementClass batch;
  batch.kind = routing::StatementKind::kRead;
  auto unknown = [&batch] { batch.kind = routing::StatementKind::kUnparsable; };
  const char first = pending.empty() ? 0 : pending.front();
  if (first == pg::msg::kFunctionCall) {
    batch.kind = routing::StatementKind::kWrite;
    return batch;
  }
  // The whole messages of the batch that are already here: a Query alone, or extended
  // messages up to Sync. Statements that arrive later follow the batch's server.
  std::shared_ptr<const routing::StatementClass> unnamed;
  std::map<std::string_view, std::shared_ptr<const routing::StatementClass>> parsed_here;
  while (!pending.empty()) {
    auto header = pg::PeekHeader(pending, context_.limits.max_message);
    if (!header.ok() || !header->has_value() || (*header)->total_size() > pending.size()) break;
    const std::string_view body = pending.substr(5, (*header)->body_size());
    const char type = (*header)->type;
    pending.remove_prefix((*header)->total_size());
    if (type == pg::msg::kQuery) {
      auto sql = pg::ParseQuery(body);
      if (!sql.ok()) {
        unknown();
        break;
      }
      Merge(batch, *cache.Classify(std::string_view(sql->data(), sql->size())));
      break;
    }
    if (type == pg::msg::kParse) {
      auto parse = pg::ParseParse(body);
      if (!parse.ok()) {
        unknown();
        break;
      }
      auto statement = cache.Classify(std::string_view(parse->query.data(), parse->query.size()));
      Merge(batch, *statement);
      if (parse->statement.empty()) {
        unnamed = statement;
      } else {
        parsed_here[std::string_view(parse->statement.data(), parse->statement.size())] =
            statement;
      }
    } else if (type == pg::msg::kBind) {
      auto bind = pg::ParseBind(body);
      if (!bind.ok()) {
        unknown();
        break;
      }
      const std::string_view name(bind->statement.data(), bind->statement.size());
      std::shared_ptr<const routing::StatementClass> statement;
      if (name.empty()) {
        statement = unnamed;
      } else if (auto it = parsed_here.find(name); it != parsed_here.end()) {
        statement = it->second;
      } else if (auto known = prepared_.find(name); known != prepared_.end()) {
        statement = known->second.statement;
      }
      if (!statement) {
        unknown();  // a statement the proxy never saw prepared (or the unnamed one of an
        break;      // earlier batch): only the primary is sure to have it
      }
      Merge(batch, *statement);
    } else if (type == pg::msg::kSync) {
      break;
    }
  }
  return batch;
}

void PgRelay::ApplyPins(const routing::StatementClass& batch) {
  pins_ = (pins_ | batch.pins) & ~batch.unpins;
  route_state_.pinned = pins_ != routing::kPinNone;
  if (batch.route_directive) route_state_.route_override = *batch.route_directive;
}

void PgRelay::ApplySettings(const routing::StatementClass& batch, PgServer& target) {
  using Op = routing::SessionEffect::Op;
  bool changed = false;
  for (const auto& effect : batch.session_effects) {
    switch (effect.op) {
      case Op::kSet:
        // Kept in the order last set: SET SESSION AUTHORIZATION resets the role, so the
        // replay must apply them in the order the client did.
        std::erase_if(settings_, [&](const auto& entry) { return entry.first == effect.name; });
        settings_.emplace_back(effect.name, effect.text);
        changed = true;
        break;
      case Op::kReset:
        std::erase_if(settings_, [&](const auto& entry) { return entry.first == effect.name; });
        changed = true;
        break;
      case Op::kDiscardAll:
        // DISCARD ALL also deallocates every prepared statement of the server that runs it;
        // the other servers are told the same before their next use.
        prepared_.clear();
        for (auto& [name, server] : servers_) server->discard_pending = server.get() != &target;
        target.prepared.clear();
        settings_.clear();
        changed = true;
        break;
      case Op::kResetAll:
        // RESET ALL leaves the role and the session authorization alone, as in PostgreSQL.
        std::erase_if(settings_, [](const auto& entry) {
          return entry.first != "role" && entry.first != "session_authorization";
        });
        changed = true;
        break;
      case Op::kDiscard:
        break;
    }
  }
  if (!changed) return;
  ++settings_version_;
  target.settings_version = settings_version_;  // the batch itself brings it up to date
}

void PgRelay::BringUpToDate(PgServer& server) {
  if (server.settings_version == settings_version_ && !server.discard_pending) return;
  // A clean slate (RESET ALL keeps the role, so both are reset), then the session's SETs.
  std::string sql = server.discard_pending ? "DISCARD ALL"
                                           : "RESET SESSION AUTHORIZATION; RESET ALL";
  for (const auto& [name, statement] : settings_) {
    sql += "; ";
    sql += statement;
  }
  if (server.discard_pending) server.prepared.clear();
  pg::AppendQuery(server.out, sql);
  server.tracker.OnRequest(pg::msg::kQuery, pg::Origin::kProxy);
  server.settings_version = settings_version_;
  server.discard_pending = false;
}

void PgRelay::PrepareLazily(PgServer& server, char type, std::string_view message) {
  const std::string_view body = message.substr(5);
  auto ensure_closed = [&server](std::string_view name) {
    if (auto it = server.prepared.find(name); it != server.prepared.end()) {
      AppendCloseStatement(server.out, name);
      server.tracker.OnRequest(pg::msg::kClose, pg::Origin::kProxy);
      server.prepared.erase(it);
    }
  };
  auto ensure_prepared = [&](std::string_view name) {
    auto it = prepared_.find(name);
    if (name.empty() || it == prepared_.end()) return;
    auto has = server.prepared.find(name);
    if (has != server.prepared.end() && has->second == it->second.version) return;
    ensure_closed(name);
    server.out.append(it->second.parse_message);
    server.tracker.OnRequest(pg::msg::kParse, pg::Origin::kProxy);
    server.prepared.emplace(std::string(name), it->second.version);
  };
  switch (type) {
    case pg::msg::kParse: {
      auto parse = pg::ParseParse(body);
      if (!parse.ok() || parse->statement.empty()) return;
      const std::string_view name(parse->statement.data(), parse->statement.size());
      // A stale statement of that name on this server would make the client's Parse fail.
      ensure_closed(name);
      const uint64_t version = ++prepared_versions_;
      prepared_[std::string(name)] = Prepared{
          std::string(message), version,
          WorkerClassificationCache().Classify(
              std::string_view(parse->query.data(), parse->query.size()))};
      server.prepared.emplace(std::string(name), version);
      return;
    }
    case pg::msg::kBind: {
      auto bind = pg::ParseBind(body);
      if (bind.ok()) ensure_prepared(std::string_view(bind->statement.data(), bind->statement.size()));
      return;
    }
    case pg::msg::kDescribe: {
      auto describe = pg::ParseCloseOrDescribe(body);
      if (describe.ok() && describe->kind == 'S') {
        ensure_prepared(std::string_view(describe->name.data(), describe->name.size()));
      }
      return;
    }
    case pg::msg::kClose: {
      auto close = pg::ParseCloseOrDescribe(body);
      if (close.ok() && close->kind == 'S') {
        const std::string_view name(close->name.data(), close->name.size());
        if (auto it = prepared_.find(name); it != prepared_.end()) prepared_.erase(it);
        if (auto it = server.prepared.find(name); it != server.prepared.end()) {
          server.prepared.erase(it);
        }
      }
      return;
    }
    default:
      return;
  }
}

}  // namespace nerava::proxy
