// Wakes a coroutine waiting on the same executor: no timer (a timer re-arms the reactor's
// timerfd on every wait) and no syscall, just a posted completion.
#pragma once

#include <boost/asio/experimental/channel.hpp>

#include "proxy/asio.h"

namespace nerava::proxy {

class WakeSignal {
 public:
  explicit WakeSignal(const asio::any_io_executor& executor) : channel_(executor, 1) {}

  // Wakes the waiter, or the next Wait() when nobody waits (one notification is kept).
  void Notify() { channel_.try_send(error_code{}); }
  // Returns after a Notify() (possibly one from before the call: callers re-check their state)
  // or when the wait is cancelled.
  awaitable<void> Wait() { co_await channel_.async_receive(kNoThrow); }
  // Ends a pending Wait() (shutdown).
  void Cancel() { channel_.cancel(); }

 private:
  asio::experimental::channel<void(error_code)> channel_;
};

}  // namespace nerava::proxy
