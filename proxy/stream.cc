#include "proxy/stream.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include "proxy/drained_read.h"

namespace nerava::proxy {

awaitable<absl::StatusOr<tcp::socket>> ConnectTcp(const std::string& host, uint16_t port,
                                                  const config::TcpKeepalive& keepalive) {
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
  if (error_code ec = SetKeepalive(socket, keepalive)) {
    // The connection works without it: not a reason to refuse the session (or, for Redis, to
    // take the node for unreachable).
    spdlog::warn("cannot set TCP keepalive on the connection to {}:{}: {}", host, port,
                 ec.message());
  }
  co_return socket;
}

error_code SetKeepalive(tcp::socket& socket, const config::TcpKeepalive& keepalive) {
  using Idle = asio::detail::socket_option::integer<IPPROTO_TCP, TCP_KEEPIDLE>;
  using Interval = asio::detail::socket_option::integer<IPPROTO_TCP, TCP_KEEPINTVL>;
  using Count = asio::detail::socket_option::integer<IPPROTO_TCP, TCP_KEEPCNT>;
  const auto seconds = [](std::chrono::milliseconds time) {
    return static_cast<int>(std::chrono::duration_cast<std::chrono::seconds>(time).count());
  };
  error_code ec;
  const bool on = keepalive.idle.count() > 0;
  socket.set_option(asio::socket_base::keep_alive(on), ec);
  if (ec || !on) return ec;
  socket.set_option(Idle(seconds(keepalive.idle)), ec);
  if (!ec) socket.set_option(Interval(seconds(keepalive.interval)), ec);
  if (!ec) socket.set_option(Count(keepalive.count), ec);
  return ec;
}

Stream::Stream(tcp::socket socket) : impl_(std::move(socket)) {
  tcp::socket& plain = std::get<tcp::socket>(impl_);
  error_code ignored;
  plain.non_blocking(true, ignored);
#ifdef NERAVA_DRAINED_READ
  peer_close_ =
      asio::use_service<PeerCloseWatch>(asio::query(plain.get_executor(), asio::execution::context))
          .Watch(plain);
  if (peer_close_) reactor_ = DrainedReadReactor(plain);
#endif
}

// Not coroutines: each hands back the read's own coroutine, one frame per read instead of two.
awaitable<std::tuple<error_code, size_t>> Stream::ReadSome(asio::mutable_buffer buffer) {
  // The coroutine's own cancellation (a `||` with a deadline, the relay's loops ending each
  // other) must still reach the read: the read takes the reading coroutine's slot.
  if (is_tls()) return ReadTls(buffer, std::nullopt);
  return ReadPlain(buffer, std::nullopt);
}

awaitable<std::tuple<error_code, size_t>> Stream::ReadSome(asio::mutable_buffer buffer,
                                                           asio::cancellation_slot cancel) {
  if (is_tls()) return ReadTls(buffer, cancel);
  return ReadPlain(buffer, cancel);
}

awaitable<std::tuple<error_code, size_t>> Stream::ReadTls(
    asio::mutable_buffer buffer, std::optional<asio::cancellation_slot> cancel) {
  TlsSocket& tls = std::get<TlsSocket>(impl_);
  if (!cancel) co_return co_await tls.async_read_some(buffer, kNoThrow);
  co_return co_await tls.async_read_some(buffer, asio::bind_cancellation_slot(*cancel, kNoThrow));
}

namespace {

// While a drained read waits: the peer's close and the caller's cancel both end it through the
// mark's signal. Undone however the read ends, the coroutine's destruction included (the slots
// would otherwise call into a destroyed frame). The reading frame holds the mark alive.
class DrainedReadScope {
 public:
  DrainedReadScope(PeerClose& mark, asio::cancellation_slot caller)
      : mark_(&mark), caller_(caller) {
    mark_->reading = true;
    mark_->woken = false;
    mine_ = ++mark_->reads;
    if (caller_.is_connected()) {
      caller_.assign([this](asio::cancellation_type_t type) {
        cancelled_by_caller_ = true;
        mark_->wake.emit(type);
      });
    }
  }
  ~DrainedReadScope() {
    // A read started after a Cancel, before this one resumed, owns the mark's slot now.
    if (mark_->reads == mine_) {
      mark_->reading = false;
      mark_->wake.slot().clear();
    }
    if (caller_.is_connected()) caller_.clear();
  }
  DrainedReadScope(const DrainedReadScope&) = delete;
  DrainedReadScope& operator=(const DrainedReadScope&) = delete;

  bool cancelled_by_caller() const { return cancelled_by_caller_; }

 private:
  PeerClose* mark_;
  uint64_t mine_ = 0;
  asio::cancellation_slot caller_;
  bool cancelled_by_caller_ = false;
};

}  // namespace

awaitable<std::tuple<error_code, size_t>> Stream::ReadPlain(
    asio::mutable_buffer buffer, std::optional<asio::cancellation_slot> given) {
  asio::cancellation_slot cancel;
  if (given) {
    cancel = *given;
  } else {
    asio::cancellation_state state = co_await asio::this_coro::cancellation_state;
    cancel = state.slot();
  }
  // The frame keeps its own share of the mark: the Stream may be gone when the read ends.
  const std::shared_ptr<PeerClose> mark = peer_close_;
  if (mark && !mark->seen) {
    DrainedReadScope scope(*mark, cancel);
    auto [ec, n] = co_await AsyncReadDrained(
        std::get<tcp::socket>(impl_), reactor_, buffer,
        asio::bind_cancellation_slot(mark->wake.slot(), kNoThrow));
    // Only the watch's wake-up reads again; a cancel or close of ours stays an abort.
    if (ec != asio::error::operation_aborted || !mark->woken || scope.cancelled_by_caller()) {
      co_return std::tuple{ec, n};
    }
  }
  tcp::socket& plain = std::get<tcp::socket>(impl_);
  if (mark) {
    // The peer has closed: what is left, bytes and then the end, is in the socket already, and
    // the drained read's reactor may wait for an edge that will not come.
    error_code ec;
    const size_t n = plain.read_some(buffer, ec);
    if (ec != asio::error::would_block && ec != asio::error::try_again) {
      co_return std::tuple{ec, n};
    }
  }
  if (!cancel.is_connected()) co_return co_await plain.async_read_some(buffer, kNoThrow);
  co_return co_await plain.async_read_some(buffer,
                                           asio::bind_cancellation_slot(cancel, kNoThrow));
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

Stream::~Stream() { ForgetWakeUp(); }

// A read that our own cancel, close or destruction aborts must not take that for the watch's
// wake-up (whose handler may have run just before, in the same reactor pass).
void Stream::ForgetWakeUp() {
  if (!peer_close_) return;
  peer_close_->woken = false;
  peer_close_->reading = false;
}

void Stream::Close() {
  ForgetWakeUp();
  error_code ignored;
  socket().shutdown(tcp::socket::shutdown_both, ignored);
  socket().close(ignored);
}

void Stream::Cancel() {
  ForgetWakeUp();
  error_code ignored;
  socket().cancel(ignored);
}

}  // namespace nerava::proxy
