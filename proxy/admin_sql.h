// Blocking, bounded SQL and Redis commands for the admin thread (switchover): a node is asked
// one thing at a time and every call has a deadline. Never used on a worker thread.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "nerava/config/config.h"

struct pg_conn;

namespace nerava::proxy {

class AdminPgConnection {
 public:
  // Connects as the monitor user (postgres.monitor) with statement_timeout = `timeout`.
  static absl::StatusOr<AdminPgConnection> Open(const config::Postgres& settings,
                                                const std::string& host, uint16_t port,
                                                std::chrono::milliseconds timeout);
  // The first column of the first row ("" for NULL); an error names the statement.
  absl::StatusOr<std::string> Value(const std::string& sql);

 private:
  struct Closer {
    void operator()(pg_conn* conn) const;
  };
  explicit AdminPgConnection(pg_conn* conn) : conn_(conn) {}
  std::unique_ptr<pg_conn, Closer> conn_;
};

// One Redis command (words joined by spaces, no quoting needed for what the switchover sends);
// the reply as text (status, bulk string, integer). Errors come back as a status.
absl::StatusOr<std::string> RedisCommand(const config::Redis& settings, const std::string& host,
                                         uint16_t port, const std::string& command,
                                         std::chrono::milliseconds timeout);

}  // namespace nerava::proxy
