// A PostgreSQL client session, from its first byte to its close.
//
//   client ──▶ RunPgHandshake: [SSLRequest/GSSENCRequest ─▶ 'S'+TLS | 'N'] ─▶ StartupMessage
//          ──▶ AuthenticateClient (the proxy checks the password itself)
//          ──▶ ConnectServer: the primary, with the client's startup parameters verbatim
//          ──▶ AuthenticationOk, the server's ParameterStatus*, the proxy's BackendKeyData,
//              ReadyForQuery
//          ──▶ PgRelay: the data phase (batches routed to the session's server connections)
//
// A message the proxy composes at the end (an error, the drain notice) is written only when the
// relay stopped at a message boundary, never into the middle of a row.
#include "proxy/pg_session.h"

#include <spdlog/spdlog.h>

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "nerava/protocol/pg/messages.h"
#include "nerava/protocol/pg/startup.h"
#include "proxy/byte_buffer.h"
#include "proxy/client_registry.h"
#include "proxy/metrics.h"
#include "proxy/pg_backend.h"
#include "proxy/pg_client_auth.h"
#include "proxy/pg_handshake.h"
#include "proxy/pg_io.h"
#include "proxy/pg_relay.h"
#include "proxy/pg_server_pool.h"
#include "proxy/stream.h"

namespace nerava::proxy {
namespace {

using namespace asio::experimental::awaitable_operators;
using routing::Protocol;

constexpr auto kStartupTimeout = std::chrono::seconds(60);  // PostgreSQL's authentication_timeout

enum class SessionState {
  kStartup,      // negotiating TLS, reading the StartupMessage
  kAuthenticating,
  kConnecting,   // opening the server connection
  kIdle,         // ReadyForQuery 'I'
  kTransaction,  // 'T'
  kFailed,       // 'E': in a failed transaction block
  kClosing,
};

// For `show clients`: string literals, stored by pointer.
const char* StateName(SessionState state) {
  switch (state) {
    case SessionState::kStartup:
      return "startup";
    case SessionState::kAuthenticating:
      return "authenticating";
    case SessionState::kConnecting:
      return "connecting";
    case SessionState::kIdle:
      return "idle";
    case SessionState::kTransaction:
      return "transaction";
    case SessionState::kFailed:
      return "failed transaction";
    case SessionState::kClosing:
      break;
  }
  return "closing";
}


// The read-only listener's sessions are read-only on every server, the primary included, so a
// write is refused with 25006 wherever it lands: the server's own default, set at start-up
// through `options` like any client could (never a SET the client might see).
void MakeReadOnly(pg::StartupPacket& startup) {
  constexpr std::string_view kReadOnly = "-c default_transaction_read_only=on";
  for (auto& [name, value] : startup.parameters) {
    if (name == "options") {
      value = value.empty() ? std::string(kReadOnly) : value + " " + std::string(kReadOnly);
      return;
    }
  }
  startup.parameters.emplace_back("options", std::string(kReadOnly));
}

class PgSession : public std::enable_shared_from_this<PgSession> {
 public:
  PgSession(tcp::socket socket, std::shared_ptr<const PgContext> context)
      : context_(std::move(context)),
        record_(context_->clients, "postgres", ListenerName(*context_), PeerOf(socket)),
        client_gauge_(context_->metrics
                          ? &context_->metrics->ClientConnections(ListenerName(*context_))
                          : nullptr),
        client_(std::move(socket)) {
    record_.SetState(StateName(state_));
  }

  awaitable<void> Run();
  // Called on the session's executor when the proxy drains.
  void RequestShutdown();

 private:
  static const char* ListenerName(const PgContext& context) {
    return context.read_only ? "pg_ro" : "pg";  // as the server names the listeners
  }
  // The one state transition; the client registry's state is a lock-free pointer store.
  void SetState(SessionState state) {
    if (state == state_) return;
    state_ = state;
    record_.SetState(StateName(state));
  }
  void OnBatchDone(const PgServer& server, const char* route, char status,
                   std::chrono::steady_clock::duration took);
  void CountError(std::string_view kind) {
    if (context_->metrics) context_->metrics->Errors(Protocol::kPostgres, kind).Increment();
  }
  awaitable<bool> Start();
  awaitable<bool> ConnectServer();
  awaitable<void> SendError(std::string severity, std::string code, std::string message);
  std::optional<routing::NodeState> CurrentPrimary() const;

  std::shared_ptr<const PgContext> context_;
  // Declared before client_: initialised from the socket before it moves into client_.
  ClientRecord record_;
  GaugeHold client_gauge_;  // client_connections{listener}
  Stream client_;
  ByteBuffer client_in_;
  SessionState state_ = SessionState::kStartup;
  pg::StartupPacket startup_;
  const PgUserEntry* user_ = nullptr;
  std::unique_ptr<PgBackend> first_server_;  // handed to the relay
  std::unique_ptr<PgRelay> relay_;
  std::optional<pg::BackendKeyData> client_key_;
  bool shutdown_requested_ = false;

  // Metrics, looked up once per server. A batch runs from its first client message to the
  // ReadyForQuery that answers it.
  prometheus::Counter* queries_ = nullptr;
  const char* counted_route_ = nullptr;  // the labels queries_ was looked up with
  std::string counted_node_;
  prometheus::Histogram* query_duration_ = nullptr;
};

void PgSession::OnBatchDone(const PgServer& server, const char* route, char status,
                            std::chrono::steady_clock::duration took) {
  SetState(status == 'T'   ? SessionState::kTransaction
           : status == 'E' ? SessionState::kFailed
                           : SessionState::kIdle);
  if (Metrics* metrics = context_->metrics) {
    // Looked up when the (route, node) pair changes, not per batch.
    const std::string& node = server.backend->target.node_name;
    if (route != counted_route_ || node != counted_node_) {
      counted_route_ = route;
      counted_node_ = node;
      queries_ = &metrics->Queries(Protocol::kPostgres, route, node);
    }
  }
  if (queries_) queries_->Increment();
  if (query_duration_) query_duration_->Observe(std::chrono::duration<double>(took).count());
}

void PgSession::RequestShutdown() {
  shutdown_requested_ = true;
  if (relay_) {
    relay_->RequestShutdown();
  } else {
    client_.Cancel();
  }
}

awaitable<void> PgSession::SendError(std::string severity, std::string code,
                                     std::string message) {
  std::string out;
  pg::AppendErrorResponse(out, pg::Error{std::move(severity), std::move(code),
                                         std::move(message), "", ""});
  co_await WriteAll(client_, out);
}

std::optional<routing::NodeState> PgSession::CurrentPrimary() const {
  auto snapshot = context_->topology->Get();
  if (const auto* primary = snapshot->postgres.Primary()) return *primary;
  return std::nullopt;
}

awaitable<bool> PgSession::ConnectServer() {
  const std::string user(startup_.Get("user"));
  // While no primary is known (a failover in progress), wait for one instead of failing.
  auto executor = co_await asio::this_coro::executor;
  const auto give_up = std::chrono::steady_clock::now() + context_->failover_wait;
  std::optional<routing::NodeState> primary = CurrentPrimary();
  asio::steady_timer poll(executor);
  while (!primary && std::chrono::steady_clock::now() < give_up && !shutdown_requested_) {
    poll.expires_after(std::chrono::milliseconds(20));
    co_await poll.async_wait(kNoThrow);
    primary = CurrentPrimary();
  }
  if (!primary) {
    CountError(kErrorBackendConnect);
    co_await SendError("FATAL", "57P03",
                       "the database system is not accepting connections: no primary "
                       "PostgreSQL node is reachable");
    co_return false;
  }
  PgBackendTarget target{primary->name, primary->host, primary->port, primary->role,
                         primary->times_marked_down};
  const std::string password = user_ ? user_->backend_password : std::string();
  PgBackendResult result =
      co_await OpenPgServer(*context_, target, startup_.parameters, user, password);
  if (!result.backend) {
    CountError(kErrorBackendConnect);
    spdlog::warn("pg: cannot open server connection to {} for user {}", target.node_name, user);
    co_await WriteAll(client_, result.client_error);
    co_return false;
  }
  first_server_ = std::move(result.backend);
  record_.SetNode(target.node_name);
  if (Metrics* metrics = context_->metrics) {
    query_duration_ = &metrics->QueryDuration(Protocol::kPostgres);
  }
  client_key_ = context_->cancels->Register();
  context_->cancels->SetTarget(*client_key_,
                               CancelTarget{target.host, target.port, first_server_->key});

  std::string greeting;
  pg::AppendAuthenticationOk(greeting);
  greeting += first_server_->startup_replay;
  pg::AppendBackendKeyData(greeting, *client_key_);
  pg::AppendReadyForQuery(greeting, first_server_->transaction_status);
  co_return co_await WriteAll(client_, greeting);
}

awaitable<bool> PgSession::Start() {
  auto startup = co_await RunPgHandshake(client_, client_in_, *context_);
  if (!startup) co_return false;
  startup_ = std::move(*startup);
  if (context_->read_only) MakeReadOnly(startup_);
  SetState(SessionState::kAuthenticating);
  const std::string user_name(startup_.Get("user"));
  auto user = co_await AuthenticateClient(client_, client_in_, user_name, *context_);
  if (!user.ok()) {
    if (user.status().code() == absl::StatusCode::kPermissionDenied) CountError(kErrorAuth);
    if (user.status().code() == absl::StatusCode::kInvalidArgument) CountError(kErrorProtocol);
    spdlog::info("pg: authentication failed for user {}: {}", user_name,
                 std::string(user.status().message()));
    co_return false;
  }
  user_ = *user;
  const std::string_view database = startup_.Get("database");
  record_.SetLogin(user_name, std::string(database.empty() ? user_name : database));
  SetState(SessionState::kConnecting);
  co_return co_await ConnectServer();
}

awaitable<void> PgSession::Run() {
  auto executor = co_await asio::this_coro::executor;
  std::weak_ptr<PgSession> weak = weak_from_this();
  SessionHooks hooks;
  hooks.protocol = Protocol::kPostgres;
  hooks.shutdown = [weak, executor] {
    asio::post(executor, [weak] {
      if (auto self = weak.lock()) self->RequestShutdown();
    });
  };
  hooks.node_down = [weak, executor](const std::string& node) {
    asio::post(executor, [weak, node] {
      if (auto self = weak.lock(); self && self->relay_) self->relay_->OnNodeDown(node);
    });
  };
  SessionRegistration registration(*context_->sessions, std::move(hooks));

  asio::steady_timer deadline(executor, kStartupTimeout);
  auto started = co_await (Start() || deadline.async_wait(kNoThrow));
  if (started.index() == 1) {
    co_await SendError("FATAL", "08P01", "canceling authentication due to timeout");
  }
  if (started.index() == 0 && std::get<0>(started)) {
    SetState(SessionState::kIdle);
    PgBatchObserver observer;
    observer.on_batch_done = [this](const PgServer& server, const char* route, char status,
                                    std::chrono::steady_clock::duration took) {
      OnBatchDone(server, route, status, took);
    };
    observer.on_routed = [this](routing::RouteReason reason) {
      record_.SetRoute(routing::RouteReasonName(reason));
    };
    observer.on_active_server = [this](const PgBackend& server) {
      context_->cancels->SetTarget(
          *client_key_, CancelTarget{server.target.host, server.target.port, server.key});
    };
    PgRelay::Login login{startup_.parameters, std::string(startup_.Get("user")),
                         user_ ? user_->backend_password : std::string()};
    relay_ = std::make_unique<PgRelay>(*context_, client_, client_in_, std::move(first_server_),
                                       std::move(login), std::move(observer));
    co_await relay_->Run();
    SetState(SessionState::kClosing);
    if (relay_->client_stream_clean()) {
      if (const auto& error = relay_->closing_error()) {
        CountError(error->code == "08P01" ? kErrorProtocol : kErrorBackendLost);
        std::string out;
        pg::AppendErrorResponse(out, *error);
        co_await WriteAll(client_, out);
      } else if (shutdown_requested_) {
        co_await SendError("FATAL", "57P01",
                           "terminating connection due to administrator command");
      }
    }
    // A client that said goodbye leaves its idle server connections to the next session (the
    // relay hands none over after a shutdown request).
    for (auto& server : relay_->TakeReusableServers()) {
      ParkServer(*context_, std::move(server), startup_.parameters,
                 std::string(startup_.Get("user")));
    }
    relay_->CloseServers();
  }
  if (client_key_) context_->cancels->Unregister(*client_key_);
  client_.Close();
}

}  // namespace

awaitable<void> RunPgSession(tcp::socket socket, std::shared_ptr<const PgContext> context) {
  auto session = std::make_shared<PgSession>(std::move(socket), std::move(context));
  co_await session->Run();
}

}  // namespace nerava::proxy
