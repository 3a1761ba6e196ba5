// A PostgreSQL client session.
//
//   client ──▶ [SSLRequest/GSSENCRequest ─▶ 'S'+TLS | 'N'] ──▶ StartupMessage ──▶ proxy auth
//          ──▶ server connection (client's startup parameters, verbatim) ──▶ AuthenticationOk,
//              server's ParameterStatus*, proxy's BackendKeyData, ReadyForQuery ──▶ data phase
//
//   data phase, two directions joined so that the end of one cancels the other:
//     client ─read─▶ client_in_ ─frame─▶ whole messages + CopyData parts ─write─▶ server
//     server ─read─▶ server_in_ ─frame─▶ whole messages + DataRow/CopyData parts ─write─▶ client
//                                          └─ ReadyForQuery: transaction status
// Only the server-to-client loop writes to the client during the data phase, so a message the
// proxy composes (an error, the drain notice) is written after that loop stopped at a message
// boundary, never into the middle of a row.
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
#include "proxy/pg_io.h"
#include "proxy/stream.h"

namespace nerava::proxy {
namespace {

using namespace asio::experimental::awaitable_operators;
using routing::Protocol;

constexpr auto kStartupTimeout = std::chrono::seconds(60);  // PostgreSQL's authentication_timeout
constexpr size_t kReadChunk = 64 * 1024;

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

std::string PeerOf(const tcp::socket& socket) {
  error_code ec;
  const tcp::endpoint peer = socket.remote_endpoint(ec);
  if (ec) return "?";
  const std::string address = peer.address().to_string();
  return (peer.address().is_v6() ? "[" + address + "]" : address) + ":" +
         std::to_string(peer.port());
}

class PgSession : public std::enable_shared_from_this<PgSession> {
 public:
  PgSession(tcp::socket socket, std::shared_ptr<const PgContext> context)
      : context_(std::move(context)),
        record_(context_->clients, "postgres", ListenerName(*context_), PeerOf(socket)),
        client_gauge_(context_->metrics
                          ? &context_->metrics->ClientConnections(ListenerName(*context_))
                          : nullptr),
        client_(std::move(socket)),
        client_framer_(pg::Direction::kFrontend, context_->limits),
        server_framer_(pg::Direction::kBackend, context_->limits) {
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
  void EndQueryCycle() {
    const auto elapsed = std::chrono::steady_clock::now() - *cycle_start_;
    cycle_start_.reset();
    if (queries_) queries_->Increment();
    if (query_duration_) query_duration_->Observe(std::chrono::duration<double>(elapsed).count());
  }
  void CountError(std::string_view kind) {
    if (context_->metrics) context_->metrics->Errors(Protocol::kPostgres, kind).Increment();
  }
  awaitable<bool> Start();
  awaitable<bool> Handshake();
  awaitable<void> ForwardCancel(const pg::BackendKeyData& key);
  awaitable<bool> ConnectServer();
  awaitable<void> ClientToServer();
  awaitable<void> ServerToClient();
  awaitable<void> SendError(std::string severity, std::string code, std::string message);
  std::optional<routing::NodeState> CurrentPrimary() const;

  std::shared_ptr<const PgContext> context_;
  // Declared before client_: initialised from the socket before it moves into client_.
  ClientRecord record_;
  GaugeHold client_gauge_;  // client_connections{listener}
  Stream client_;
  ByteBuffer client_in_;
  pg::Framer client_framer_;
  pg::Framer server_framer_;
  SessionState state_ = SessionState::kStartup;
  pg::StartupPacket startup_;
  const PgUserEntry* user_ = nullptr;
  std::unique_ptr<PgBackend> server_;
  std::optional<pg::BackendKeyData> client_key_;

  bool shutdown_requested_ = false;
  bool client_stream_clean_ = true;  // the client has no partial message from us
  bool server_sent_fatal_ = false;   // the server explained its own close
  std::optional<pg::Error> pending_client_error_;

  // Metrics, looked up once the server is chosen. A query cycle runs from the first client
  // message after a ReadyForQuery to the next ReadyForQuery.
  GaugeHold backend_gauge_;  // backend_connections{protocol,node}
  prometheus::Counter* queries_ = nullptr;
  prometheus::Histogram* query_duration_ = nullptr;
  std::optional<std::chrono::steady_clock::time_point> cycle_start_;
};

void PgSession::RequestShutdown() {
  shutdown_requested_ = true;
  if (server_) {
    server_->stream.Cancel();
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

awaitable<void> PgSession::ForwardCancel(const pg::BackendKeyData& key) {
  auto target = context_->cancels->Find(key);
  if (!target) co_return;  // PostgreSQL, too, ignores a cancel with an unknown key silently
  auto executor = co_await asio::this_coro::executor;
  tcp::resolver resolver(executor);
  auto [resolve_error, endpoints] =
      co_await resolver.async_resolve(target->host, std::to_string(target->port), kNoThrow);
  if (resolve_error) co_return;
  tcp::socket socket(executor);
  auto [connect_error, endpoint] = co_await asio::async_connect(socket, endpoints, kNoThrow);
  if (connect_error) co_return;
  std::string request;
  pg::AppendCancelRequest(request, target->key);
  co_await asio::async_write(socket, asio::buffer(request), kNoThrow);
  // The server closes the connection once it has acted on the request.
  char byte;
  co_await socket.async_read_some(asio::buffer(&byte, 1), kNoThrow);
}

awaitable<bool> PgSession::Handshake() {
  bool ssl_negotiated = false;
  bool gss_negotiated = false;
  for (;;) {
    auto parsed = pg::ParseStartupPacket(client_in_.data(), context_->limits);
    if (!parsed.ok()) {
      CountError(kErrorProtocol);
      // Built outside the co_await: GCC 12 destroys temporaries of a conditional expression
      // inside a co_await expression twice.
      std::string message = parsed.status().code() == absl::StatusCode::kResourceExhausted
                                ? "invalid length of startup packet"
                                : std::string(parsed.status().message());
      co_await SendError("FATAL", "08P01", std::move(message));
      co_return false;
    }
    if (!parsed->has_value()) {
      auto [ec, n] = co_await client_.ReadSome(client_in_.Prepare(1024));
      if (ec) co_return false;
      client_in_.Commit(n);
      continue;
    }
    pg::StartupPacket packet = std::move((*parsed)->packet);
    client_in_.Consume((*parsed)->consumed);
    using Kind = pg::StartupPacket::Kind;
    switch (packet.kind) {
      case Kind::kCancelRequest:
        co_await ForwardCancel(packet.cancel_key);
        co_return false;
      case Kind::kGssEncRequest:
        if (gss_negotiated || client_.is_tls()) {
          co_await SendError("FATAL", "08P01", "duplicate GSSENCRequest");
          co_return false;
        }
        gss_negotiated = true;
        if (!co_await WriteAll(client_, "N")) co_return false;
        continue;
      case Kind::kSslRequest: {
        if (ssl_negotiated) {
          co_await SendError("FATAL", "08P01", "duplicate SSLRequest");
          co_return false;
        }
        ssl_negotiated = true;
        // Bytes after the SSLRequest would be read as if they came over TLS: a man in the middle
        // could inject them (CVE-2021-23214). Refuse, as PostgreSQL does.
        if (!client_in_.empty()) {
          co_await SendError("FATAL", "08P01", "received unencrypted data after SSL request");
          co_return false;
        }
        const bool tls = context_->server_tls != nullptr;
        if (!co_await WriteAll(client_, tls ? "S" : "N")) co_return false;
        if (tls) {
          if (auto ec = co_await client_.AcceptTls(*context_->server_tls)) {
            spdlog::debug("pg: TLS handshake with client failed: {}", ec.message());
            co_return false;
          }
        }
        continue;
      }
      case Kind::kStartup:
        break;
    }
    if (packet.major != 3) {
      co_await SendError("FATAL", "0A000",
                         "unsupported frontend protocol " + std::to_string(packet.major) + "." +
                             std::to_string(packet.minor) + ": server supports 3.0 to 3.0");
      co_return false;
    }
    // Protocol extensions the proxy does not know are declined, as a 3.0 server declines them;
    // they are not passed to the server, which then sees a plain 3.0 start-up.
    std::vector<std::string> unrecognized;
    std::erase_if(packet.parameters, [&](const auto& parameter) {
      if (!parameter.first.starts_with("_pq_.")) return false;
      unrecognized.push_back(parameter.first);
      return true;
    });
    if (packet.minor > 0 || !unrecognized.empty()) {
      std::string out;
      pg::AppendNegotiateProtocolVersion(out, 0, unrecognized);
      if (!co_await WriteAll(client_, out)) co_return false;
    }
    startup_ = std::move(packet);
    co_return true;
  }
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
  PgBackendTarget target{primary->name, primary->host, primary->port};
  PgBackendOptions options{context_->settings.backend_tls, context_->backend_tls,
                           context_->settings.connect_timeout, context_->limits};
  const std::string password = user_ ? user_->backend_password : std::string();
  PgBackendResult result =
      co_await ConnectPgBackend(target, options, startup_.parameters, user, password);
  if (!result.backend) {
    CountError(kErrorBackendConnect);
    spdlog::warn("pg: cannot open server connection to {} for user {}", target.node_name, user);
    co_await WriteAll(client_, result.client_error);
    co_return false;
  }
  server_ = std::move(result.backend);
  record_.SetNode(target.node_name);
  if (Metrics* metrics = context_->metrics) {
    backend_gauge_ = GaugeHold(&metrics->BackendConnections(Protocol::kPostgres, target.node_name));
    queries_ = &metrics->Queries(Protocol::kPostgres, "primary", target.node_name);
    query_duration_ = &metrics->QueryDuration(Protocol::kPostgres);
  }
  client_key_ = context_->cancels->Register();
  context_->cancels->SetTarget(*client_key_,
                               CancelTarget{target.host, target.port, server_->key});

  std::string greeting;
  pg::AppendAuthenticationOk(greeting);
  greeting += server_->startup_replay;
  pg::AppendBackendKeyData(greeting, *client_key_);
  pg::AppendReadyForQuery(greeting, server_->transaction_status);
  co_return co_await WriteAll(client_, greeting);
}

awaitable<void> PgSession::ClientToServer() {
  for (;;) {
    size_t ready = 0;
    bool terminate = false;
    while (!terminate) {
      auto piece = client_framer_.Next(client_in_.data().substr(ready));
      if (!piece.ok()) {
        CountError(kErrorProtocol);
        pending_client_error_ = pg::Error{"FATAL", "08P01",
                                          "invalid message from client: " +
                                              std::string(piece.status().message()),
                                          "", ""};
        break;
      }
      if (piece->kind == pg::Piece::Kind::kNeedMore) break;
      terminate = piece->kind == pg::Piece::Kind::kMessage && piece->type == pg::msg::kTerminate;
      ready += piece->size;
    }
    if (ready > 0) {
      if (!cycle_start_) cycle_start_ = std::chrono::steady_clock::now();
      auto [ec, n] = co_await server_->stream.Write(asio::buffer(client_in_.data().data(), ready));
      if (ec) co_return;
      client_in_.Consume(ready);
    }
    if (terminate || pending_client_error_) co_return;
    size_t wanted = kReadChunk;
    if (!client_framer_.in_message()) {
      // A message that must be whole before it is forwarded may be larger than one chunk.
      auto header = pg::PeekHeader(client_in_.data(), context_->limits.max_message);
      if (header.ok() && header->has_value()) {
        wanted = std::max(wanted, (*header)->total_size() - client_in_.size());
      }
    }
    auto [ec, n] = co_await client_.ReadSome(client_in_.Prepare(wanted));
    if (ec) co_return;
    client_in_.Commit(n);
    if (client_in_.empty()) client_in_.ShrinkTo(kReadChunk * 4);
  }
}

awaitable<void> PgSession::ServerToClient() {
  ByteBuffer& in = server_->buffer;
  for (;;) {
    size_t ready = 0;
    for (;;) {
      auto piece = server_framer_.Next(in.data().substr(ready));
      if (!piece.ok()) {
        CountError(kErrorProtocol);
        spdlog::warn("pg: server {} sent an unframeable stream: {}", server_->target.node_name,
                     std::string(piece.status().message()));
        pending_client_error_ = pg::Error{"FATAL", "08P01",
                                          "protocol error from the server", "", ""};
        break;
      }
      if (piece->kind == pg::Piece::Kind::kNeedMore) break;
      if (piece->kind == pg::Piece::Kind::kMessage) {
        const std::string_view body = in.data().substr(ready + 5, piece->size - 5);
        if (piece->type == pg::msg::kReadyForQuery) {
          if (cycle_start_) EndQueryCycle();
          if (auto status = pg::ParseReadyForQuery(body); status.ok()) {
            server_->transaction_status = *status;
            SetState(*status == 'T'   ? SessionState::kTransaction
                     : *status == 'E' ? SessionState::kFailed
                                      : SessionState::kIdle);
          }
        } else if (piece->type == pg::msg::kErrorResponse) {
          auto fields = pg::ParseErrorFields(body);
          server_sent_fatal_ = fields.ok() && (fields->severity == "FATAL" ||
                                               fields->severity == "PANIC");
        }
      }
      ready += piece->size;
    }
    if (ready > 0) {
      client_stream_clean_ = false;
      auto [ec, n] = co_await client_.Write(asio::buffer(in.data().data(), ready));
      if (ec) co_return;
      in.Consume(ready);
      client_stream_clean_ = !server_framer_.in_message();
    }
    if (pending_client_error_ || shutdown_requested_) co_return;
    size_t wanted = kReadChunk;
    if (!server_framer_.in_message()) {
      auto header = pg::PeekHeader(in.data(), context_->limits.max_message);
      if (header.ok() && header->has_value()) {
        wanted = std::max(wanted, (*header)->total_size() - in.size());
      }
    }
    auto [ec, n] = co_await server_->stream.ReadSome(in.Prepare(wanted));
    if (ec) {
      // Cancelled: the other direction ended first and has said why, or a drain is under way.
      if (ec != asio::error::operation_aborted && !shutdown_requested_ && !server_sent_fatal_ &&
          !pending_client_error_) {
        CountError(kErrorBackendLost);
        pending_client_error_ = pg::Error{
            "FATAL", "08006",
            "server connection to PostgreSQL node \"" + server_->target.node_name +
                "\" was lost",
            "", ""};
      }
      co_return;
    }
    in.Commit(n);
    if (in.empty()) in.ShrinkTo(kReadChunk * 4);
  }
}

awaitable<bool> PgSession::Start() {
  if (!co_await Handshake()) co_return false;
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
  SessionRegistration registration(*context_->sessions, [weak, executor] {
    asio::post(executor, [weak] {
      if (auto self = weak.lock()) self->RequestShutdown();
    });
  });

  asio::steady_timer deadline(executor, kStartupTimeout);
  auto started = co_await (Start() || deadline.async_wait(kNoThrow));
  if (started.index() == 1) {
    co_await SendError("FATAL", "08P01", "canceling authentication due to timeout");
  }
  if (started.index() == 0 && std::get<0>(started)) {
    SetState(SessionState::kIdle);
    co_await (ClientToServer() || ServerToClient());
    SetState(SessionState::kClosing);
    if (client_stream_clean_) {
      if (pending_client_error_) {
        std::string out;
        pg::AppendErrorResponse(out, *pending_client_error_);
        co_await WriteAll(client_, out);
      } else if (shutdown_requested_) {
        co_await SendError("FATAL", "57P01",
                           "terminating connection due to administrator command");
      }
    }
  }
  if (client_key_) context_->cancels->Unregister(*client_key_);
  if (server_) server_->stream.Close();
  client_.Close();
}

}  // namespace

awaitable<void> RunPgSession(tcp::socket socket, std::shared_ptr<const PgContext> context) {
  auto session = std::make_shared<PgSession>(std::move(socket), std::move(context));
  co_await session->Run();
}

}  // namespace nerava::proxy
