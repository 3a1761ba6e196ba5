// Reads the YAML tree into Config. Every scalar is interpolated, then typed; every map is
// checked against its exact key set. Problems are collected, never thrown, and validation of
// the cross-field rules runs afterwards (validate.cc).
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "config/errors.h"
#include "config/interpolate.h"
#include "config/text.h"
#include "config/units.h"
#include "config/validate.h"
#include "nerava/config/config.h"
#include "yaml-cpp/yaml.h"

namespace nerava::config {
namespace internal {
namespace {

std::string Join(std::string_view path, std::string_view key) {
  return path.empty() ? std::string(key) : Cat(path, ".", key);
}

std::string Index(std::string_view path, size_t i) { return Cat(path, "[", i, "]"); }

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string_view KindOf(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Scalar:
      return "a single value";
    default:
      return "nothing";
  }
}

// One YAML map with a fixed set of keys. Unknown and duplicate keys are reported on
// construction; a null node reads as an empty map so that "monitor:" means "all defaults".
class Map {
 public:
  Map(ErrorList& errors, const YAML::Node& node, std::string path,
      std::initializer_list<std::string_view> known)
      : path_(std::move(path)) {
    if (!node.IsDefined() || node.IsNull()) return;
    if (!node.IsMap()) {
      errors.Add(path_.empty() ? "(top level)" : path_, Cat("expected a map, got ", KindOf(node)));
      return;
    }
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (!it->first.IsScalar()) {
        errors.Add(path_.empty() ? "(top level)" : path_, "keys must be plain names");
        continue;
      }
      const std::string key = it->first.Scalar();
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        errors.Add(Join(path_, key), UnknownKeyProblem(key, known));
        continue;
      }
      if (Find(key) != nullptr) {
        errors.Add(Join(path_, key), "duplicate key");
        continue;
      }
      entries_.emplace_back(key, it->second);
    }
  }

  // The value under `key`, or nullptr when the key is absent (a null value is returned).
  const YAML::Node* Find(std::string_view key) const {
    for (const auto& [name, value] : entries_) {
      if (name == key) return &value;
    }
    return nullptr;
  }
  std::string PathOf(std::string_view key) const { return Join(path_, key); }
  const std::string& path() const { return path_; }

 private:
  static std::string UnknownKeyProblem(std::string_view key,
                                       std::initializer_list<std::string_view> known) {
    std::string_view best;
    size_t best_distance = 3;  // only near misses are worth suggesting
    for (std::string_view candidate : known) {
      const size_t d = EditDistance(key, candidate);
      if (d < best_distance && d < candidate.size()) {
        best_distance = d;
        best = candidate;
      }
    }
    if (best.empty()) return "unknown key";
    return Cat("unknown key (did you mean \"", best, "\"?)");
  }

  std::string path_;
  std::vector<std::pair<std::string, YAML::Node>> entries_;
};

template <typename E>
struct EnumName {
  std::string_view name;
  E value;
};

class Parser {
 public:
  Parser(const EnvLookup& env, ErrorList& errors) : env_(env), errors_(errors) {}

  void Root(const YAML::Node& root, Config& c) {
    Map m(errors_, root, "",
          {"region", "primary_region", "postgres", "redis", "monitor", "failover",
           "server_keepalive", "admin", "workers", "shutdown_timeout", "log_level"});
    String(m, "region", c.region);
    String(m, "primary_region", c.primary_region);
    // "postgres:" with nothing under it reads as an absent section, like a commented-out one.
    if (const YAML::Node* n = m.Find("postgres"); n != nullptr && !n->IsNull()) {
      Postgres(*n, c.postgres.emplace());
    }
    if (const YAML::Node* n = m.Find("redis"); n != nullptr && !n->IsNull()) {
      Redis(*n, c.redis.emplace());
    }
    MonitorSection(m, c.monitor);
    if (const YAML::Node* n = m.Find("failover")) {
      Map f(errors_, *n, "failover", {"wait"});
      Duration(f, "wait", c.failover.wait);
    }
    if (const YAML::Node* n = m.Find("server_keepalive")) {
      Map k(errors_, *n, "server_keepalive", {"idle", "interval", "count"});
      Duration(k, "idle", c.server_keepalive.idle);
      Duration(k, "interval", c.server_keepalive.interval);
      Int(k, "count", c.server_keepalive.count, 1, 127);  // Linux's TCP_KEEPCNT range
    }
    AdminSection(m, c.admin);
    Int(m, "workers", c.workers, 0, 4096);
    Duration(m, "shutdown_timeout", c.shutdown_timeout);
    LogLevel(m, c.log_level);
  }

 private:
  // --- scalars -------------------------------------------------------------------------------

  // The interpolated text of a scalar; null reads as "". Reports and returns nullopt otherwise.
  std::optional<std::string> Text(const YAML::Node& node, const std::string& path) {
    if (node.IsNull()) return std::string();
    if (!node.IsScalar()) {
      errors_.Add(path, Cat("expected a single value, got ", KindOf(node)));
      return std::nullopt;
    }
    absl::StatusOr<std::string> text = Interpolate(node.Scalar(), env_);
    if (!text.ok()) {
      errors_.Add(path, MessageOf(text.status()));
      return std::nullopt;
    }
    return *std::move(text);
  }

  // Reads `key` if present, types it with `parse` and stores it; returns whether it was stored.
  template <typename T, typename Parse>
  bool Typed(const Map& m, std::string_view key, T& out, Parse parse) {
    const YAML::Node* node = m.Find(key);
    if (node == nullptr) return false;
    return TypedValue(*node, m.PathOf(key), out, parse);
  }
  template <typename T, typename Parse>
  bool TypedValue(const YAML::Node& node, const std::string& path, T& out, Parse parse) {
    std::optional<std::string> text = Text(node, path);
    if (!text.has_value()) return false;
    auto value = parse(*text);
    if (!value.ok()) {
      errors_.Add(path, MessageOf(value.status()));
      return false;
    }
    out = *std::move(value);
    return true;
  }

  bool String(const Map& m, std::string_view key, std::string& out) {
    return Typed(m, key, out, [](std::string s) { return absl::StatusOr<std::string>(s); });
  }

  // A string that must be present and non-empty.
  void RequiredString(const Map& m, std::string_view key, std::string& out) {
    if (m.Find(key) == nullptr) {
      errors_.Add(m.PathOf(key), "required");
    } else if (String(m, key, out) && out.empty()) {
      errors_.Add(m.PathOf(key), "must not be empty");
    }
  }

  void Int(const Map& m, std::string_view key, int& out, int64_t min, int64_t max) {
    int64_t value = 0;
    if (!Typed(m, key, value, ParseInt)) return;
    if (value < min) {
      errors_.Add(m.PathOf(key), Cat("must be at least ", min, ", got ", value));
    } else if (value > max) {
      errors_.Add(m.PathOf(key), Cat("must be at most ", max, ", got ", value));
    } else {
      out = static_cast<int>(value);
    }
  }

  void Duration(const Map& m, std::string_view key, std::chrono::milliseconds& out) {
    Typed(m, key, out, ParseDuration);
  }

  void Size(const Map& m, std::string_view key, uint64_t& out, uint64_t max) {
    uint64_t value = 0;
    if (!Typed(m, key, value, ParseSize)) return;
    if (value > max) {
      errors_.Add(m.PathOf(key), Cat("must be at most ", max, " bytes"));
    } else {
      out = value;
    }
  }

  void Bool(const Map& m, std::string_view key, bool& out) { Typed(m, key, out, ParseBool); }

  template <typename E, size_t N>
  void Enum(const Map& m, std::string_view key, E& out, const EnumName<E> (&names)[N]) {
    std::string text;
    if (!String(m, key, text)) return;
    std::string allowed;
    for (const EnumName<E>& e : names) {
      if (e.name == text) {
        out = e.value;
        return;
      }
      allowed += Cat(allowed.empty() ? "" : ", ", e.name);
    }
    errors_.Add(m.PathOf(key), Cat("expected one of ", allowed, ", got \"", text, "\""));
  }

  void LogLevel(const Map& m, std::string& out) {
    static constexpr std::string_view kLevels[] = {"trace", "debug",    "info", "warn",
                                                   "error", "critical", "off"};
    std::string text;
    if (!String(m, "log_level", text)) return;
    if (std::find(std::begin(kLevels), std::end(kLevels), text) == std::end(kLevels)) {
      errors_.Add("log_level",
                  Cat("expected one of trace, debug, info, warn, error, critical, off, "
                      "got \"",
                      text, "\""));
      return;
    }
    out = text;
  }

  // "host:port", "[v6]:port" or {host, port}.
  bool EndpointValue(const YAML::Node& node, const std::string& path, Endpoint& out) {
    if (node.IsMap()) {
      Map m(errors_, node, path, {"host", "port"});
      Endpoint e;
      const bool has_host = m.Find("host") != nullptr;
      const bool has_port = m.Find("port") != nullptr;
      if (!has_host) errors_.Add(m.PathOf("host"), "required");
      if (!has_port) errors_.Add(m.PathOf("port"), "required");
      if (!has_host || !has_port) return false;
      bool ok = Host(m, e.host);
      ok = Typed(m, "port", e.port, ParsePort) && ok;
      if (ok) out = std::move(e);
      return ok;
    }
    return TypedValue(node, path, out, ParseEndpoint);
  }
  void EndpointField(const Map& m, std::string_view key, Endpoint& out) {
    if (const YAML::Node* n = m.Find(key)) EndpointValue(*n, m.PathOf(key), out);
  }
  // An endpoint that may be switched off with an empty value or null.
  void OptionalEndpoint(const Map& m, std::string_view key, std::optional<Endpoint>& out) {
    const YAML::Node* n = m.Find(key);
    if (n == nullptr) return;
    if (n->IsScalar() || n->IsNull()) {
      std::optional<std::string> text = Text(*n, m.PathOf(key));
      if (!text.has_value()) return;
      if (text->empty()) {
        out.reset();
        return;
      }
    }
    Endpoint e;
    if (EndpointValue(*n, m.PathOf(key), e)) out = std::move(e);
  }

  // A host name or address; brackets around an IPv6 address are accepted and dropped.
  bool Host(const Map& m, std::string& out) {
    std::string text;
    if (!String(m, "host", text)) return false;
    if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
      text = text.substr(1, text.size() - 2);
    }
    if (text.empty()) {
      errors_.Add(m.PathOf("host"), "must not be empty");
      return false;
    }
    out = std::move(text);
    return true;
  }

  // Calls `each(item, "key[i]")` for every element of a list; null is an empty list.
  template <typename Each>
  void List(const Map& m, std::string_view key, Each each) {
    const YAML::Node* n = m.Find(key);
    if (n == nullptr || n->IsNull()) return;
    if (!n->IsSequence()) {
      errors_.Add(m.PathOf(key), Cat("expected a list, got ", KindOf(*n)));
      return;
    }
    for (size_t i = 0; i < n->size(); ++i) each((*n)[i], Index(m.PathOf(key), i));
  }

  // --- sections ------------------------------------------------------------------------------

  void Nodes(const Map& m, std::vector<Node>& out) {
    List(m, "nodes", [&](const YAML::Node& item, const std::string& path) {
      Map n(errors_, item, path, {"name", "region", "host", "port"});
      Node node;
      RequiredString(n, "name", node.name);
      RequiredString(n, "region", node.region);
      if (n.Find("host") == nullptr) {
        errors_.Add(n.PathOf("host"), "required");
      } else {
        Host(n, node.host);
      }
      if (n.Find("port") == nullptr) {
        errors_.Add(n.PathOf("port"), "required");
      } else {
        Typed(n, "port", node.port, ParsePort);
      }
      out.push_back(std::move(node));
    });
  }

  void MaxLagSection(const Map& parent, MaxLag& out) {
    const YAML::Node* n = parent.Find("max_lag");
    if (n == nullptr) return;
    Map m(errors_, *n, parent.PathOf("max_lag"), {"seconds", "bytes"});
    Duration(m, "seconds", out.seconds);
    Size(m, "bytes", out.bytes, std::numeric_limits<uint64_t>::max());
  }

  void ServerTlsSection(const Map& parent, ServerTls& out) {
    const YAML::Node* n = parent.Find("tls");
    if (n == nullptr) return;
    Map m(errors_, *n, parent.PathOf("tls"), {"cert", "key"});
    String(m, "cert", out.cert_file);
    String(m, "key", out.key_file);
  }

  void Postgres(const YAML::Node& node, config::Postgres& pg) {
    Map m(errors_, node, "postgres",
          {"listen", "auth", "users", "nodes", "max_lag", "tls", "backend_tls", "max_message_size",
           "max_client_connections", "connect_timeout", "server_idle_timeout",
           "volatile_allowlist", "monitor"});
    if (const YAML::Node* listen = m.Find("listen")) {
      if (listen->IsMap()) {
        Map l(errors_, *listen, m.PathOf("listen"), {"rw", "ro"});
        EndpointField(l, "rw", pg.listen_rw);
        OptionalEndpoint(l, "ro", pg.listen_ro);
      } else {
        // A bare endpoint is the read-write listener alone.
        EndpointValue(*listen, m.PathOf("listen"), pg.listen_rw);
      }
    }
    static constexpr EnumName<AuthMethod> kAuth[] = {{"scram-sha-256", AuthMethod::kScramSha256},
                                                     {"md5", AuthMethod::kMd5},
                                                     {"trust", AuthMethod::kTrust}};
    Enum(m, "auth", pg.auth, kAuth);
    List(m, "users", [&](const YAML::Node& item, const std::string& path) {
      Map u(errors_, item, path, {"name", "password", "backend_password"});
      PgUser user;
      RequiredString(u, "name", user.name);
      String(u, "password", user.password);
      String(u, "backend_password", user.backend_password);
      pg.users.push_back(std::move(user));
    });
    Nodes(m, pg.nodes);
    MaxLagSection(m, pg.max_lag);
    ServerTlsSection(m, pg.tls);
    if (const YAML::Node* n = m.Find("backend_tls")) {
      Map t(errors_, *n, m.PathOf("backend_tls"), {"sslmode", "root_cert"});
      static constexpr EnumName<SslMode> kModes[] = {{"disable", SslMode::kDisable},
                                                     {"prefer", SslMode::kPrefer},
                                                     {"require", SslMode::kRequire},
                                                     {"verify-full", SslMode::kVerifyFull}};
      Enum(t, "sslmode", pg.backend_tls.mode, kModes);
      String(t, "root_cert", pg.backend_tls.root_cert);
    }
    uint64_t max_message = pg.max_message_bytes;
    Size(m, "max_message_size", max_message, std::numeric_limits<uint32_t>::max());
    if (max_message == 0) {
      errors_.Add(m.PathOf("max_message_size"), "must be greater than 0");
    } else {
      pg.max_message_bytes = static_cast<uint32_t>(max_message);
    }
    Int(m, "max_client_connections", pg.max_client_connections, 1, std::numeric_limits<int>::max());
    Duration(m, "connect_timeout", pg.connect_timeout);
    Duration(m, "server_idle_timeout", pg.server_idle_timeout);
    List(m, "volatile_allowlist", [&](const YAML::Node& item, const std::string& path) {
      std::optional<std::string> name = Text(item, path);
      if (!name.has_value()) return;
      if (name->empty()) {
        errors_.Add(path, "must not be empty");
        return;
      }
      pg.volatile_allowlist.push_back(*std::move(name));
    });
    bool user_given = false;
    bool password_given = false;
    if (const YAML::Node* n = m.Find("monitor")) {
      Map mon(errors_, *n, m.PathOf("monitor"), {"user", "password", "database"});
      user_given = String(mon, "user", pg.monitor_user) && !pg.monitor_user.empty();
      password_given = String(mon, "password", pg.monitor_password);
      if (String(mon, "database", pg.monitor_database) && pg.monitor_database.empty()) {
        errors_.Add(mon.PathOf("database"), "must not be empty");
      }
    }
    // The monitor logs in to the servers, so it uses the upstream password of its user.
    if (!user_given && !pg.users.empty()) pg.monitor_user = pg.users.front().name;
    if (!password_given) {
      for (const PgUser& user : pg.users) {
        if (user.name != pg.monitor_user) continue;
        pg.monitor_password = user.backend_password.empty() ? user.password : user.backend_password;
        break;
      }
    }
  }

  void Redis(const YAML::Node& node, config::Redis& r) {
    Map m(errors_, node, "redis",
          {"listen", "nodes", "password", "backend_username", "backend_password", "tls",
           "backend_tls", "backend_root_cert", "max_lag", "max_pipeline", "max_client_connections",
           "connect_timeout", "shared_connections", "sentinel"});
    EndpointField(m, "listen", r.listen);
    Nodes(m, r.nodes);
    String(m, "password", r.password);
    String(m, "backend_username", r.backend_username);
    String(m, "backend_password", r.backend_password);
    ServerTlsSection(m, r.tls);
    Bool(m, "backend_tls", r.backend_tls);
    String(m, "backend_root_cert", r.backend_root_cert);
    MaxLagSection(m, r.max_lag);
    Int(m, "max_pipeline", r.max_pipeline, 1, std::numeric_limits<int>::max());
    Int(m, "max_client_connections", r.max_client_connections, 1, std::numeric_limits<int>::max());
    Duration(m, "connect_timeout", r.connect_timeout);
    Bool(m, "shared_connections", r.shared_connections);
    if (const YAML::Node* n = m.Find("sentinel")) {
      Map s(errors_, *n, m.PathOf("sentinel"), {"addresses", "master"});
      List(s, "addresses", [&](const YAML::Node& item, const std::string& path) {
        Endpoint e;
        if (EndpointValue(item, path, e)) r.sentinels.push_back(std::move(e));
      });
      String(s, "master", r.sentinel_master);
    }
  }

  void MonitorSection(const Map& parent, Monitor& out) {
    const YAML::Node* n = parent.Find("monitor");
    if (n == nullptr) return;
    Map m(errors_, *n, "monitor", {"interval", "failure_threshold", "timeout"});
    Duration(m, "interval", out.interval);
    Int(m, "failure_threshold", out.failure_threshold, 1, std::numeric_limits<int>::max());
    Duration(m, "timeout", out.timeout);
  }

  void AdminSection(const Map& parent, Admin& out) {
    const YAML::Node* n = parent.Find("admin");
    if (n == nullptr) return;
    Map m(errors_, *n, "admin", {"socket", "http"});
    String(m, "socket", out.socket);
    OptionalEndpoint(m, "http", out.http);
  }

  const EnvLookup& env_;
  ErrorList& errors_;
};

std::string YamlErrorText(std::string_view source, std::string_view yaml,
                          const YAML::Exception& e) {
  if (e.mark.is_null()) return Cat(source, ": ", e.msg);
  std::string text = Cat(source, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg);
  // The braces of ${VAR} are YAML syntax inside {...} and [...]; say so where it bites.
  size_t begin = 0;
  for (int line = 0; line < e.mark.line && begin != std::string_view::npos; ++line) {
    begin = yaml.find('\n', begin);
    if (begin != std::string_view::npos) ++begin;
  }
  if (begin != std::string_view::npos) {
    const std::string_view line = yaml.substr(begin, yaml.find('\n', begin) - begin);
    if (line.find("${") != std::string_view::npos && line.find_first_of("{[") < line.find("${")) {
      text += " (quote values that contain ${...} inside {...} or [...])";
    }
  }
  return text;
}

absl::StatusOr<Config> Load(std::string_view yaml, std::string_view source, const EnvLookup& env) {
  ErrorList errors(source);
  Config config;
  config.source = std::string(source);
  const std::vector<YAML::Node> documents = YAML::LoadAll(std::string(yaml));
  if (documents.size() > 1) {
    errors.Add("(top level)", Cat("expected one YAML document, found ", documents.size()));
    return errors.ToStatus();
  }
  const YAML::Node root = documents.empty() ? YAML::Node() : documents.front();
  Parser parser(env, errors);
  parser.Root(root, config);
  // Nothing else is worth saying about a file that is not a map at all.
  if (root.IsDefined() && !root.IsNull() && !root.IsMap()) return errors.ToStatus();

  // The deployment, not the file, knows where this pod runs and which region writes.
  Origins origins;
  if (std::optional<std::string> region = env("REGION"); region && !region->empty()) {
    config.region = *region;
    origins.region_from_env = true;
  }
  if (std::optional<std::string> primary = env("PRIMARY_REGION"); primary && !primary->empty()) {
    config.primary_region = *primary;
    origins.primary_region_from_env = true;
  }
  ValidateConfig(config, origins, errors);
  if (!errors.empty()) return errors.ToStatus();
  return config;
}

}  // namespace
}  // namespace internal

using internal::Cat;

EnvLookup ProcessEnv() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* value = std::getenv(std::string(name).c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

absl::StatusOr<Config> LoadString(std::string_view yaml, std::string_view source,
                                  const EnvLookup& env) {
  // Start-up code: yaml-cpp reports syntax errors by throwing; none may escape to the caller.
  try {
    return internal::Load(yaml, source, env);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(internal::YamlErrorText(source, yaml, e));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(Cat(source, ": ", e.what()));
  } catch (...) {
    return absl::InvalidArgumentError(Cat(source, ": unreadable configuration"));
  }
}

absl::StatusOr<Config> LoadFile(const std::string& path, const EnvLookup& env) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::NotFoundError(Cat(path, ": is a directory, not a config file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(Cat(path, ": cannot open: ", std::strerror(errno)));
  }
  std::string text;
  std::array<char, 8192> chunk;
  while (in.read(chunk.data(), chunk.size()) || in.gcount() > 0) {
    text.append(chunk.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) return absl::NotFoundError(Cat(path, ": cannot read the file"));
  return LoadString(text, path, env);
}

}  // namespace nerava::config
