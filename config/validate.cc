#include "config/validate.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "config/text.h"

namespace nerava::config::internal {
namespace {

using std::chrono::milliseconds;

void CheckNodes(std::string_view section, const std::vector<Node>& nodes, ErrorList& errors) {
  if (nodes.empty()) {
    errors.Add(Cat(section, ".nodes"), "at least one node is required");
    return;
  }
  std::map<std::string, size_t> first_index;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].name.empty()) continue;  // already reported while reading
    const auto [it, inserted] = first_index.emplace(nodes[i].name, i);
    if (!inserted) {
      errors.Add(Cat(section, ".nodes[", i, "].name"),
                 Cat("duplicate node name \"", nodes[i].name, "\" (also ", section, ".nodes[",
                     it->second, "])"));
    }
  }
}

void CheckServerTls(std::string_view section, const ServerTls& tls, ErrorList& errors) {
  if (!tls.cert_file.empty() && tls.key_file.empty()) {
    errors.Add(Cat(section, ".tls.key"), "required when tls.cert is set");
  } else if (tls.cert_file.empty() && !tls.key_file.empty()) {
    errors.Add(Cat(section, ".tls.cert"), "required when tls.key is set");
  }
}

void CheckPostgres(const Postgres& pg, ErrorList& errors) {
  CheckNodes("postgres", pg.nodes, errors);
  CheckServerTls("postgres", pg.tls, errors);
  if (pg.auth != AuthMethod::kTrust) {
    if (pg.users.empty()) {
      errors.Add("postgres.users", "at least one user is required unless auth is trust");
    }
    for (size_t i = 0; i < pg.users.size(); ++i) {
      if (pg.users[i].password.empty()) {
        errors.Add(Cat("postgres.users[", i, "].password"), "required unless auth is trust");
      }
    }
  }
  std::map<std::string, size_t> first_index;
  for (size_t i = 0; i < pg.users.size(); ++i) {
    if (pg.users[i].name.empty()) continue;
    const auto [it, inserted] = first_index.emplace(pg.users[i].name, i);
    if (!inserted) {
      errors.Add(
          Cat("postgres.users[", i, "].name"),
          Cat("duplicate user \"", pg.users[i].name, "\" (also postgres.users[", it->second, "])"));
    }
  }
  if (pg.connect_timeout <= milliseconds(0)) {
    errors.Add("postgres.connect_timeout", "must be greater than 0");
  }
  if (pg.server_idle_timeout < milliseconds(0)) {
    errors.Add("postgres.server_idle_timeout", "must not be negative");
  }
}

void CheckRedis(const Redis& r, ErrorList& errors) {
  CheckNodes("redis", r.nodes, errors);
  CheckServerTls("redis", r.tls, errors);
  if (!r.sentinels.empty() && r.sentinel_master.empty()) {
    errors.Add("redis.sentinel.master", "required when sentinel.addresses are given");
  } else if (r.sentinels.empty() && !r.sentinel_master.empty()) {
    errors.Add("redis.sentinel.addresses", "required when sentinel.master is given");
  }
  if (r.connect_timeout <= milliseconds(0)) {
    errors.Add("redis.connect_timeout", "must be greater than 0");
  }
}

// Two listeners on one address would fail at bind time with a less helpful message.
void CheckListeners(const Config& c, ErrorList& errors) {
  std::vector<std::pair<std::string, std::string>> listeners;  // key, "host:port"
  if (c.postgres.has_value()) {
    listeners.emplace_back("postgres.listen.rw", c.postgres->listen_rw.ToString());
    if (c.postgres->listen_ro.has_value()) {
      listeners.emplace_back("postgres.listen.ro", c.postgres->listen_ro->ToString());
    }
  }
  if (c.redis.has_value()) listeners.emplace_back("redis.listen", c.redis->listen.ToString());
  if (c.admin.http.has_value()) listeners.emplace_back("admin.http", c.admin.http->ToString());
  for (size_t i = 0; i < listeners.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (listeners[i].second != listeners[j].second) continue;
      errors.Add(listeners[i].first, Cat("must differ from ", listeners[j].first, " (both are ",
                                         listeners[i].second, ")"));
      break;
    }
  }
}

}  // namespace

void ValidateConfig(Config& c, const Origins& origins, ErrorList& errors) {
  if (!c.postgres.has_value() && !c.redis.has_value()) {
    errors.Add("postgres", "missing: configure at least one of the postgres and redis sections");
  }
  if (c.region.empty()) {
    errors.Add("region", "required (in the file or the REGION environment variable)");
  }
  if (c.postgres.has_value()) CheckPostgres(*c.postgres, errors);
  if (c.redis.has_value()) CheckRedis(*c.redis, errors);
  CheckListeners(c, errors);

  if (!c.primary_region.empty()) {
    std::set<std::string> regions;
    if (c.postgres.has_value()) {
      for (const Node& n : c.postgres->nodes) regions.insert(n.region);
    }
    if (c.redis.has_value()) {
      for (const Node& n : c.redis->nodes) regions.insert(n.region);
    }
    regions.erase("");
    if (!regions.empty() && regions.count(c.primary_region) == 0) {
      errors.Add("primary_region",
                 Cat("\"", c.primary_region, "\"",
                     origins.primary_region_from_env ? " (from PRIMARY_REGION)" : "",
                     " is not the region of any node; regions: ", JoinStrings(regions, ", ")));
    }
  }

  // The kernel counts keepalive times in whole seconds, up to 32767 (TCP_KEEPIDLE, _KEEPINTVL).
  constexpr milliseconds kMaxKeepalive{32767 * 1000};
  const TcpKeepalive& keepalive = c.server_keepalive;
  if (keepalive.idle != milliseconds(0) &&
      (keepalive.idle < milliseconds(1000) || keepalive.idle > kMaxKeepalive ||
       keepalive.idle.count() % 1000 != 0)) {
    errors.Add("server_keepalive.idle", "must be 0 (off) or whole seconds from 1s to 32767s");
  }
  if (keepalive.interval < milliseconds(1000) || keepalive.interval > kMaxKeepalive ||
      keepalive.interval.count() % 1000 != 0) {
    errors.Add("server_keepalive.interval", "must be whole seconds from 1s to 32767s");
  }

  if (c.monitor.interval < milliseconds(10)) {
    errors.Add("monitor.interval", "must be at least 10ms");
  }
  if (c.monitor.timeout == milliseconds(0)) {
    // At least 1 s: on a saturated machine a healthy node can take a few hundred ms to answer,
    // and a node marked down for that would move every read (issue 5). A dead node refuses at
    // once, so detecting a crash stays about failure_threshold x interval. A node's checks run
    // one after another, so a timeout above the interval only spaces them out.
    c.monitor.timeout = std::max(milliseconds(1000), c.monitor.interval * 4 / 5);
  }
}

}  // namespace nerava::config::internal
