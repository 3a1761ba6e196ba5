// PostgreSQL node check with libpq: connect (non-blocking, bounded) once, then one query per
// check that returns role, positions and timeline in a single round trip.
#include <libpq-fe.h>
#include <poll.h>

#include <cstdlib>
#include <memory>
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
  PgProbe(const config::Node& node, PgProbeCredentials credentials)
      : node_(node), credentials_(std::move(credentials)) {}

  ProbeResult Check(std::chrono::milliseconds timeout) override {
    const auto deadline = Clock::now() + timeout;
    ProbeResult result;
    if (!conn_ || PQstatus(conn_.get()) != CONNECTION_OK) {
      conn_.reset();
      if (auto error = Connect(deadline); !error.empty()) {
        result.error = std::move(error);
        return result;
      }
    }
    PGresult* raw = nullptr;
    if (auto error = Query(deadline, &raw); !error.empty()) {
      conn_.reset();  // a timed-out or broken connection is not reused
      result.error = std::move(error);
      return result;
    }
    PgResultPtr res(raw);
    if (PQresultStatus(res.get()) != PGRES_TUPLES_OK || PQntuples(res.get()) != 1) {
      result.error = PQresultErrorMessage(res.get());
      conn_.reset();
      return result;
    }
    const bool in_recovery = PQgetvalue(res.get(), 0, 0)[0] == 't';
    result.ok = true;
    result.role = in_recovery ? routing::Role::kReplica : routing::Role::kPrimary;
    if (in_recovery) {
      result.received_position = ParseU64(PQgetvalue(res.get(), 0, 2));
      result.position = ParseU64(PQgetvalue(res.get(), 0, 3));
      // The receive position can be behind replay right after start-up (it starts at the
      // segment boundary); the replica holds at least what it replayed.
      if (result.received_position < result.position) result.received_position = result.position;
      result.link_up = std::string_view(PQgetvalue(res.get(), 0, 5)) == "streaming";
    } else {
      result.position = ParseU64(PQgetvalue(res.get(), 0, 1));
      result.received_position = result.position;
      result.commit_position = ParseU64(PQgetvalue(res.get(), 0, 6));
    }
    result.timeline = static_cast<uint32_t>(ParseU64(PQgetvalue(res.get(), 0, 4)));
    return result;
  }

 private:
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

  std::string Query(Clock::time_point deadline, PGresult** out) {
    PGconn* conn = conn_.get();
    if (!PQsendQuery(conn, kCheckQuery)) return PQerrorMessage(conn);
    while (PQflush(conn) == 1) {
      if (!WaitSocket(PQsocket(conn), POLLOUT, deadline)) return "check timed out";
    }
    PGresult* last = nullptr;
    for (;;) {
      while (PQisBusy(conn)) {
        if (!WaitSocket(PQsocket(conn), POLLIN, deadline)) {
          PQclear(last);
          return "check timed out";
        }
        if (!PQconsumeInput(conn)) {
          PQclear(last);
          return PQerrorMessage(conn);
        }
      }
      PGresult* next = PQgetResult(conn);
      if (!next) break;
      PQclear(last);
      last = next;
    }
    if (!last) return "no result";
    *out = last;
    return {};
  }

  config::Node node_;
  PgProbeCredentials credentials_;
  PgConnPtr conn_;
};

}  // namespace

std::unique_ptr<NodeProbe> MakePgProbe(const config::Node& node, PgProbeCredentials credentials) {
  return std::make_unique<PgProbe>(node, std::move(credentials));
}

}  // namespace nerava::proxy
