#include "proxy/stream.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/asio/experimental/awaitable_operators.hpp>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "tests/unit/proxy/loopback.h"

namespace nerava::proxy {
namespace {

using namespace asio::experimental::awaitable_operators;
using std::chrono::milliseconds;
using test_support::Sleep;

// A Stream over one end of a loopback connection; `peer` is the other end.
struct StreamPair {
  asio::io_context io;
  tcp::socket peer{io};
  std::optional<Stream> stream;

  StreamPair() {
    auto [near, far] = test_support::ConnectLoopback(io);
    peer = std::move(far);
    stream.emplace(std::move(near));
  }

  void Run(std::function<awaitable<void>()> test) { test_support::RunBounded(io, std::move(test)); }

  // The peer's last bytes and its close, sent together while the test waits in a read.
  void SendLastAndCloseLater(asio::steady_timer& timer) {
    timer.expires_after(milliseconds(20));
    timer.async_wait([this](error_code) {
      asio::write(peer, asio::buffer(std::string_view("last")));
      peer.close();
    });
  }
};

awaitable<std::string> ReadOnce(Stream& stream) {
  std::string buffer(64, '\0');
  auto [ec, n] = co_await stream.ReadSome(asio::buffer(buffer));
  EXPECT_FALSE(ec) << ec.message();
  buffer.resize(n);
  co_return buffer;
}

awaitable<error_code> ReadError(Stream& stream) {
  std::string buffer(64, '\0');
  auto [ec, n] = co_await stream.ReadSome(asio::buffer(buffer));
  co_return ec;
}

TEST(StreamTest, ACloseQueuedBehindTheLastBytesIsSeen) {
  // A server's FATAL and its close, or a client's last request and its hang-up, often arrive
  // in one go: the read after the bytes must report the end, not wait for another event.
  StreamPair pair;
  pair.Run([&]() -> awaitable<void> {
    asio::write(pair.peer, asio::buffer(std::string_view("last")));
    pair.peer.close();
    co_await Sleep(milliseconds(20));  // both are in the kernel before the first read
    EXPECT_EQ(co_await ReadOnce(*pair.stream), "last");
    EXPECT_EQ(co_await ReadError(*pair.stream), asio::error::eof);
  });
}

TEST(StreamTest, ACloseQueuedBehindBytesIsSeenByAReadAlreadyWaiting) {
  // The bytes and the close come in one edge while the next read waits: the watch ends it.
  StreamPair pair;
  pair.Run([&]() -> awaitable<void> {
    asio::write(pair.peer, asio::buffer(std::string_view("first")));
    EXPECT_EQ(co_await ReadOnce(*pair.stream), "first");
    asio::steady_timer later(pair.io);
    pair.SendLastAndCloseLater(later);
    EXPECT_EQ(co_await ReadOnce(*pair.stream), "last");
    EXPECT_EQ(co_await ReadError(*pair.stream), asio::error::eof);
  });
}

TEST(StreamTest, AResetQueuedBehindTheLastBytesIsSeen) {
  StreamPair pair;
  pair.Run([&]() -> awaitable<void> {
    asio::write(pair.peer, asio::buffer(std::string_view("last")));
    pair.peer.set_option(asio::socket_base::linger(true, 0));  // close sends a reset
    pair.peer.close();
    co_await Sleep(milliseconds(20));
    std::string buffer(64, '\0');
    auto [first_ec, first_n] = co_await pair.stream->ReadSome(asio::buffer(buffer));
    // Linux drops unread bytes on a reset: the read sees them or the reset, never waits.
    if (!first_ec) {
      EXPECT_EQ(buffer.substr(0, first_n), "last");
      auto [ec, n] = co_await pair.stream->ReadSome(asio::buffer(buffer));
      EXPECT_TRUE(ec) << "read after a reset succeeded";
    } else {
      EXPECT_EQ(first_ec, asio::error::connection_reset) << first_ec.message();
    }
  });
}

TEST(StreamTest, ACloseQueuedBehindBytesEndsACancellableRead) {
  // The relay's parked read: the caller's cancel and the peer's close share one read.
  StreamPair pair;
  pair.Run([&]() -> awaitable<void> {
    asio::cancellation_signal cancel;
    asio::write(pair.peer, asio::buffer(std::string_view("first")));
    EXPECT_EQ(co_await ReadOnce(*pair.stream), "first");
    asio::steady_timer later(pair.io);
    pair.SendLastAndCloseLater(later);
    std::string buffer(64, '\0');
    auto [ec, n] = co_await pair.stream->ReadSome(asio::buffer(buffer), cancel.slot());
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_EQ(buffer.substr(0, n), "last");
    auto [end_ec, end_n] = co_await pair.stream->ReadSome(asio::buffer(buffer), cancel.slot());
    EXPECT_EQ(end_ec, asio::error::eof);
  });
}

TEST(StreamTest, ManyStreamsOnOneContextEachSeeTheirOwnClose) {
  // One watch per context: a close is told to its own stream only.
  StreamPair closing;
  auto [open_near, open_peer] = test_support::ConnectLoopback(closing.io);
  Stream open(std::move(open_near));
  closing.Run([&]() -> awaitable<void> {
    asio::write(closing.peer, asio::buffer(std::string_view("bye")));
    asio::write(open_peer, asio::buffer(std::string_view("hello")));
    closing.peer.close();
    co_await Sleep(milliseconds(20));
    EXPECT_EQ(co_await ReadOnce(*closing.stream), "bye");
    EXPECT_EQ(co_await ReadOnce(open), "hello");
    EXPECT_EQ(co_await ReadError(*closing.stream), asio::error::eof);
    asio::steady_timer later(closing.io, milliseconds(20));
    later.async_wait(
        [&](error_code) { asio::write(open_peer, asio::buffer(std::string_view("more"))); });
    EXPECT_EQ(co_await ReadOnce(open), "more");
  });
}

TEST(StreamTest, AReadLosingARaceToADeadlineEnds) {
  // `read || deadline` cancels the read through the coroutine's own slot: startup and connect
  // timeouts, and the relay's two loops ending each other, rely on it.
  StreamPair pair;
  pair.Run([&]() -> awaitable<void> {
    std::string buffer(64, '\0');
    auto outcome = co_await (pair.stream->ReadSome(asio::buffer(buffer)) ||
                             Sleep(milliseconds(20)));
    EXPECT_EQ(outcome.index(), 1u);
    asio::write(pair.peer, asio::buffer(std::string_view("after")));
    EXPECT_EQ(co_await ReadOnce(*pair.stream), "after");
  });
}

TEST(StreamTest, AStreamDestroyedWhileAReadWaitsEndsThatRead) {
  StreamPair pair;
  pair.Run([&]() -> awaitable<void> {
    asio::steady_timer later(pair.io, milliseconds(20));
    later.async_wait([&](error_code) { pair.stream.reset(); });
    std::string buffer(64, '\0');
    Stream& stream = *pair.stream;
    auto [ec, n] = co_await stream.ReadSome(asio::buffer(buffer));
    EXPECT_EQ(ec, asio::error::operation_aborted);
  });
}

TEST(StreamTest, ACancelledReadEndsAndTheStreamGoesOn) {
  StreamPair pair;
  pair.Run([&]() -> awaitable<void> {
    asio::cancellation_signal cancel;
    asio::steady_timer later(pair.io, milliseconds(20));
    later.async_wait([&](error_code) { cancel.emit(asio::cancellation_type::terminal); });
    std::string buffer(64, '\0');
    auto [ec, n] = co_await pair.stream->ReadSome(asio::buffer(buffer), cancel.slot());
    EXPECT_EQ(ec, asio::error::operation_aborted);
    asio::write(pair.peer, asio::buffer(std::string_view("after")));
    EXPECT_EQ(co_await ReadOnce(*pair.stream), "after");
  });
}

TEST(StreamTest, ACancellableReadGetsWhatArrives) {
  StreamPair pair;
  pair.Run([&]() -> awaitable<void> {
    asio::cancellation_signal cancel;
    asio::steady_timer later(pair.io, milliseconds(20));
    later.async_wait(
        [&](error_code) { asio::write(pair.peer, asio::buffer(std::string_view("reply"))); });
    std::string buffer(64, '\0');
    auto [ec, n] = co_await pair.stream->ReadSome(asio::buffer(buffer), cancel.slot());
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_EQ(buffer.substr(0, n), "reply");
  });
}

// ----------------------------------------------------------------------------------- writes

// Three buffers of distinct bytes, far more than a small send buffer takes at once.
std::vector<std::string> BigPieces() {
  std::vector<std::string> pieces;
  for (char fill : {'a', 'b', 'c'}) {
    std::string piece(400 * 1024, fill);
    piece[0] = '<';
    piece.back() = '>';
    pieces.push_back(std::move(piece));
  }
  return pieces;
}

TEST(StreamTest, AWriteThatDoesNotFitIsFinishedInOrderWhenThePeerReads) {
  StreamPair pair;
  const int small = 16 * 1024;
  ASSERT_EQ(::setsockopt(pair.stream->socket().native_handle(), SOL_SOCKET, SO_SNDBUF, &small,
                         sizeof(small)),
            0);
  const std::vector<std::string> pieces = BigPieces();
  std::vector<asio::const_buffer> buffers;
  std::string expected;
  for (const auto& piece : pieces) {
    buffers.push_back(asio::buffer(piece));
    expected += piece;
  }
  pair.Run([&]() -> awaitable<void> {
    error_code ec;
    const size_t sent = pair.stream->WriteInPlace(buffers, ec);
    EXPECT_FALSE(ec) << ec.message();
    // The socket took part of it (it had room) but not all: the rest must wait for the peer.
    EXPECT_GT(sent, 0u);
    EXPECT_LT(sent, expected.size());
    std::string received(expected.size(), '\0');
    auto read = [&]() -> awaitable<void> {
      auto [read_ec, n] = co_await asio::async_read(pair.peer, asio::buffer(received), kNoThrow);
      EXPECT_FALSE(read_ec) << read_ec.message();
      EXPECT_EQ(n, expected.size());
    };
    auto write = [&]() -> awaitable<void> {
      auto [write_ec, total] = co_await pair.stream->WriteRest(buffers, sent);
      EXPECT_FALSE(write_ec) << write_ec.message();
      EXPECT_EQ(total, expected.size());
    };
    co_await (read() && write());
    EXPECT_TRUE(received == expected) << "bytes reordered, lost or repeated";
  });
}

TEST(StreamTest, AWriteInPlaceToAClosedPeerFailsInsteadOfWaiting) {
  StreamPair pair;
  pair.peer.close();
  pair.Run([&]() -> awaitable<void> {
    co_await Sleep(milliseconds(20));
    error_code ec;
    // The first send may still be taken (the reset comes back for it); a later one fails.
    const std::string bytes(1024, 'x');
    for (int i = 0; i < 10 && !ec; ++i) {
      pair.stream->WriteInPlace(asio::buffer(bytes), ec);
      co_await Sleep(milliseconds(5));
    }
    EXPECT_TRUE(ec == asio::error::connection_reset || ec == asio::error::broken_pipe)
        << ec.message();
  });
}

// ---------------------------------------------------------------------------- TCP keepalive

int SocketOption(tcp::socket& socket, int level, int name) {
  int value = -1;
  socklen_t size = sizeof(value);
  EXPECT_EQ(::getsockopt(socket.native_handle(), level, name, &value, &size), 0);
  return value;
}

// What ConnectTcp made of `keepalive` on a real connection to a loopback listener.
struct KeepaliveSeen {
  int on = -1, idle = -1, interval = -1, count = -1;
};

KeepaliveSeen ConnectWith(const config::TcpKeepalive& keepalive) {
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  KeepaliveSeen seen;
  test_support::RunBounded(io, [&]() -> awaitable<void> {
    absl::StatusOr<tcp::socket> socket =
        co_await ConnectTcp("127.0.0.1", acceptor.local_endpoint().port(), keepalive);
    EXPECT_TRUE(socket.ok()) << socket.status();
    if (!socket.ok()) co_return;
    seen.on = SocketOption(*socket, SOL_SOCKET, SO_KEEPALIVE);
    seen.idle = SocketOption(*socket, IPPROTO_TCP, TCP_KEEPIDLE);
    seen.interval = SocketOption(*socket, IPPROTO_TCP, TCP_KEEPINTVL);
    seen.count = SocketOption(*socket, IPPROTO_TCP, TCP_KEEPCNT);
  });
  return seen;
}

TEST(ConnectTcpTest, ServerConnectionsProbeAnIdlePathWithTheConfiguredTimes) {
  const KeepaliveSeen seen = ConnectWith({.idle = std::chrono::seconds(75),
                                          .interval = std::chrono::seconds(7),
                                          .count = 4});
  EXPECT_EQ(seen.on, 1);
  EXPECT_EQ(seen.idle, 75);
  EXPECT_EQ(seen.interval, 7);
  EXPECT_EQ(seen.count, 4);
}

TEST(ConnectTcpTest, AnIdleTimeOfZeroLeavesKeepaliveOff) {
  EXPECT_EQ(ConnectWith({.idle = milliseconds(0)}).on, 0);
}

}  // namespace
}  // namespace nerava::proxy
