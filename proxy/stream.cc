#include "proxy/stream.h"

#include <openssl/ssl.h>

namespace nerava::proxy {

awaitable<absl::StatusOr<tcp::socket>> ConnectTcp(const std::string& host, uint16_t port) {
  auto executor = co_await asio::this_coro::executor;
  tcp::resolver resolver(executor);
  auto [resolve_error, endpoints] =
      co_await resolver.async_resolve(host, std::to_string(port), kNoThrow);
  if (resolve_error) {
    co_return absl::UnavailableError("cannot resolve host: " + resolve_error.message());
  }
  tcp::socket socket(executor);
  auto [connect_error, endpoint] = co_await asio::async_connect(socket, endpoints, kNoThrow);
  if (connect_error) co_return absl::UnavailableError(connect_error.message());
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  co_return socket;
}

Stream::Stream(tcp::socket socket) : impl_(std::move(socket)) {
  error_code ignored;
  std::get<tcp::socket>(impl_).non_blocking(true, ignored);
}

awaitable<std::tuple<error_code, size_t>> Stream::ReadSome(asio::mutable_buffer buffer) {
  if (auto* tls = std::get_if<TlsSocket>(&impl_)) {
    co_return co_await tls->async_read_some(buffer, kNoThrow);
  }
  co_return co_await std::get<tcp::socket>(impl_).async_read_some(buffer, kNoThrow);
}

awaitable<std::tuple<error_code, size_t>> Stream::ReadSome(asio::mutable_buffer buffer,
                                                           asio::cancellation_slot cancel) {
  auto token = asio::bind_cancellation_slot(cancel, kNoThrow);
  if (auto* tls = std::get_if<TlsSocket>(&impl_)) {
    co_return co_await tls->async_read_some(buffer, token);
  }
  co_return co_await std::get<tcp::socket>(impl_).async_read_some(buffer, token);
}

awaitable<std::tuple<error_code, size_t>> Stream::Write(asio::const_buffer buffer) {
  co_return co_await WriteBuffers(buffer);
}

awaitable<error_code> Stream::AcceptTls(ssl::context& context) {
  // Move the socket out first: emplace destroys the current alternative before constructing.
  tcp::socket plain = std::move(std::get<tcp::socket>(impl_));
  impl_.emplace<TlsSocket>(std::move(plain), context);
  auto [ec] = co_await std::get<TlsSocket>(impl_).async_handshake(ssl::stream_base::server,
                                                                   kNoThrow);
  co_return ec;
}

awaitable<error_code> Stream::ConnectTls(ssl::context& context, const std::string& server_name,
                                         bool verify) {
  tcp::socket plain = std::move(std::get<tcp::socket>(impl_));
  impl_.emplace<TlsSocket>(std::move(plain), context);
  auto& tls = std::get<TlsSocket>(impl_);
  // SNI and, for verify-full, the name the certificate must carry.
  // SSL_set_tlsext_host_name is a macro with a C cast; call what it expands to.
  SSL_ctrl(tls.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
           const_cast<char*>(server_name.c_str()));
  if (verify) {
    tls.set_verify_mode(ssl::verify_peer);
    tls.set_verify_callback(ssl::host_name_verification(server_name));
  } else {
    tls.set_verify_mode(ssl::verify_none);
  }
  auto [ec] = co_await tls.async_handshake(ssl::stream_base::client, kNoThrow);
  co_return ec;
}

tcp::socket& Stream::socket() {
  if (auto* tls = std::get_if<TlsSocket>(&impl_)) return tls->next_layer();
  return std::get<tcp::socket>(impl_);
}

void Stream::Close() {
  error_code ignored;
  socket().shutdown(tcp::socket::shutdown_both, ignored);
  socket().close(ignored);
}

void Stream::Cancel() {
  error_code ignored;
  socket().cancel(ignored);
}

}  // namespace nerava::proxy
