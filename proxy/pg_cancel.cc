#include "proxy/pg_cancel.h"

namespace nerava::proxy {
namespace {

awaitable<void> Cancel(std::string host, uint16_t port, pg::BackendKeyData key) {
  auto executor = co_await asio::this_coro::executor;
  tcp::resolver resolver(executor);
  auto [resolve_error, endpoints] =
      co_await resolver.async_resolve(host, std::to_string(port), kNoThrow);
  if (resolve_error) co_return;
  tcp::socket socket(executor);
  auto [connect_error, endpoint] = co_await asio::async_connect(socket, endpoints, kNoThrow);
  if (connect_error) co_return;
  std::string request;
  pg::AppendCancelRequest(request, key);
  co_await asio::async_write(socket, asio::buffer(request), kNoThrow);
  // The server closes the connection once it has acted on the request.
  char byte;
  co_await socket.async_read_some(asio::buffer(&byte, 1), kNoThrow);
}

}  // namespace

awaitable<void> SendCancelRequest(std::string host, uint16_t port, pg::BackendKeyData key,
                                  std::chrono::milliseconds timeout) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer deadline(co_await asio::this_coro::executor, timeout);
  co_await (Cancel(std::move(host), port, key) || deadline.async_wait(kNoThrow));
}

}  // namespace nerava::proxy
