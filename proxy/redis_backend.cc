#include "proxy/redis_backend.h"

#include "nerava/protocol/redis/encoder.h"

namespace nerava::proxy {
namespace {

using namespace asio::experimental::awaitable_operators;

RedisBackendResult Fail(const RedisBackendTarget& target, const std::string& why,
                        bool unreachable = false) {
  return {nullptr, "TRYAGAIN could not connect to Redis node \"" + target.node_name + "\": " + why,
          unreachable};
}

// Reads the replies to the replayed commands; the first error reply fails the connect.
awaitable<std::string> ReadReplayReplies(RedisBackend& backend, size_t count) {
  while (count > 0) {
    if (backend.in.size() > backend.value_bytes) {
      auto progress = backend.decoder.Feed(backend.in.data().substr(backend.value_bytes));
      if (!progress.ok()) co_return "ERR protocol error from the server";
      backend.value_bytes += progress->consumed;
      if (!progress->complete) continue;
      const redis::Type type = progress->type;
      const std::string text = backend.decoder.scalar();
      backend.in.Consume(backend.value_bytes);
      backend.value_bytes = 0;
      if (type == redis::Type::kPush) continue;  // not a reply
      if (type == redis::Type::kError || type == redis::Type::kBlobError) {
        // Not a conditional expression in co_return: GCC 12 may destroy its temporary twice.
        std::string error = "ERR replay refused";
        if (type == redis::Type::kError && !text.empty()) error = text;
        co_return error;
      }
      --count;
      continue;
    }
    auto [ec, n] = co_await backend.stream.ReadSome(backend.in.Prepare(4096));
    if (ec) co_return "ERR connection closed during login: " + ec.message();
    backend.in.Commit(n);
  }
  co_return std::string();
}

awaitable<RedisBackendResult> Connect(const RedisBackendTarget& target,
                                      const RedisBackendOptions& options,
                                      const std::vector<RedisCommand>& replay) {
  absl::StatusOr<tcp::socket> socket =
      co_await ConnectTcp(target.host, target.port, options.keepalive);
  if (!socket.ok()) {
    co_return Fail(target, std::string(socket.status().message()), /*unreachable=*/true);
  }

  auto backend = std::make_shared<RedisBackend>(std::move(*socket), options.limits);
  backend->node_name = target.node_name;
  if (options.tls_context) {
    if (auto ec = co_await backend->stream.ConnectTls(*options.tls_context, target.host,
                                                      /*verify=*/true)) {
      co_return Fail(target, "TLS handshake failed: " + ec.message());
    }
  }
  if (!replay.empty()) {
    std::string out;
    for (const RedisCommand& command : replay) redis::AppendCommand(out, command);
    auto [ec, n] = co_await backend->stream.Write(asio::buffer(out));
    if (ec) co_return Fail(target, "connection closed during login");
    std::string error = co_await ReadReplayReplies(*backend, replay.size());
    if (!error.empty()) co_return RedisBackendResult{nullptr, std::move(error), false};
  }
  co_return RedisBackendResult{std::move(backend), {}, false};
}

}  // namespace

awaitable<RedisBackendResult> ConnectRedisBackend(const RedisBackendTarget& target,
                                                  const RedisBackendOptions& options,
                                                  const std::vector<RedisCommand>& replay) {
  asio::steady_timer deadline(co_await asio::this_coro::executor, options.connect_timeout);
  auto outcome = co_await (Connect(target, options, replay) || deadline.async_wait(kNoThrow));
  if (outcome.index() == 1) co_return Fail(target, "timed out", /*unreachable=*/true);
  RedisBackendResult result = std::move(std::get<0>(outcome));
  if (result.backend && options.metrics) {
    result.backend->open_gauge = GaugeHold(
        &options.metrics->BackendConnections(routing::Protocol::kRedis, target.node_name));
  }
  co_return result;
}

}  // namespace nerava::proxy
