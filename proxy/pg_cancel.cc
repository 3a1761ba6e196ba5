#include "proxy/pg_cancel.h"

namespace nerava::proxy {

using namespace asio::experimental::awaitable_operators;

namespace {

awaitable<void> Deliver(tcp::socket& socket, const pg::BackendKeyData& key) {
  std::string request;
  pg::AppendCancelRequest(request, key);
  co_await asio::async_write(socket, asio::buffer(request), kNoThrow);
  // The server closes the connection once it has acted on the request.
  char byte;
  co_await socket.async_read_some(asio::buffer(&byte, 1), kNoThrow);
}

awaitable<void> CancelAt(tcp::endpoint server, pg::BackendKeyData key) {
  tcp::socket socket(co_await asio::this_coro::executor);
  auto [connect_error] = co_await socket.async_connect(server, kNoThrow);
  if (connect_error) co_return;
  co_await Deliver(socket, key);
}

awaitable<void> CancelByName(std::string host, uint16_t port, pg::BackendKeyData key) {
  auto executor = co_await asio::this_coro::executor;
  tcp::resolver resolver(executor);
  auto [resolve_error, endpoints] =
      co_await resolver.async_resolve(host, std::to_string(port), kNoThrow);
  if (resolve_error) co_return;
  tcp::socket socket(executor);
  auto [connect_error, endpoint] = co_await asio::async_connect(socket, endpoints, kNoThrow);
  if (connect_error) co_return;
  co_await Deliver(socket, key);
}

}  // namespace

awaitable<void> SendCancelRequest(tcp::endpoint server, pg::BackendKeyData key,
                                  std::chrono::milliseconds timeout) {
  asio::steady_timer deadline(co_await asio::this_coro::executor, timeout);
  co_await (CancelAt(server, key) || deadline.async_wait(kNoThrow));
}

awaitable<void> SendCancelRequest(std::string host, uint16_t port, pg::BackendKeyData key,
                                  std::chrono::milliseconds timeout) {
  asio::steady_timer deadline(co_await asio::this_coro::executor, timeout);
  co_await (CancelByName(std::move(host), port, key) || deadline.async_wait(kNoThrow));
}

}  // namespace nerava::proxy
