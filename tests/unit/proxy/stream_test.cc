#include "proxy/stream.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>

namespace nerava::proxy {
namespace {

using std::chrono::milliseconds;

// A Stream over one end of a loopback connection; `peer` is the other end.
struct StreamPair {
  asio::io_context io;
  tcp::socket peer{io};
  std::optional<Stream> stream;

  StreamPair() {
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    peer.connect(acceptor.local_endpoint());
    stream.emplace(acceptor.accept());
  }

  // Runs `test` to completion, bounded: a read that never completes fails the test.
  void Run(std::function<awaitable<void>()> test) {
    bool finished = false;
    asio::co_spawn(
        io,
        [&]() -> awaitable<void> {
          co_await test();
          finished = true;
        },
        asio::detached);
    io.run_for(std::chrono::seconds(5));
    EXPECT_TRUE(finished) << "a read did not complete";
  }
};

awaitable<void> Sleep(milliseconds how_long) {
  asio::steady_timer timer(co_await asio::this_coro::executor, how_long);
  co_await timer.async_wait(kNoThrow);
}

awaitable<std::string> ReadOnce(Stream& stream) {
  std::string buffer(64, '\0');
  auto [ec, n] = co_await stream.ReadSome(asio::buffer(buffer));
  EXPECT_FALSE(ec) << ec.message();
  buffer.resize(n);
  co_return buffer;
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
    std::string buffer(64, '\0');
    auto [ec, n] = co_await pair.stream->ReadSome(asio::buffer(buffer));
    EXPECT_EQ(ec, asio::error::eof);
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

}  // namespace
}  // namespace nerava::proxy
