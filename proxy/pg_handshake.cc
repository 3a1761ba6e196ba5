#include "proxy/pg_handshake.h"

#include <spdlog/spdlog.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nerava/protocol/pg/messages.h"
#include "proxy/pg_cancel.h"
#include "proxy/pg_io.h"

namespace nerava::proxy {
namespace {

awaitable<void> SendFatal(Stream& client, std::string code, std::string message) {
  std::string out;
  pg::AppendErrorResponse(out, pg::Error{"FATAL", std::move(code), std::move(message), "", ""});
  co_await WriteAll(client, out);
}

// A CancelRequest arrives on its own connection; the proxy passes it on with the server's key.
awaitable<void> ForwardCancel(const PgContext& context, const pg::BackendKeyData& key) {
  auto target = context.cancels->Find(key);
  if (!target) co_return;  // PostgreSQL, too, ignores a cancel with an unknown key silently
  co_await SendCancelRequest(target->host, target->port, target->key,
                             context.settings.connect_timeout);
}

// `refusal` is owned by the caller's frame, which awaits this one.
awaitable<void> DeclineNegotiationThenRefuse(tcp::socket& socket, const std::string& refusal) {
  ByteBuffer in(256);
  const pg::Limits limits;
  for (int packets = 0; packets < 3; ++packets) {
    std::optional<pg::StartupPacket> packet;
    while (!packet) {
      auto parsed = pg::ParseStartupPacket(in.data(), limits);
      if (!parsed.ok()) break;
      if (parsed->has_value()) {
        packet = std::move((*parsed)->packet);
        in.Consume((*parsed)->consumed);
        break;
      }
      auto [ec, n] = co_await socket.async_read_some(in.Prepare(256), kNoThrow);
      if (ec) co_return;
      in.Commit(n);
    }
    if (!packet) break;
    const auto kind = packet->kind;
    if (kind == pg::StartupPacket::Kind::kCancelRequest) co_return;
    if (kind != pg::StartupPacket::Kind::kSslRequest &&
        kind != pg::StartupPacket::Kind::kGssEncRequest) {
      break;
    }
    co_await asio::async_write(socket, asio::buffer("N", 1), kNoThrow);
  }
  co_await asio::async_write(socket, asio::buffer(refusal), kNoThrow);
}

}  // namespace

awaitable<void> RefusePgConnection(tcp::socket& socket, std::string code, std::string message) {
  using namespace asio::experimental::awaitable_operators;
  // Built here, not passed in: GCC 12 mishandles aggregate temporaries in coroutine calls.
  std::string refusal;
  pg::AppendErrorResponse(refusal, pg::Error{"FATAL", std::move(code), std::move(message), "", ""});
  asio::steady_timer deadline(socket.get_executor(), std::chrono::seconds(5));
  co_await (DeclineNegotiationThenRefuse(socket, refusal) || deadline.async_wait(kNoThrow));
}

awaitable<std::optional<pg::StartupPacket>> RunPgHandshake(Stream& client, ByteBuffer& in,
                                                           const PgContext& context) {
  bool ssl_negotiated = false;
  bool gss_negotiated = false;
  for (;;) {
    auto parsed = pg::ParseStartupPacket(in.data(), context.limits);
    if (!parsed.ok()) {
      // Built outside the co_await: GCC 12 destroys temporaries of a conditional expression
      // inside a co_await expression twice.
      std::string message = parsed.status().code() == absl::StatusCode::kResourceExhausted
                                ? "invalid length of startup packet"
                                : std::string(parsed.status().message());
      co_await SendFatal(client, "08P01", std::move(message));
      co_return std::nullopt;
    }
    if (!parsed->has_value()) {
      auto [ec, n] = co_await client.ReadSome(in.Prepare(1024));
      if (ec) co_return std::nullopt;
      in.Commit(n);
      continue;
    }
    pg::StartupPacket packet = std::move((*parsed)->packet);
    in.Consume((*parsed)->consumed);
    using Kind = pg::StartupPacket::Kind;
    switch (packet.kind) {
      case Kind::kCancelRequest:
        co_await ForwardCancel(context, packet.cancel_key);
        co_return std::nullopt;
      case Kind::kGssEncRequest:
        if (gss_negotiated || client.is_tls()) {
          co_await SendFatal(client, "08P01", "duplicate GSSENCRequest");
          co_return std::nullopt;
        }
        gss_negotiated = true;
        if (!co_await WriteAll(client, "N")) co_return std::nullopt;
        continue;
      case Kind::kSslRequest: {
        if (ssl_negotiated) {
          co_await SendFatal(client, "08P01", "duplicate SSLRequest");
          co_return std::nullopt;
        }
        ssl_negotiated = true;
        // Bytes after the SSLRequest would be read as if they came over TLS: a man in the middle
        // could inject them (CVE-2021-23214). Refuse, as PostgreSQL does.
        if (!in.empty()) {
          co_await SendFatal(client, "08P01", "received unencrypted data after SSL request");
          co_return std::nullopt;
        }
        if (!context.server_tls) {
          if (!co_await WriteAll(client, "N")) co_return std::nullopt;
          continue;
        }
        if (!co_await WriteAll(client, "S")) co_return std::nullopt;
        if (auto ec = co_await client.AcceptTls(*context.server_tls)) {
          spdlog::debug("pg: TLS handshake with client failed: {}", ec.message());
          co_return std::nullopt;
        }
        continue;
      }
      case Kind::kStartup:
        break;
    }
    if (packet.major != 3) {
      co_await SendFatal(client, "0A000",
                         "unsupported frontend protocol " + std::to_string(packet.major) + "." +
                             std::to_string(packet.minor) + ": server supports 3.0 to 3.0");
      co_return std::nullopt;
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
      if (!co_await WriteAll(client, out)) co_return std::nullopt;
    }
    co_return packet;
  }
}

}  // namespace nerava::proxy
