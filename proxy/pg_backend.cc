#include "proxy/pg_backend.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>

#include "nerava/protocol/pg/auth.h"
#include "proxy/pg_io.h"

namespace nerava::proxy {
namespace {

using namespace asio::experimental::awaitable_operators;

std::string ErrorBytes(std::string code, std::string message) {
  std::string out;
  pg::AppendErrorResponse(out, pg::Error{"FATAL", std::move(code), std::move(message), "", ""});
  return out;
}

PgBackendResult Fail(const PgBackendTarget& target, std::string message) {
  return {nullptr, ErrorBytes("08006", "could not connect to PostgreSQL node \"" +
                                           target.node_name + "\": " + message)};
}

// Answers the server's authentication requests until AuthenticationOk; returns an error result
// when it fails.
awaitable<std::optional<PgBackendResult>> Authenticate(PgBackend& backend,
                                                       const PgBackendOptions& options,
                                                       const std::string& user,
                                                       const std::string& password) {
  std::optional<pg::ScramClient> scram;
  for (;;) {
    auto header = co_await ReadPgMessage(backend.stream, backend.buffer, options.limits.max_message);
    if (!header.ok()) co_return Fail(backend.target, std::string(header.status().message()));
    const std::string_view body = MessageBody(backend.buffer, *header);
    if (header->type == pg::msg::kErrorResponse) {
      // The server's own words (bad password, no such database ...) go to the client verbatim.
      PgBackendResult result{nullptr, std::string(backend.buffer.data().substr(
                                          0, header->total_size()))};
      co_return result;
    }
    if (header->type != pg::msg::kAuthentication) {
      co_return Fail(backend.target, "unexpected message during authentication");
    }
    auto request = pg::ParseAuthRequest(body);
    if (!request.ok()) co_return Fail(backend.target, std::string(request.status().message()));
    std::string reply;
    switch (static_cast<pg::AuthCode>(request->code)) {
      case pg::AuthCode::kOk:
        backend.buffer.Consume(header->total_size());
        co_return std::nullopt;
      case pg::AuthCode::kCleartextPassword:
        pg::AppendPasswordMessage(reply, password);
        break;
      case pg::AuthCode::kMd5Password:
        if (request->data.size() != 4) co_return Fail(backend.target, "malformed MD5 request");
        pg::AppendPasswordMessage(reply, pg::Md5PasswordResponse(user, password, request->data));
        break;
      case pg::AuthCode::kSasl: {
        auto mechanisms = pg::ParseSaslMechanisms(request->data);
        if (!mechanisms.ok() ||
            std::find(mechanisms->begin(), mechanisms->end(), pg::kScramSha256) ==
                mechanisms->end()) {
          co_return Fail(backend.target, "server offers no SASL mechanism the proxy supports");
        }
        scram.emplace(password);
        pg::AppendSaslInitialResponse(reply, pg::kScramSha256, scram->ClientFirstMessage());
        break;
      }
      case pg::AuthCode::kSaslContinue: {
        if (!scram) co_return Fail(backend.target, "SASL continue without a SASL exchange");
        auto final_message = scram->HandleServerFirst(request->data);
        if (!final_message.ok()) {
          co_return Fail(backend.target, std::string(final_message.status().message()));
        }
        pg::AppendSaslResponse(reply, *final_message);
        break;
      }
      case pg::AuthCode::kSaslFinal: {
        if (!scram) co_return Fail(backend.target, "SASL final without a SASL exchange");
        if (auto status = scram->HandleServerFinal(request->data); !status.ok()) {
          co_return Fail(backend.target, "server signature is wrong: " +
                                             std::string(status.message()));
        }
        break;
      }
      default:
        co_return Fail(backend.target, "server asks for an unsupported authentication method (" +
                                           std::to_string(request->code) + ")");
    }
    backend.buffer.Consume(header->total_size());
    if (!reply.empty() && !co_await WriteAll(backend.stream, reply)) {
      co_return Fail(backend.target, "connection closed during authentication");
    }
  }
}

// After AuthenticationOk: collect what the client must see, up to the first ReadyForQuery.
awaitable<std::optional<PgBackendResult>> ReadUntilReady(PgBackend& backend,
                                                         const PgBackendOptions& options) {
  for (;;) {
    auto header = co_await ReadPgMessage(backend.stream, backend.buffer, options.limits.max_message);
    if (!header.ok()) co_return Fail(backend.target, std::string(header.status().message()));
    const std::string_view whole = backend.buffer.data().substr(0, header->total_size());
    const std::string_view body = MessageBody(backend.buffer, *header);
    switch (header->type) {
      case pg::msg::kParameterStatus:
      case pg::msg::kNoticeResponse:
        backend.startup_replay.append(whole);
        break;
      case pg::msg::kBackendKeyData: {
        auto key = pg::ParseBackendKeyData(body);
        if (!key.ok()) co_return Fail(backend.target, "malformed BackendKeyData");
        backend.key = *key;
        break;
      }
      case pg::msg::kErrorResponse: {
        PgBackendResult result{nullptr, std::string(whole)};
        co_return result;
      }
      case pg::msg::kReadyForQuery: {
        auto status = pg::ParseReadyForQuery(body);
        if (!status.ok()) co_return Fail(backend.target, "malformed ReadyForQuery");
        backend.transaction_status = *status;
        backend.buffer.Consume(header->total_size());
        co_return std::nullopt;
      }
      default:
        break;  // NegotiateProtocolVersion and the like carry nothing the client needs here
    }
    backend.buffer.Consume(header->total_size());
  }
}

awaitable<PgBackendResult> Connect(const PgBackendTarget& target, const PgBackendOptions& options,
                                   const StartupParameters& parameters, const std::string& user,
                                   const std::string& password) {
  absl::StatusOr<tcp::socket> socket =
      co_await ConnectTcp(target.host, target.port, options.keepalive);
  if (!socket.ok()) co_return Fail(target, std::string(socket.status().message()));

  auto backend = std::make_unique<PgBackend>(std::move(*socket));
  backend->target = target;
  if (options.tls.mode != config::SslMode::kDisable && options.tls_context) {
    std::string request;
    pg::AppendSslRequest(request);
    if (!co_await WriteAll(backend->stream, request)) co_return Fail(target, "connection closed");
    char answer = 0;
    auto [ec, n] = co_await backend->stream.ReadSome(asio::buffer(&answer, 1));
    if (ec) co_return Fail(target, "connection closed during SSL negotiation");
    if (answer == 'S') {
      const bool verify = options.tls.mode == config::SslMode::kVerifyFull;
      if (auto tls_error = co_await backend->stream.ConnectTls(*options.tls_context, target.host,
                                                               verify)) {
        co_return Fail(target, "TLS handshake failed: " + tls_error.message());
      }
    } else if (answer != 'N' || options.tls.mode != config::SslMode::kPrefer) {
      co_return Fail(target, "server does not support TLS, which sslmode requires");
    }
  }

  std::string startup;
  pg::AppendStartupMessage(startup, parameters);
  if (!co_await WriteAll(backend->stream, startup)) co_return Fail(target, "connection closed");
  if (auto failure = co_await Authenticate(*backend, options, user, password)) {
    co_return std::move(*failure);
  }
  if (auto failure = co_await ReadUntilReady(*backend, options)) co_return std::move(*failure);
  co_return PgBackendResult{std::move(backend), {}};
}

}  // namespace

awaitable<PgBackendResult> ConnectPgBackend(const PgBackendTarget& target,
                                            const PgBackendOptions& options,
                                            const StartupParameters& parameters,
                                            const std::string& user,
                                            const std::string& password) {
  asio::steady_timer deadline(co_await asio::this_coro::executor, options.connect_timeout);
  auto outcome = co_await (Connect(target, options, parameters, user, password) ||
                           deadline.async_wait(kNoThrow));
  if (outcome.index() == 1) co_return Fail(target, "timed out");
  PgBackendResult result = std::move(std::get<0>(outcome));
  if (result.backend && options.metrics) {
    result.backend->open_gauge = GaugeHold(
        &options.metrics->BackendConnections(routing::Protocol::kPostgres, target.node_name));
  }
  co_return result;
}

}  // namespace nerava::proxy
