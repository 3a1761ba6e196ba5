// What the proxy's own libpq connections share (node checks, the pg_proc loader, the
// switchover's admin SQL): ownership of libpq handles and bounded waits on their sockets.
#pragma once

#include <libpq-fe.h>
#include <poll.h>  // the events WaitSocket takes

#include <chrono>
#include <memory>
#include <stop_token>

#include "nerava/config/config.h"

namespace nerava::proxy {

struct PgConnCloser {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
using PgConnPtr = std::unique_ptr<PGconn, PgConnCloser>;

struct PgResultClearer {
  void operator()(PGresult* result) const { PQclear(result); }
};
using PgResultPtr = std::unique_ptr<PGresult, PgResultClearer>;

// libpq's sslmode keyword for a backend_tls mode.
const char* SslModeName(config::SslMode mode);

// Waits until `fd` is ready for `events`; false at the deadline, or once `stop` is requested
// (checked every 100 ms, so that shutdown never waits for a hung server).
bool WaitSocket(int fd, short events, std::chrono::steady_clock::time_point deadline,
                const std::stop_token& stop = {});

}  // namespace nerava::proxy
