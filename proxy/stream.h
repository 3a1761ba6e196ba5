// A client or server connection that is plain TCP or TLS over TCP, decided after it was opened
// (PostgreSQL's SSLRequest upgrades a plain socket in place).
#pragma once

#include <memory>
#include <string>
#include <variant>

#include "proxy/asio.h"

namespace nerava::proxy {

class Stream {
 public:
  explicit Stream(tcp::socket socket) : impl_(std::move(socket)) {}

  awaitable<std::tuple<error_code, size_t>> ReadSome(asio::mutable_buffer buffer);
  awaitable<std::tuple<error_code, size_t>> Write(asio::const_buffer buffer);
  template <typename Buffers>
  awaitable<std::tuple<error_code, size_t>> WriteBuffers(const Buffers& buffers) {
    if (auto* tls = std::get_if<TlsSocket>(&impl_)) {
      co_return co_await asio::async_write(*tls, buffers, kNoThrow);
    }
    co_return co_await asio::async_write(std::get<tcp::socket>(impl_), buffers, kNoThrow);
  }

  // Upgrades a plain stream in place (server or client side). On failure the stream is TLS but
  // unusable; the caller closes it.
  awaitable<error_code> AcceptTls(ssl::context& context);
  awaitable<error_code> ConnectTls(ssl::context& context, const std::string& server_name,
                                   bool verify);

  bool is_tls() const { return std::holds_alternative<TlsSocket>(impl_); }
  tcp::socket& socket();
  // Cancels pending operations and closes the socket (no TLS close_notify: the peer is gone
  // or being dropped).
  void Close();
  void Cancel();

 private:
  using TlsSocket = ssl::stream<tcp::socket>;
  std::variant<tcp::socket, TlsSocket> impl_;
};

}  // namespace nerava::proxy
