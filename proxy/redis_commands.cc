#include "proxy/redis_commands.h"

#include <charconv>

namespace nerava::proxy {

void RedisStateChange::ApplyTo(RedisConnState& state) const {
  if (reset) state = RedisConnState{};
  if (auth) state.auth = *auth;
  if (protocol) state.protocol = *protocol;
  if (name) state.name = *name;
  if (db) state.db = *db;
}

RedisCommandCatalog& RedisCommandCatalog::Instance() {
  static RedisCommandCatalog* catalog = new RedisCommandCatalog();  // never destroyed
  return *catalog;
}

void RedisCommandCatalog::Publish(std::shared_ptr<const routing::RedisCommandTable> table) {
  if (!table) return;
  {
    std::lock_guard lock(mutex_);
    table_ = std::move(table);
  }
  generation_.fetch_add(1, std::memory_order_acq_rel);
}

std::shared_ptr<const routing::RedisCommandTable> RedisCommandCatalog::Get() const {
  std::lock_guard lock(mutex_);
  if (table_) return table_;
  // The built-in table is static: a non-owning pointer.
  return std::shared_ptr<const routing::RedisCommandTable>(
      std::shared_ptr<const void>(), &routing::RedisCommandTable::Builtin());
}

std::string AsciiUpper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i];
    char y = b[i];
    if (x >= 'a' && x <= 'z') x = static_cast<char>(x - 'a' + 'A');
    if (y >= 'a' && y <= 'z') y = static_cast<char>(y - 'a' + 'A');
    if (x != y) return false;
  }
  return true;
}

HelloArgs ParseHello(const std::vector<std::string>& args) {
  HelloArgs hello;
  if (args.size() < 2) return hello;
  int version = 0;
  const std::string& v = args[1];
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), version);
  if (ec != std::errc() || end != v.data() + v.size() || (version != 2 && version != 3)) {
    hello.valid = false;
    return hello;
  }
  hello.protocol = version;
  for (size_t i = 2; i < args.size(); ++i) {
    if (EqualsIgnoreCase(args[i], "AUTH") && i + 2 < args.size()) {
      hello.auth = std::vector<std::string>{args[i + 1], args[i + 2]};
      i += 2;
    } else if (EqualsIgnoreCase(args[i], "SETNAME") && i + 1 < args.size()) {
      hello.name = args[i + 1];
      i += 1;
    } else {
      hello.valid = false;
      return hello;
    }
  }
  return hello;
}

std::vector<std::string> HelloArgs::WithoutAuth() const {
  std::vector<std::string> out{"HELLO"};
  if (protocol) out.push_back(std::to_string(*protocol));
  if (name) {
    out.push_back("SETNAME");
    out.push_back(*name);
  }
  return out;
}

std::vector<std::vector<std::string>> ReplayCommands(const RedisConnState& state,
                                                     const config::Redis& settings) {
  std::vector<std::vector<std::string>> out;
  const bool proxy_auth = !settings.password.empty();
  if (!proxy_auth && !state.auth.empty()) {
    std::vector<std::string> auth{"AUTH"};
    auth.insert(auth.end(), state.auth.begin(), state.auth.end());
    out.push_back(std::move(auth));
  } else if (!settings.backend_password.empty()) {
    if (settings.backend_username.empty()) {
      out.push_back({"AUTH", settings.backend_password});
    } else {
      out.push_back({"AUTH", settings.backend_username, settings.backend_password});
    }
  }
  if (state.protocol == 3) out.push_back({"HELLO", "3"});
  if (!state.name.empty()) out.push_back({"CLIENT", "SETNAME", state.name});
  if (!state.db.empty() && state.db != "0") out.push_back({"SELECT", state.db});
  return out;
}

PubSubCommand ClassifyPubSub(std::string_view upper_name) {
  if (upper_name == "SUBSCRIBE") return {PubSubKind::kChannel, false};
  if (upper_name == "PSUBSCRIBE") return {PubSubKind::kPattern, false};
  if (upper_name == "SSUBSCRIBE") return {PubSubKind::kShard, false};
  if (upper_name == "UNSUBSCRIBE") return {PubSubKind::kChannel, true};
  if (upper_name == "PUNSUBSCRIBE") return {PubSubKind::kPattern, true};
  if (upper_name == "SUNSUBSCRIBE") return {PubSubKind::kShard, true};
  return {};
}

PubSubCommand ClassifyConfirmation(std::string_view first_element) {
  if (first_element.size() > 12) return {};
  return ClassifyPubSub(AsciiUpper(first_element));
}

bool IsPubSubMessage(std::string_view first_element) {
  return EqualsIgnoreCase(first_element, "message") ||
         EqualsIgnoreCase(first_element, "pmessage") || EqualsIgnoreCase(first_element, "smessage");
}

std::optional<int64_t> TrailingInteger(std::string_view value) {
  if (value.size() < 4 || !value.ends_with("\r\n")) return std::nullopt;
  value.remove_suffix(2);
  const size_t lf = value.rfind('\n');
  if (lf == std::string_view::npos) return std::nullopt;
  const std::string_view line = value.substr(lf + 1);
  if (line.size() < 2 || line[0] != ':') return std::nullopt;
  int64_t n = 0;
  const auto [end, ec] = std::from_chars(line.data() + 1, line.data() + line.size(), n);
  if (ec != std::errc() || end != line.data() + line.size()) return std::nullopt;
  return n;
}

}  // namespace nerava::proxy
