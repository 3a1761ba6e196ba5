// `show config`: the effective configuration in the file's own schema, so that the output can be
// read back by LoadString (passwords aside, which are masked).
#include <string>
#include <string_view>

#include "config/units.h"
#include "nerava/config/config.h"
#include "yaml-cpp/yaml.h"

namespace nerava::config {
namespace {

using internal::FormatDuration;
using internal::FormatSize;

std::string Mask(const std::string& password) { return password.empty() ? "" : "***"; }

void Field(YAML::Emitter& out, std::string_view key, const std::string& value) {
  out << YAML::Key << std::string(key) << YAML::Value << value;
}
void Field(YAML::Emitter& out, std::string_view key, int value) {
  out << YAML::Key << std::string(key) << YAML::Value << value;
}
void Field(YAML::Emitter& out, std::string_view key, bool value) {
  out << YAML::Key << std::string(key) << YAML::Value << value;
}

void Nodes(YAML::Emitter& out, const std::vector<Node>& nodes) {
  out << YAML::Key << "nodes" << YAML::Value << YAML::BeginSeq;
  for (const Node& n : nodes) {
    out << YAML::Flow << YAML::BeginMap;
    Field(out, "name", n.name);
    Field(out, "region", n.region);
    Field(out, "host", n.host);
    Field(out, "port", static_cast<int>(n.port));
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;
}

void MaxLagField(YAML::Emitter& out, const MaxLag& lag) {
  out << YAML::Key << "max_lag" << YAML::Value << YAML::Flow << YAML::BeginMap;
  Field(out, "seconds", FormatDuration(lag.seconds));
  Field(out, "bytes", FormatSize(lag.bytes));
  out << YAML::EndMap;
}

void TlsField(YAML::Emitter& out, const ServerTls& tls) {
  out << YAML::Key << "tls" << YAML::Value << YAML::BeginMap;
  Field(out, "cert", tls.cert_file);
  Field(out, "key", tls.key_file);
  out << YAML::EndMap;
}

std::string_view AuthName(AuthMethod auth) {
  switch (auth) {
    case AuthMethod::kScramSha256:
      return "scram-sha-256";
    case AuthMethod::kMd5:
      return "md5";
    case AuthMethod::kTrust:
      return "trust";
  }
  return "scram-sha-256";
}

std::string_view SslModeName(SslMode mode) {
  switch (mode) {
    case SslMode::kDisable:
      return "disable";
    case SslMode::kPrefer:
      return "prefer";
    case SslMode::kRequire:
      return "require";
    case SslMode::kVerifyFull:
      return "verify-full";
  }
  return "prefer";
}

void PostgresSection(YAML::Emitter& out, const Postgres& pg) {
  out << YAML::Key << "postgres" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "listen" << YAML::Value << YAML::BeginMap;
  Field(out, "rw", pg.listen_rw.ToString());
  if (pg.listen_ro.has_value()) Field(out, "ro", pg.listen_ro->ToString());
  out << YAML::EndMap;
  Field(out, "auth", std::string(AuthName(pg.auth)));
  out << YAML::Key << "users" << YAML::Value << YAML::BeginSeq;
  for (const PgUser& u : pg.users) {
    out << YAML::Flow << YAML::BeginMap;
    Field(out, "name", u.name);
    Field(out, "password", Mask(u.password));
    if (!u.backend_password.empty()) Field(out, "backend_password", Mask(u.backend_password));
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;
  Nodes(out, pg.nodes);
  MaxLagField(out, pg.max_lag);
  TlsField(out, pg.tls);
  out << YAML::Key << "backend_tls" << YAML::Value << YAML::BeginMap;
  Field(out, "sslmode", std::string(SslModeName(pg.backend_tls.mode)));
  Field(out, "root_cert", pg.backend_tls.root_cert);
  out << YAML::EndMap;
  Field(out, "max_message_size", FormatSize(pg.max_message_bytes));
  Field(out, "max_client_connections", pg.max_client_connections);
  Field(out, "connect_timeout", FormatDuration(pg.connect_timeout));
  Field(out, "server_idle_timeout", FormatDuration(pg.server_idle_timeout));
  out << YAML::Key << "volatile_allowlist" << YAML::Value << YAML::Flow << pg.volatile_allowlist;
  out << YAML::Key << "monitor" << YAML::Value << YAML::BeginMap;
  Field(out, "user", pg.monitor_user);
  Field(out, "password", Mask(pg.monitor_password));
  Field(out, "database", pg.monitor_database);
  out << YAML::EndMap;
  out << YAML::EndMap;
}

void RedisSection(YAML::Emitter& out, const Redis& r) {
  out << YAML::Key << "redis" << YAML::Value << YAML::BeginMap;
  Field(out, "listen", r.listen.ToString());
  Nodes(out, r.nodes);
  Field(out, "password", Mask(r.password));
  Field(out, "backend_username", r.backend_username);
  Field(out, "backend_password", Mask(r.backend_password));
  TlsField(out, r.tls);
  Field(out, "backend_tls", r.backend_tls);
  Field(out, "backend_root_cert", r.backend_root_cert);
  MaxLagField(out, r.max_lag);
  Field(out, "max_pipeline", r.max_pipeline);
  Field(out, "max_client_connections", r.max_client_connections);
  Field(out, "connect_timeout", FormatDuration(r.connect_timeout));
  Field(out, "shared_connections", r.shared_connections);
  if (!r.sentinels.empty() || !r.sentinel_master.empty()) {
    out << YAML::Key << "sentinel" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "addresses" << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (const Endpoint& e : r.sentinels) out << e.ToString();
    out << YAML::EndSeq;
    Field(out, "master", r.sentinel_master);
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
}

}  // namespace

std::string DumpMasked(const Config& c) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  Field(out, "region", c.region);
  Field(out, "primary_region", c.primary_region);
  if (c.postgres.has_value()) PostgresSection(out, *c.postgres);
  if (c.redis.has_value()) RedisSection(out, *c.redis);
  out << YAML::Key << "monitor" << YAML::Value << YAML::BeginMap;
  Field(out, "interval", FormatDuration(c.monitor.interval));
  Field(out, "failure_threshold", c.monitor.failure_threshold);
  Field(out, "timeout", FormatDuration(c.monitor.timeout));
  out << YAML::EndMap;
  out << YAML::Key << "failover" << YAML::Value << YAML::BeginMap;
  Field(out, "wait", FormatDuration(c.failover.wait));
  out << YAML::EndMap;
  out << YAML::Key << "server_keepalive" << YAML::Value << YAML::BeginMap;
  Field(out, "idle", FormatDuration(c.server_keepalive.idle));
  Field(out, "interval", FormatDuration(c.server_keepalive.interval));
  Field(out, "count", c.server_keepalive.count);
  out << YAML::EndMap;
  out << YAML::Key << "admin" << YAML::Value << YAML::BeginMap;
  Field(out, "socket", c.admin.socket);
  Field(out, "http", c.admin.http.has_value() ? c.admin.http->ToString() : std::string());
  out << YAML::EndMap;
  Field(out, "workers", c.workers);
  Field(out, "shutdown_timeout", FormatDuration(c.shutdown_timeout));
  Field(out, "log_level", c.log_level);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace nerava::config
