// Real loopback sockets for tests of reads, and a bounded way to run a test coroutine on them.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <utility>

#include "proxy/asio.h"

namespace nerava::proxy::test_support {

// Both ends of one loopback TCP connection: `near` is the end under test.
inline std::pair<tcp::socket, tcp::socket> ConnectLoopback(asio::io_context& io) {
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket far(io);
  far.connect(acceptor.local_endpoint());
  return {acceptor.accept(), std::move(far)};
}

// Runs `test` to completion, bounded: a read that never completes fails the test. Stops the
// context at the end (the peer-close watch keeps a wait pending, so run() would not return).
inline void RunBounded(asio::io_context& io, std::function<awaitable<void>()> test) {
  bool finished = false;
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        co_await test();
        finished = true;
        io.stop();
      },
      asio::detached);
  io.run_for(std::chrono::seconds(5));
  EXPECT_TRUE(finished) << "a read did not complete";
}

inline awaitable<void> Sleep(std::chrono::milliseconds how_long) {
  asio::steady_timer timer(co_await asio::this_coro::executor, how_long);
  co_await timer.async_wait(kNoThrow);
}

}  // namespace nerava::proxy::test_support
