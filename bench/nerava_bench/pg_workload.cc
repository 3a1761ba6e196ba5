// PostgreSQL ops over libpq in pipeline mode, non-blocking.
//
//   Send: [Parse] Bind Describe Execute Sync   (one Sync per op: each op is its own implicit
//                                               transaction, as a normal client's would be, so a
//                                               routing proxy may send each one elsewhere)
//   Read: per op  result(s) … NULL … PIPELINE_SYNC  ──► the op at the front of `pending_` is done
//
// Read-after-write: when the INSERT's sync arrives the SELECT of the returned id is queued at
// the back; the op completes when that SELECT's sync arrives.
#include <libpq-fe.h>

#include <deque>
#include <string>

#include "nerava_bench/workload.h"

namespace nerava::bench {
namespace {

constexpr const char* kSelectSql = "select abalance from pgbench_accounts where aid = $1";
constexpr const char* kInsertSql = "insert into nerava_bench (payload) values ($1) returning id";
constexpr const char* kReadBackSql = "select payload from nerava_bench where id = $1";
constexpr const char* kCreateSql =
    "create table if not exists nerava_bench (id bigserial primary key, payload text not null)";

struct PgDeleter {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
using PgConnPtr = std::unique_ptr<PGconn, PgDeleter>;

struct ResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using PgResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

absl::StatusOr<PgConnPtr> Open(const std::string& url, int connect_timeout_seconds) {
  const std::string timeout = std::to_string(connect_timeout_seconds);
  const char* keys[] = {"dbname", "connect_timeout", "application_name", nullptr};
  const char* values[] = {url.c_str(), timeout.c_str(), "nerava-bench", nullptr};
  PgConnPtr conn(PQconnectdbParams(keys, values, /*expand_dbname=*/1));
  if (conn == nullptr || PQstatus(conn.get()) != CONNECTION_OK) {
    return absl::UnavailableError(conn ? PQerrorMessage(conn.get()) : "out of memory");
  }
  return conn;
}

absl::StatusOr<PgResultPtr> Exec(PGconn* conn, const char* sql) {
  PgResultPtr result(PQexec(conn, sql));
  const ExecStatusType status = PQresultStatus(result.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    return absl::FailedPreconditionError(std::string(sql) + ": " + PQerrorMessage(conn));
  }
  return result;
}

class PgConnection final : public Connection {
 public:
  PgConnection(PgConnPtr conn, const WorkloadOptions& options, uint64_t seed)
      : conn_(std::move(conn)), options_(options), rng_(seed) {}

  int fd() const override { return PQsocket(conn_.get()); }
  size_t in_flight() const override { return pending_.size(); }
  std::vector<Clock::time_point> pending_starts() const override {
    std::vector<Clock::time_point> out;
    for (const Pending& p : pending_) out.push_back(p.start);
    return out;
  }
  const std::string& first_error() const override { return first_error_; }

  absl::Status Send(Clock::time_point start) override {
    switch (options_.workload) {
      case Workload::kPgSelect:
        return SendOp(OpKind::kSelect, start);
      case Workload::kPgInsert:
        return SendOp(OpKind::kInsert, start);
      case Workload::kPgMixed:
        return SendOp(Percent() < 90 ? OpKind::kSelect : OpKind::kInsert, start);
      case Workload::kPgReadAfterWrite:
        return SendOp(OpKind::kReadAfterWrite, start);
      default:
        return absl::InvalidArgumentError("not a PostgreSQL workload");
    }
  }

  absl::StatusOr<bool> Flush() override {
    const int rc = PQflush(conn_.get());
    if (rc < 0) return absl::UnavailableError(PQerrorMessage(conn_.get()));
    return rc == 1;
  }

  absl::Status Read(std::vector<Completion>& done) override {
    if (PQconsumeInput(conn_.get()) == 0) {
      return absl::UnavailableError(PQerrorMessage(conn_.get()));
    }
    int nulls_in_a_row = 0;
    while (!pending_.empty() && PQisBusy(conn_.get()) == 0) {
      PgResultPtr result(PQgetResult(conn_.get()));
      if (result == nullptr) {
        // A NULL ends one query's results; two in a row means nothing more is buffered.
        if (++nulls_in_a_row == 2) break;
        continue;
      }
      nulls_in_a_row = 0;
      Pending& front = pending_.front();
      switch (PQresultStatus(result.get())) {
        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
          if (front.kind == OpKind::kReadAfterWrite && !front.reading_back) {
            if (PQntuples(result.get()) == 1) front.id = PQgetvalue(result.get(), 0, 0);
          } else if (front.kind == OpKind::kReadAfterWrite) {
            front.stale = PQntuples(result.get()) == 0;
          }
          break;
        case PGRES_PIPELINE_SYNC: {
          Pending op = std::move(front);
          pending_.pop_front();
          if (op.kind == OpKind::kReadAfterWrite && !op.reading_back && op.ok &&
              !op.id.empty()) {
            op.reading_back = true;
            if (absl::Status s = Queue(std::move(op)); !s.ok()) return s;
            break;
          }
          done.push_back({op.start, op.ok, op.stale});
          break;
        }
        default:  // FATAL_ERROR, PIPELINE_ABORTED: the op failed, its sync still follows
          front.ok = false;
          if (first_error_.empty()) first_error_ = PQresultErrorMessage(result.get());
          break;
      }
    }
    if (PQstatus(conn_.get()) == CONNECTION_BAD) {
      return absl::UnavailableError(PQerrorMessage(conn_.get()));
    }
    return absl::OkStatus();
  }

 private:
  struct Pending {
    OpKind kind = OpKind::kSelect;
    Clock::time_point start;
    bool reading_back = false;  // read-after-write: the SELECT is in flight
    std::string id;             // read-after-write: the inserted row
    bool ok = true;
    bool stale = false;
  };

  int Percent() { return static_cast<int>(rng_() % 100); }

  absl::Status SendOp(OpKind kind, Clock::time_point start) {
    Pending op;
    op.kind = kind;
    op.start = start;
    return Queue(std::move(op));
  }

  absl::Status Queue(Pending op) {
    std::string param;
    const char* sql = nullptr;
    const char* name = nullptr;
    if (op.kind == OpKind::kSelect) {
      param = std::to_string(1 + static_cast<int64_t>(rng_() % options_.pg_accounts));
      sql = kSelectSql;
      name = "nerava_select";
    } else if (op.reading_back) {
      param = op.id;
      sql = kReadBackSql;
      name = "nerava_read_back";
    } else {
      param = "payload-" + std::to_string(rng_() % 1000000);
      sql = kInsertSql;
      name = "nerava_insert";
    }
    const char* values[] = {param.c_str()};
    const int sent = options_.pg_prepared
                         ? PQsendQueryPrepared(conn_.get(), name, 1, values, nullptr, nullptr, 0)
                         : PQsendQueryParams(conn_.get(), sql, 1, nullptr, values, nullptr,
                                             nullptr, 0);
    if (sent == 0 || PQpipelineSync(conn_.get()) == 0) {
      return absl::UnavailableError(PQerrorMessage(conn_.get()));
    }
    pending_.push_back(std::move(op));
    return absl::OkStatus();
  }

  PgConnPtr conn_;
  const WorkloadOptions& options_;
  std::mt19937_64 rng_;
  std::deque<Pending> pending_;
  std::string first_error_;
};

}  // namespace

const char* WorkloadName(Workload workload) {
  switch (workload) {
    case Workload::kPgSelect: return "pg-select";
    case Workload::kPgInsert: return "pg-insert";
    case Workload::kPgMixed: return "pg-mixed";
    case Workload::kPgReadAfterWrite: return "pg-read-after-write";
    case Workload::kRedisGet: return "redis-get";
    case Workload::kRedisSet: return "redis-set";
    case Workload::kRedisMixed: return "redis-mixed";
    case Workload::kRedisPipeline: return "redis-pipeline";
  }
  return "?";
}

bool IsPostgres(Workload workload) {
  return workload == Workload::kPgSelect || workload == Workload::kPgInsert ||
         workload == Workload::kPgMixed || workload == Workload::kPgReadAfterWrite;
}

absl::Status PreparePg(const std::string& url, WorkloadOptions& options) {
  absl::StatusOr<PgConnPtr> conn = Open(url, options.connect_timeout_seconds);
  if (!conn.ok()) return conn.status();
  if (options.workload == Workload::kPgSelect || options.workload == Workload::kPgMixed) {
    absl::StatusOr<PgResultPtr> scale = Exec(conn->get(), "select count(*) from pgbench_branches");
    if (!scale.ok()) {
      return absl::FailedPreconditionError("pgbench tables missing (run pgbench -i): " +
                                           std::string(scale.status().message()));
    }
    options.pg_accounts = 100000 * std::max<int64_t>(1, std::stoll(PQgetvalue(scale->get(), 0, 0)));
  }
  if (options.workload != Workload::kPgSelect) {
    if (absl::StatusOr<PgResultPtr> r = Exec(conn->get(), kCreateSql); !r.ok()) return r.status();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Connection>> ConnectPg(const std::string& url,
                                                      const WorkloadOptions& options,
                                                      uint64_t seed) {
  absl::StatusOr<PgConnPtr> conn = Open(url, options.connect_timeout_seconds);
  if (!conn.ok()) return conn.status();
  PGconn* raw = conn->get();
  if (options.pg_prepared) {
    const struct {
      const char* name;
      const char* sql;
    } statements[] = {{"nerava_select", kSelectSql},
                      {"nerava_insert", kInsertSql},
                      {"nerava_read_back", kReadBackSql}};
    for (const auto& s : statements) {
      if (options.workload == Workload::kPgSelect && s.sql != kSelectSql) continue;
      PgResultPtr r(PQprepare(raw, s.name, s.sql, 0, nullptr));
      if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
        return absl::FailedPreconditionError(std::string("prepare: ") + PQerrorMessage(raw));
      }
    }
  }
  if (PQsetnonblocking(raw, 1) != 0 || PQenterPipelineMode(raw) == 0) {
    return absl::InternalError(std::string("pipeline mode: ") + PQerrorMessage(raw));
  }
  return std::unique_ptr<Connection>(
      std::make_unique<PgConnection>(std::move(*conn), options, seed));
}

}  // namespace nerava::bench
