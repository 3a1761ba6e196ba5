// Workloads and the connection interface the runner drives.
//
//   runner (one poll loop per thread)
//     │ Send(op) ──► Connection ──► bytes queued (libpq pipeline / hiredis output buffer)
//     │ Flush()  ──► socket
//     │ Read()   ◄── socket: replies paired FIFO with the ops in flight ──► Completion
//
// A connection may hold several ops in flight (pipelining: the pipelined Redis workload, and the
// open loop when requests arrive faster than one connection answers). Read-after-write is two
// round trips inside one op: the connection sends the SELECT itself when the INSERT returns.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace nerava::bench {

using Clock = std::chrono::steady_clock;

enum class Workload {
  kPgSelect,        // select abalance from pgbench_accounts where aid = $1 (pgbench -i)
  kPgInsert,        // insert into nerava_bench ... returning id
  kPgMixed,         // 90 % select, 10 % insert
  kPgReadAfterWrite,  // insert, then select that row on the same connection
  kRedisGet,
  kRedisSet,
  kRedisMixed,      // 90 % GET, 10 % SET
  kRedisPipeline,   // GET, `depth` in flight per connection
};

const char* WorkloadName(Workload workload);
bool IsPostgres(Workload workload);

struct WorkloadOptions {
  Workload workload = Workload::kPgSelect;
  bool pg_prepared = false;      // named prepared statements instead of unnamed Parse each time
  int64_t pg_accounts = 100000;  // aid range (pgbench scale x 100000), read at setup
  int64_t redis_keys = 10000;    // key space: key:0 .. key:N-1
  size_t redis_value_size = 16;
  int connect_timeout_seconds = 5;
};

// What one op is; the connection picks it, the runner only stamps the start time.
enum class OpKind : uint8_t { kSelect, kInsert, kReadAfterWrite, kGet, kSet };

struct Completion {
  Clock::time_point start;  // intended (open loop) or actual (closed loop) send time
  bool ok = true;
  bool stale = false;  // read-after-write: the row was not visible on the read
};

class Connection {
 public:
  virtual ~Connection() = default;
  virtual int fd() const = 0;
  // Queues one op of the workload; `start` is returned in its Completion.
  virtual absl::Status Send(Clock::time_point start) = 0;
  // Writes queued bytes; true when some remain (wait for POLLOUT).
  virtual absl::StatusOr<bool> Flush() = 0;
  // Consumes what the socket has and appends a Completion per finished op.
  virtual absl::Status Read(std::vector<Completion>& done) = 0;
  virtual size_t in_flight() const = 0;
  // Start times of the ops still in flight (counted as timeouts when a round ends).
  virtual std::vector<Clock::time_point> pending_starts() const = 0;
  // The first error a server answered on this connection (empty when none).
  virtual const std::string& first_error() const = 0;
};

// Opens a connection to `url` ready for `options.workload` (blocking; bounded by the connect
// timeout). Errors: Unavailable (cannot connect), FailedPrecondition (schema missing).
absl::StatusOr<std::unique_ptr<Connection>> ConnectPg(const std::string& url,
                                                      const WorkloadOptions& options,
                                                      uint64_t seed);
absl::StatusOr<std::unique_ptr<Connection>> ConnectRedis(const std::string& url,
                                                         const WorkloadOptions& options,
                                                         uint64_t seed);

// One-time preparation through `url` before any round: PostgreSQL reads the pgbench scale and
// creates nerava_bench; Redis fills the key space so GETs hit. Fills options.pg_accounts.
absl::Status PreparePg(const std::string& url, WorkloadOptions& options);
absl::Status PrepareRedis(const std::string& url, const WorkloadOptions& options);

}  // namespace nerava::bench
