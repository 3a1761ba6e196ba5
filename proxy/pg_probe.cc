// PostgreSQL node check with libpq: connect (non-blocking, bounded) once, then one query per
// check that returns role, positions and timeline in a single round trip. A check that times out
// leaves its query pending and the next checks wait for that answer, as the Redis probe does: a
// server too loaded to answer within the timeout is even slower to fork and authenticate a new
// connection, so reconnecting made a busy node look dead.
#include <libpq-fe.h>
#include <poll.h>

#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proxy/libpq_util.h"
#include "proxy/node_probe.h"

namespace nerava::proxy {
namespace {

using Clock = std::chrono::steady_clock;

// Positions as plain byte numbers (pg_lsn - '0/0'); the timeline of a primary from the name of
// its current WAL file, which changes at promotion, unlike pg_control_checkpoint() which waits
// for the next checkpoint.
constexpr const char* kCheckQuery =
    "SELECT pg_is_in_recovery(),"
    " CASE WHEN pg_is_in_recovery() THEN NULL"
    "      ELSE (pg_current_wal_lsn() - '0/0')::text END,"
    " (pg_last_wal_receive_lsn() - '0/0')::text,"
    " (pg_last_wal_replay_lsn() - '0/0')::text,"
    " CASE WHEN pg_is_in_recovery()"
    "      THEN (SELECT received_tli FROM pg_stat_wal_receiver)"
    "      ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,"
    " (SELECT status FROM pg_stat_wal_receiver),"
    // Where the next record goes: an acknowledged commit is always below it, even with
    // synchronous_commit = off, when the write position above can trail the commit.
    " CASE WHEN pg_is_in_recovery() THEN NULL"
    "      ELSE (pg_current_wal_insert_lsn() - '0/0')::text END";

uint64_t ParseU64(const char* text) { return text ? std::strtoull(text, nullptr, 10) : 0; }

class PgProbe final : public NodeProbe {
 public:
  PgProbe(const config::Node& node, PgProbeCredentials credentials, int patience)
      : node_(node), credentials_(std::move(credentials)), patience_(patience) {}

  ProbeResult Check(std::chrono::milliseconds timeout) override {
    const auto deadline = Clock::now() + timeout;
    if (conn_ && asked_at_) return Await(deadline, /*late=*/true);
    ProbeResult result;
    if (!conn_ || PQstatus(conn_.get()) != CONNECTION_OK) {
      conn_.reset();
      if (auto error = Connect(deadline); !error.empty()) {
        result.error = std::move(error);
        return result;
      }
    }
    if (!PQsendQuery(conn_.get(), kCheckQuery)) {
      result.error = PQerrorMessage(conn_.get());
      conn_.reset();
      return result;
    }
    asked_at_ = Clock::now();
    unanswered_checks_ = 0;
    return Await(deadline, /*late=*/false);
  }

 private:
  enum class Wait { kDone, kTimedOut, kFailed };

  // Waits for the pending query's answer until the deadline.
  ProbeResult Await(Clock::time_point deadline, bool late) {
    ProbeResult result;
    std::string error;
    const Wait wait = Collect(deadline, error);
    if (wait != Wait::kDone) {
      if (wait == Wait::kTimedOut) {
        const auto waited =
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - *asked_at_);
        result.error = "no answer for " + std::to_string(waited.count()) + " ms";
        // Given up after patience_ checks: by then the node is marked down, and the connection
        // may be dead without a reset.
        if (++unanswered_checks_ < patience_) return result;  // still waiting for it
      } else {
        result.error = std::move(error);
      }
      Forget();
      return result;
    }
    PgResultPtr res = std::move(answer_);
    const Clock::time_point asked_at = *asked_at_;
    asked_at_.reset();
    if (!res) {
      result.error = "no result";
      Forget();
      return result;
    }
    if (PQresultStatus(res.get()) != PGRES_TUPLES_OK || PQntuples(res.get()) != 1) {
      result.error = PQresultErrorMessage(res.get());
      Forget();
      return result;
    }
    result.late = late;
    result.asked_at = asked_at;
    Read(res.get(), result);
    return result;
  }

  // The check query's one row.
  static void Read(const PGresult* res, ProbeResult& result) {
    const bool in_recovery = PQgetvalue(res, 0, 0)[0] == 't';
    result.ok = true;
    result.role = in_recovery ? routing::Role::kReplica : routing::Role::kPrimary;
    if (in_recovery) {
      result.received_position = ParseU64(PQgetvalue(res, 0, 2));
      result.position = ParseU64(PQgetvalue(res, 0, 3));
      // The receive position can be behind replay right after start-up (it starts at the
      // segment boundary); the replica holds at least what it replayed.
      if (result.received_position < result.position) result.received_position = result.position;
      result.link_up = std::string_view(PQgetvalue(res, 0, 5)) == "streaming";
    } else {
      result.position = ParseU64(PQgetvalue(res, 0, 1));
      result.received_position = result.position;
      result.commit_position = ParseU64(PQgetvalue(res, 0, 6));
    }
    result.timeline = static_cast<uint32_t>(ParseU64(PQgetvalue(res, 0, 4)));
  }

  // A timed-out or broken connection is not reused.
  void Forget() {
    conn_.reset();
    answer_.reset();
    asked_at_.reset();
  }

  std::string Connect(Clock::time_point deadline) {
    const std::string port = std::to_string(node_.port);
    const std::string sslmode = SslModeName(credentials_.sslmode);
    std::vector<const char*> keys = {"host", "port", "user", "dbname", "sslmode",
                                     "application_name"};
    std::vector<const char*> values = {node_.host.c_str(),
                                       port.c_str(),
                                       credentials_.user.c_str(),
                                       credentials_.database.c_str(),
                                       sslmode.c_str(),
                                       "nerava-proxy monitor"};
    if (!credentials_.password.empty()) {
      keys.push_back("password");
      values.push_back(credentials_.password.c_str());
    }
    if (!credentials_.root_cert.empty()) {
      keys.push_back("sslrootcert");
      values.push_back(credentials_.root_cert.c_str());
    }
    keys.push_back(nullptr);
    values.push_back(nullptr);
    PgConnPtr conn(PQconnectStartParams(keys.data(), values.data(), 0));
    if (!conn) return "out of memory";
    if (PQstatus(conn.get()) == CONNECTION_BAD) return PQerrorMessage(conn.get());
    PostgresPollingStatusType poll_status = PGRES_POLLING_WRITING;
    while (poll_status != PGRES_POLLING_OK) {
      if (poll_status == PGRES_POLLING_FAILED) return PQerrorMessage(conn.get());
      const short events = poll_status == PGRES_POLLING_READING ? POLLIN : POLLOUT;
      if (!WaitSocket(PQsocket(conn.get()), events, deadline)) return "connect timed out";
      poll_status = PQconnectPoll(conn.get());
    }
    if (PQsetnonblocking(conn.get(), 1) != 0) return PQerrorMessage(conn.get());
    conn_ = std::move(conn);
    return {};
  }

  // Sends what is unsent and reads results until the query is complete; the last result is
  // kept in answer_ across checks that time out on the way.
  Wait Collect(Clock::time_point deadline, std::string& error) {
    PGconn* conn = conn_.get();
    for (;;) {
      const int flushed = PQflush(conn);
      if (flushed == 0) break;
      if (flushed < 0) {
        error = PQerrorMessage(conn);
        return Wait::kFailed;
      }
      if (!WaitSocket(PQsocket(conn), POLLOUT, deadline)) return Wait::kTimedOut;
    }
    for (;;) {
      while (PQisBusy(conn)) {
        if (!WaitSocket(PQsocket(conn), POLLIN, deadline)) return Wait::kTimedOut;
        if (!PQconsumeInput(conn)) {
          error = PQerrorMessage(conn);
          return Wait::kFailed;
        }
      }
      PGresult* next = PQgetResult(conn);
      if (!next) return Wait::kDone;
      answer_.reset(next);
    }
  }

  config::Node node_;
  PgProbeCredentials credentials_;
  PgConnPtr conn_;
  const int patience_;
  std::optional<Clock::time_point> asked_at_;  // the check query is pending on conn_ since then
  PgResultPtr answer_;                         // its result so far
  int unanswered_checks_ = 0;                  // checks that timed out waiting for it
};

}  // namespace

std::unique_ptr<NodeProbe> MakePgProbe(const config::Node& node, PgProbeCredentials credentials,
                                       int patience) {
  return std::make_unique<PgProbe>(node, std::move(credentials), patience);
}

}  // namespace nerava::proxy
