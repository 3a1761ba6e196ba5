// FunctionLoader: pg_proc of the primary -> FunctionPolicy snapshots. Runs on its own thread;
// every libpq call is non-blocking and waits with a deadline that also wakes for stop requests.
#include "proxy/function_loader.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <utility>

#include "proxy/libpq_util.h"

namespace nerava::proxy {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kDatabasesQuery =
    "SELECT datname FROM pg_catalog.pg_database"
    " WHERE datallowconn AND NOT datistemplate"
    " AND pg_catalog.has_database_privilege(datname, 'CONNECT') ORDER BY datname";
constexpr const char* kCatalogQuery =
    "SELECT p.proname, n.nspname, p.provolatile FROM pg_catalog.pg_proc p"
    " JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace";

// One libpq connection to one database of the primary, for one load.
class CatalogConnection {
 public:
  CatalogConnection(const config::Postgres& settings, const routing::NodeState& node,
                    const std::stop_token& stop)
      : settings_(settings), node_(node), stop_(stop) {}

  absl::Status Connect(const std::string& database) {
    const auto deadline = Clock::now() + FunctionLoader::kStepTimeout;
    const std::string port = std::to_string(node_.port);
    std::vector<const char*> keys = {"host",   "port",    "user",
                                     "dbname", "sslmode", "application_name"};
    std::vector<const char*> values = {node_.host.c_str(),
                                       port.c_str(),
                                       settings_.monitor_user.c_str(),
                                       database.c_str(),
                                       SslModeName(settings_.backend_tls.mode),
                                       "nerava-proxy function loader"};
    if (!settings_.monitor_password.empty()) {
      keys.push_back("password");
      values.push_back(settings_.monitor_password.c_str());
    }
    if (!settings_.backend_tls.root_cert.empty()) {
      keys.push_back("sslrootcert");
      values.push_back(settings_.backend_tls.root_cert.c_str());
    }
    keys.push_back(nullptr);
    values.push_back(nullptr);
    PgConnPtr conn(PQconnectStartParams(keys.data(), values.data(), 0));
    if (!conn) return absl::ResourceExhaustedError("libpq: out of memory");
    if (PQstatus(conn.get()) == CONNECTION_BAD) return Error(conn.get());
    PostgresPollingStatusType status = PGRES_POLLING_WRITING;
    while (status != PGRES_POLLING_OK) {
      if (status == PGRES_POLLING_FAILED) return Error(conn.get());
      const short events = status == PGRES_POLLING_READING ? POLLIN : POLLOUT;
      if (!WaitSocket(PQsocket(conn.get()), events, deadline, stop_)) return TimedOut("connect");
      status = PQconnectPoll(conn.get());
    }
    if (PQsetnonblocking(conn.get(), 1) != 0) return Error(conn.get());
    conn_ = std::move(conn);
    return absl::OkStatus();
  }

  // Runs `sql` (one statement) and returns its rows.
  absl::StatusOr<PgResultPtr> Query(const char* sql) {
    const auto deadline = Clock::now() + FunctionLoader::kStepTimeout;
    PGconn* conn = conn_.get();
    if (!PQsendQuery(conn, sql)) return Error(conn);
    for (;;) {
      int flushed = PQflush(conn);
      if (flushed == 0) break;
      if (flushed < 0) return Error(conn);
      if (!WaitSocket(PQsocket(conn), POLLOUT, deadline, stop_)) return TimedOut("query");
    }
    PgResultPtr last;
    for (;;) {
      while (PQisBusy(conn)) {
        if (!WaitSocket(PQsocket(conn), POLLIN, deadline, stop_)) return TimedOut("query");
        if (!PQconsumeInput(conn)) return Error(conn);
      }
      PgResultPtr next(PQgetResult(conn));
      if (!next) break;
      last = std::move(next);
    }
    if (!last) return absl::UnavailableError("no result");
    if (PQresultStatus(last.get()) != PGRES_TUPLES_OK) {
      return absl::UnavailableError(Trim(PQresultErrorMessage(last.get())));
    }
    return last;
  }

 private:
  static std::string Trim(std::string text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    return text;
  }
  static absl::Status Error(PGconn* conn) {
    return absl::UnavailableError(Trim(PQerrorMessage(conn)));
  }
  absl::Status TimedOut(const char* what) const {
    if (stop_.stop_requested()) return absl::CancelledError("stopping");
    return absl::DeadlineExceededError(std::string(what) + " timed out");
  }

  const config::Postgres& settings_;
  const routing::NodeState& node_;
  std::stop_token stop_;
  PgConnPtr conn_;
};

absl::Status ReadCatalog(CatalogConnection& conn, std::vector<routing::CatalogFunction>& out) {
  auto result = conn.Query(kCatalogQuery);
  if (!result.ok()) return result.status();
  PGresult* rows = result->get();
  if (PQnfields(rows) != 3) return absl::InternalError("pg_proc: unexpected columns");
  const int n = PQntuples(rows);
  out.reserve(out.size() + static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const char* volatility = PQgetvalue(rows, i, 2);
    out.push_back(routing::CatalogFunction{PQgetvalue(rows, i, 0), PQgetvalue(rows, i, 1),
                                           volatility[0] != '\0' ? volatility[0] : 'v'});
  }
  return absl::OkStatus();
}

}  // namespace

FunctionLoader::FunctionLoader(const config::Config& config, const TopologyHolder& topology,
                               FunctionPolicyHolder& policies)
    : settings_(*config.postgres), topology_(topology), policies_(policies) {}

FunctionLoader::~FunctionLoader() = default;

void FunctionLoader::Start() {
  thread_ = std::jthread([this](std::stop_token stop) { Run(std::move(stop)); });
}

routing::FunctionPolicy FunctionLoader::MakePolicy(
    const std::vector<routing::CatalogFunction>& catalog) const {
  routing::FunctionPolicy policy;
  policy.SetCatalog(catalog);
  policy.SetAllowlist(settings_.volatile_allowlist);
  return policy;
}

absl::StatusOr<std::vector<routing::CatalogFunction>> FunctionLoader::Load(
    const routing::NodeState& primary, std::stop_token stop, size_t& databases) const {
  std::vector<routing::CatalogFunction> catalog;
  std::vector<std::string> names;
  {
    CatalogConnection conn(settings_, primary, stop);
    if (auto status = conn.Connect(settings_.monitor_database); !status.ok()) return status;
    auto list = conn.Query(kDatabasesQuery);
    if (!list.ok()) return list.status();
    for (int i = 0; i < PQntuples(list->get()); ++i) {
      std::string name = PQgetvalue(list->get(), i, 0);
      if (name != settings_.monitor_database) names.push_back(std::move(name));
    }
    if (auto status = ReadCatalog(conn, catalog); !status.ok()) return status;
  }
  databases = 1;
  if (names.size() + 1 > kMaxDatabases) {
    spdlog::warn(
        "function loader: {} databases, reading pg_proc of the first {} only; functions "
        "of the others go to the primary",
        names.size() + 1, kMaxDatabases);
    names.resize(kMaxDatabases - 1);
  }
  for (const std::string& name : names) {
    if (stop.stop_requested()) return absl::CancelledError("stopping");
    // A database we cannot read only leaves its functions unknown, hence on the primary.
    CatalogConnection conn(settings_, primary, stop);
    absl::Status status = conn.Connect(name);
    if (status.ok()) status = ReadCatalog(conn, catalog);
    if (!status.ok()) {
      spdlog::debug("function loader: skipping database {}: {}", name,
                    std::string(status.message()));
      continue;
    }
    ++databases;
  }
  return catalog;
}

void FunctionLoader::Run(std::stop_token stop) {
  std::mutex mutex;
  std::condition_variable_any wake;
  std::string loaded_primary;  // node name of the last primary we attempted to load from
  bool ever_loaded = false;
  std::string last_error;
  auto next_load = Clock::now();
  while (!stop.stop_requested()) {
    routing::TopologySnapshot snapshot = topology_.Get();
    const routing::NodeState* primary = snapshot->postgres.Primary();
    if (primary != nullptr && primary->up) {
      const std::string key = primary->name;
      const bool changed = key != loaded_primary;
      if (changed) next_load = Clock::now();  // a new primary: its catalog now
      if (Clock::now() >= next_load) {
        loaded_primary = key;
        size_t databases = 0;
        auto catalog = Load(*primary, stop, databases);
        if (stop.stop_requested()) break;
        if (catalog.ok()) {
          auto policy = std::make_shared<const routing::FunctionPolicy>(MakePolicy(*catalog));
          const size_t known = policy->known_functions();
          policies_.Publish(std::move(policy));
          const auto log_level = !ever_loaded || changed || !last_error.empty()
                                     ? spdlog::level::info
                                     : spdlog::level::debug;
          spdlog::log(log_level,
                      "function loader: {} functions from pg_proc of {} database(s) on {}", known,
                      databases, primary->name);
          ever_loaded = true;
          last_error.clear();
          next_load = Clock::now() + kReloadInterval;
        } else {
          // Keep the last policy (or the fallback); say so once per distinct error.
          std::string error(catalog.status().message());
          if (error != last_error) {
            spdlog::warn("function loader: cannot read pg_proc on {}: {}", primary->name, error);
            last_error = std::move(error);
          }
          next_load = Clock::now() + kRetryInterval;
        }
      }
    }
    std::unique_lock lock(mutex);
    wake.wait_for(lock, stop, kPollInterval, [] { return false; });
  }
}

}  // namespace nerava::proxy
