#include "proxy/libpq_util.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>

namespace nerava::proxy {

const char* SslModeName(config::SslMode mode) {
  switch (mode) {
    case config::SslMode::kDisable:
      return "disable";
    case config::SslMode::kRequire:
      return "require";
    case config::SslMode::kVerifyFull:
      return "verify-full";
    case config::SslMode::kPrefer:
      break;
  }
  return "prefer";
}

bool WaitSocket(int fd, short events, std::chrono::steady_clock::time_point deadline,
                const std::stop_token& stop) {
  constexpr auto kSlice = std::chrono::milliseconds(100);
  for (;;) {
    if (stop.stop_requested()) return false;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    // Past the deadline, one last look without waiting: an answer that arrived while this
    // thread was not running (a paused or starved host) is not a timeout.
    if (left.count() < 0) left = std::chrono::milliseconds(0);
    left = std::min<std::chrono::milliseconds>(left, kSlice);
    pollfd pfd{fd, events, 0};
    const int rc = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) return false;
    if (left.count() == 0 && rc == 0) return false;
  }
}

}  // namespace nerava::proxy
