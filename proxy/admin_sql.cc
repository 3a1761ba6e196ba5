#include "proxy/admin_sql.h"

#include <algorithm>
#include <vector>

#include "proxy/hiredis_util.h"
#include "proxy/libpq_util.h"

namespace nerava::proxy {
namespace {

std::string Trimmed(const char* text) {
  std::string out = text ? text : "";
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

}  // namespace

void AdminPgConnection::Closer::operator()(pg_conn* conn) const { PQfinish(conn); }

absl::StatusOr<AdminPgConnection> AdminPgConnection::Open(const config::Postgres& settings,
                                                          const std::string& host, uint16_t port,
                                                          std::chrono::milliseconds timeout) {
  const std::string port_text = std::to_string(port);
  const std::string sslmode = SslModeName(settings.backend_tls.mode);
  const std::string connect_timeout =
      std::to_string(std::max<int64_t>(2, (timeout.count() + 999) / 1000));
  const std::string options = "-c statement_timeout=" + std::to_string(timeout.count());
  std::vector<const char*> keys = {"host",    "port",           "user",
                                   "dbname",  "sslmode",        "application_name",
                                   "options", "connect_timeout"};
  std::vector<const char*> values = {host.c_str(),
                                     port_text.c_str(),
                                     settings.monitor_user.c_str(),
                                     settings.monitor_database.c_str(),
                                     sslmode.c_str(),
                                     "nerava-proxy switchover",
                                     options.c_str(),
                                     connect_timeout.c_str()};
  if (!settings.monitor_password.empty()) {
    keys.push_back("password");
    values.push_back(settings.monitor_password.c_str());
  }
  if (!settings.backend_tls.root_cert.empty()) {
    keys.push_back("sslrootcert");
    values.push_back(settings.backend_tls.root_cert.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  AdminPgConnection connection(PQconnectdbParams(keys.data(), values.data(), 0));
  if (!connection.conn_ || PQstatus(connection.conn_.get()) != CONNECTION_OK) {
    return absl::UnavailableError(
        "cannot connect to " + host + ":" + port_text + ": " +
        (connection.conn_ ? Trimmed(PQerrorMessage(connection.conn_.get())) : "out of memory"));
  }
  return connection;
}

absl::StatusOr<std::string> AdminPgConnection::Value(const std::string& sql) {
  PgResultPtr result(PQexec(conn_.get(), sql.c_str()));
  const ExecStatusType status = result ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    return absl::InternalError("\"" + sql + "\" failed: " + Trimmed(PQerrorMessage(conn_.get())));
  }
  if (status != PGRES_TUPLES_OK || PQntuples(result.get()) == 0) return std::string();
  return std::string(PQgetvalue(result.get(), 0, 0));
}

absl::StatusOr<std::string> RedisCommand(const config::Redis& settings, const std::string& host,
                                         uint16_t port, const std::string& command,
                                         std::chrono::milliseconds timeout) {
  const timeval tv = ToTimeval(timeout);
  RedisContextPtr context(
      redisConnectWithTimeout(host.c_str(), port, tv));
  const std::string where = host + ":" + std::to_string(port);
  if (!context || context->err) {
    return absl::UnavailableError("cannot connect to Redis " + where + ": " +
                                  (context ? context->errstr : "out of memory"));
  }
  redisSetTimeout(context.get(), tv);
  auto run = [&](const std::vector<std::string>& words) -> absl::StatusOr<std::string> {
    std::vector<const char*> argv;
    std::vector<size_t> lengths;
    for (const auto& word : words) {
      argv.push_back(word.data());
      lengths.push_back(word.size());
    }
    RedisReplyPtr reply(static_cast<redisReply*>(redisCommandArgv(
        context.get(), static_cast<int>(argv.size()), argv.data(), lengths.data())));
    if (!reply) return absl::UnavailableError("Redis " + where + ": " + context->errstr);
    switch (reply->type) {
      case REDIS_REPLY_ERROR:
        return absl::InternalError("Redis " + where + " answered " + words[0] + ": " +
                                   std::string(reply->str, reply->len));
      case REDIS_REPLY_STRING:
      case REDIS_REPLY_STATUS:
        return std::string(reply->str, reply->len);
      case REDIS_REPLY_INTEGER:
        return std::to_string(reply->integer);
      default:
        return std::string();
    }
  };
  if (!settings.backend_password.empty()) {
    std::vector<std::string> auth = {"AUTH"};
    if (!settings.backend_username.empty()) auth.push_back(settings.backend_username);
    auth.push_back(settings.backend_password);
    if (auto status = run(auth); !status.ok()) return status.status();
  }
  std::vector<std::string> words;
  size_t pos = 0;
  while (pos < command.size()) {
    size_t end = command.find(' ', pos);
    if (end == std::string::npos) end = command.size();
    if (end > pos) words.push_back(command.substr(pos, end - pos));
    pos = end + 1;
  }
  if (words.empty()) return absl::InvalidArgumentError("empty Redis command");
  return run(words);
}

}  // namespace nerava::proxy
