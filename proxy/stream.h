// A client or server connection that is plain TCP or TLS over TCP, decided after it was opened
// (PostgreSQL's SSLRequest upgrades a plain socket in place).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "nerava/config/config.h"
#include "proxy/asio.h"
#include "proxy/peer_close_watch.h"

namespace boost::asio::detail {
class epoll_reactor;  // defined only where Asio uses epoll; used here by pointer (drained_read.h)
}  // namespace boost::asio::detail

namespace nerava::proxy {

// Resolves `host` and connects to the first address that answers, with TCP_NODELAY (the proxy
// relays small requests and replies: Nagle would hold them back) and `keepalive` (see
// config::TcpKeepalive; idle 0 leaves it off; a kernel that refuses it is logged, not fatal).
// The error names the step.
awaitable<absl::StatusOr<tcp::socket>> ConnectTcp(const std::string& host, uint16_t port,
                                                  const config::TcpKeepalive& keepalive);

// Turns TCP keepalive on with the given times, or off when `keepalive.idle` is 0.
error_code SetKeepalive(tcp::socket& socket, const config::TcpKeepalive& keepalive);

class Stream {
 public:
  // The socket is switched to non-blocking mode: writes are first tried in place (below), and
  // reads remember when they drained the socket (proxy/drained_read.h) while its peer's close is
  // watched (proxy/peer_close_watch.h).
  explicit Stream(tcp::socket socket);
  ~Stream();
  Stream(Stream&&) = default;
  // Not assignable: a read in flight would go on to the new socket.
  Stream& operator=(Stream&&) = delete;

  // Not coroutines: they pick the plain or TLS read when called, so await the result before the
  // stream can change (AcceptTls/ConnectTls), as every caller does.
  awaitable<std::tuple<error_code, size_t>> ReadSome(asio::mutable_buffer buffer);
  // A read that `cancel` ends early (operation_aborted). On TLS a cancel inside a record leaves
  // the stream in doubt: callers that cancel routinely use it on plain TCP only.
  awaitable<std::tuple<error_code, size_t>> ReadSome(asio::mutable_buffer buffer,
                                                     asio::cancellation_slot cancel);
  awaitable<std::tuple<error_code, size_t>> Write(asio::const_buffer buffer);
  template <typename Buffers>
  awaitable<std::tuple<error_code, size_t>> WriteBuffers(const Buffers& buffers) {
    error_code ec;
    const size_t sent = WriteInPlace(buffers, ec);
    if (ec || sent == asio::buffer_size(buffers)) co_return std::tuple{ec, sent};
    co_return co_await WriteRest(buffers, sent);
  }
  // Sends what the socket takes now, without waiting: a socket with room takes the whole write
  // at once, and sending it in place saves the completion's trip through the scheduler. Plain
  // TCP only (a TLS stream sends nothing here). Returns the bytes sent; `ec` is set on a
  // failure other than "would block". Hot paths call this and co_await WriteRest() only when
  // something is left, which saves the coroutine frames of a Write per message.
  template <typename Buffers>
  size_t WriteInPlace(const Buffers& buffers, error_code& ec) {
    ec = {};
    auto* plain = std::get_if<tcp::socket>(&impl_);
    if (!plain || !plain->non_blocking()) return 0;
    const size_t sent = plain->write_some(buffers, ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) ec = {};
    return ec ? 0 : sent;
  }
  // Writes `buffers` from byte `sent` on, waiting for room as needed. Returns the total written
  // (`sent` included).
  template <typename Buffers>
  awaitable<std::tuple<error_code, size_t>> WriteRest(const Buffers& buffers, size_t sent) {
    std::vector<asio::const_buffer> remaining;
    size_t skip = sent;
    for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers);
         ++it) {
      asio::const_buffer piece(*it);
      if (skip >= piece.size()) {
        skip -= piece.size();
        continue;
      }
      remaining.push_back(piece + skip);
      skip = 0;
    }
    if (auto* tls = std::get_if<TlsSocket>(&impl_)) {
      auto [ec, n] = co_await asio::async_write(*tls, remaining, kNoThrow);
      co_return std::tuple{ec, sent + n};
    }
    auto [ec, n] = co_await asio::async_write(std::get<tcp::socket>(impl_), remaining, kNoThrow);
    co_return std::tuple{ec, sent + n};
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

  // `cancel` absent: the reading coroutine's own slot.
  awaitable<std::tuple<error_code, size_t>> ReadTls(asio::mutable_buffer buffer,
                                                    std::optional<asio::cancellation_slot> cancel);
  awaitable<std::tuple<error_code, size_t>> ReadPlain(asio::mutable_buffer buffer,
                                                      std::optional<asio::cancellation_slot> cancel);
  void ForgetWakeUp();

  std::variant<tcp::socket, TlsSocket> impl_;
  // Null when the read is Asio's own (the watch was refused, or no drained read is built).
  std::shared_ptr<PeerClose> peer_close_;
  asio::detail::epoll_reactor* reactor_ = nullptr;  // where drained reads wait (with the mark)
};

}  // namespace nerava::proxy
