#include "nerava/routing/redis_commands.h"

#include <cctype>
#include <utility>

#include "absl/status/status.h"

namespace nerava::routing {
namespace {

constexpr size_t kMaxCommandEntries = 20000;

struct BuiltinEntry {
  const char* name;
  int arity;
  int first_key;
  int last_key;
  int key_step;
  const char* flags;  // space-separated COMMAND flags
};

constexpr BuiltinEntry kBuiltin[] = {
#include "routing/redis_command_table.inc"
};

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// What COMMAND does not say: connection state and transactions, added by name.
uint32_t OverlayFlags(std::string_view name) {
  static constexpr std::string_view kConnectionState[] = {
      "select",      "auth",           "hello",          "reset",           "readonly",
      "readwrite",   "client|setname", "client|setinfo", "client|no-evict", "client|no-touch",
      "client|reply"};
  static constexpr std::string_view kTransaction[] = {"multi", "exec", "discard", "watch",
                                                      "unwatch"};
  static constexpr std::string_view kScript[] = {"eval",       "evalsha", "eval_ro",
                                                 "evalsha_ro", "fcall",   "fcall_ro"};
  uint32_t flags = 0;
  for (std::string_view n : kConnectionState) {
    if (n == name) flags |= kRedisConnectionState;
  }
  for (std::string_view n : kTransaction) {
    if (n == name) flags |= kRedisTransaction;
  }
  for (std::string_view n : kScript) {
    if (n == name) flags |= kRedisScript;
  }
  return flags;
}

void AddWithOverlay(RedisCommandTable& table, RedisCommandInfo info) {
  info.flags |= OverlayFlags(info.name);
  table.Add(std::move(info));
}

absl::Status ParseEntry(const RedisReply& entry, RedisCommandTable& table, size_t& count) {
  using Type = RedisReply::Type;
  if (entry.type == Type::kNil) return absl::OkStatus();  // COMMAND INFO of an unknown name
  if (++count > kMaxCommandEntries) {
    return absl::ResourceExhaustedError("COMMAND reply: too many commands");
  }
  const auto& e = entry.elements;
  if (entry.type != Type::kArray || e.size() < 6 || e[0].type != Type::kString ||
      e[1].type != Type::kInteger || e[2].type != Type::kArray || e[3].type != Type::kInteger ||
      e[4].type != Type::kInteger || e[5].type != Type::kInteger) {
    return absl::InvalidArgumentError(
        "COMMAND reply: entry is not [name, arity, flags, first, last, step, ...]");
  }
  RedisCommandInfo info;
  info.name = Lower(e[0].str);
  info.arity = static_cast<int>(e[1].integer);
  info.first_key = static_cast<int>(e[3].integer);
  info.last_key = static_cast<int>(e[4].integer);
  info.key_step = static_cast<int>(e[5].integer);
  for (const RedisReply& flag : e[2].elements) {
    if (flag.type != Type::kString) {
      return absl::InvalidArgumentError("COMMAND reply: a flag is not a string");
    }
    info.flags |= RedisFlagFromName(Lower(flag.str));
  }
  // Redis 7: element 9 lists the subcommands, each in the same shape.
  if (e.size() > 9 && e[9].type == Type::kArray && !e[9].elements.empty()) {
    info.has_subcommands = true;
    for (const RedisReply& sub : e[9].elements) {
      absl::Status status = ParseEntry(sub, table, count);
      if (!status.ok()) return status;
    }
  }
  AddWithOverlay(table, std::move(info));
  return absl::OkStatus();
}

bool HasArg(std::span<const std::string> args, size_t from, std::string_view word,
            std::string_view stop = {}) {
  for (size_t i = from; i < args.size(); ++i) {
    if (!stop.empty() && EqualsIgnoreCase(args[i], stop)) return false;
    if (EqualsIgnoreCase(args[i], word)) return true;
  }
  return false;
}

}  // namespace

uint32_t RedisFlagFromName(std::string_view name) {
  static constexpr std::pair<std::string_view, uint32_t> kNames[] = {
      {"readonly", kRedisReadonly},
      {"write", kRedisWrite},
      {"blocking", kRedisBlocking},
      {"pubsub", kRedisPubSub},
      {"noscript", kRedisNoScript},
      {"admin", kRedisAdmin},
      {"fast", kRedisFast},
      {"denyoom", kRedisDenyOom},
      {"loading", kRedisLoading},
      {"stale", kRedisStale},
      {"movablekeys", kRedisMovableKeys},
      {"no_multi", kRedisNoMulti},
      {"no_auth", kRedisNoAuth},
  };
  for (const auto& [n, bit] : kNames) {
    if (n == name) return bit;
  }
  return 0;
}

const RedisCommandTable& RedisCommandTable::Builtin() {
  static const RedisCommandTable* table = [] {
    auto* t = new RedisCommandTable();
    for (const BuiltinEntry& e : kBuiltin) {
      RedisCommandInfo info;
      info.name = e.name;
      info.arity = e.arity;
      info.first_key = e.first_key;
      info.last_key = e.last_key;
      info.key_step = e.key_step;
      std::string_view flags = e.flags;
      while (!flags.empty()) {
        size_t space = flags.find(' ');
        info.flags |= RedisFlagFromName(flags.substr(0, space));
        flags = space == std::string_view::npos ? std::string_view() : flags.substr(space + 1);
      }
      AddWithOverlay(*t, std::move(info));
    }
    // Containers: any "x|y" entry makes "x" a container.
    for (const BuiltinEntry& e : kBuiltin) {
      std::string_view name = e.name;
      size_t bar = name.find('|');
      if (bar == std::string_view::npos) continue;
      auto it = t->commands_.find(std::string(name.substr(0, bar)));
      if (it != t->commands_.end()) it->second.has_subcommands = true;
    }
    return t;
  }();
  return *table;
}

void RedisCommandTable::Add(RedisCommandInfo info) {
  std::string key = info.name;
  commands_.insert_or_assign(std::move(key), std::move(info));
}

const RedisCommandInfo* RedisCommandTable::Find(std::string_view name) const {
  auto it = commands_.find(absl::string_view(name.data(), name.size()));
  return it == commands_.end() ? nullptr : &it->second;
}

absl::StatusOr<RedisCommandTable> ParseCommandReply(const RedisReply& reply) {
  if (reply.type != RedisReply::Type::kArray) {
    return absl::InvalidArgumentError("COMMAND reply is not an array");
  }
  RedisCommandTable table;
  size_t count = 0;
  for (const RedisReply& entry : reply.elements) {
    absl::Status status = ParseEntry(entry, table, count);
    if (!status.ok()) return status;
  }
  return table;
}

const char* RedisKindName(RedisKind kind) {
  switch (kind) {
    case RedisKind::kRead:
      return "read";
    case RedisKind::kWrite:
      return "write";
    case RedisKind::kConnectionState:
      return "connection_state";
    case RedisKind::kOther:
      return "other";
    case RedisKind::kUnknown:
      break;
  }
  return "unknown";
}

RedisCommandClass ClassifyRedisCommand(const RedisCommandTable& table,
                                       std::span<const std::string> args) {
  RedisCommandClass out;
  if (args.empty()) return out;
  out.name = Lower(args[0]);
  const RedisCommandInfo* info = table.Find(out.name);
  if (info != nullptr && info->has_subcommands && args.size() >= 2) {
    std::string full = out.name + "|" + Lower(args[1]);
    info = table.Find(full);  // an unknown subcommand is unknown: primary
    out.name = std::move(full);
  }
  if (info == nullptr) return out;

  out.flags = info->flags;
  if ((out.flags & kRedisConnectionState) != 0) {
    out.kind = RedisKind::kConnectionState;
  } else if ((out.flags & kRedisWrite) != 0) {
    out.kind = RedisKind::kWrite;
  } else if ((out.flags & kRedisReadonly) != 0) {
    out.kind = RedisKind::kRead;
  } else {
    out.kind = RedisKind::kOther;
  }
  if (info->first_key > 0 && static_cast<size_t>(info->first_key) < args.size()) {
    out.first_key = static_cast<size_t>(info->first_key);
  }

  const std::string& name = out.name;
  if (name == "xread" || name == "xreadgroup") {
    // Blocking only with BLOCK (which must come before STREAMS); keys follow STREAMS.
    if (!HasArg(args, 1, "block", "streams")) out.flags &= ~kRedisBlocking;
    for (size_t i = 1; i + 1 < args.size(); ++i) {
      if (EqualsIgnoreCase(args[i], "streams")) {
        out.first_key = i + 1;
        break;
      }
    }
  } else if ((out.flags & kRedisScript) != 0) {
    // EVAL script numkeys key...: the first key, if any, is at 3.
    if (args.size() > 3 && args[2] != "0") out.first_key = 3;
  } else if (name == "multi") {
    out.pin_begin = kRedisPinMulti;
  } else if (name == "exec" || name == "discard") {
    out.pin_end = kRedisPinMulti | kRedisPinWatch;
  } else if (name == "watch") {
    out.pin_begin = kRedisPinWatch;
  } else if (name == "unwatch") {
    out.pin_end = kRedisPinWatch;
  } else if (name == "subscribe" || name == "psubscribe" || name == "ssubscribe") {
    out.pin_begin = kRedisPinPubSub;
  } else if (name == "unsubscribe" || name == "punsubscribe" || name == "sunsubscribe") {
    out.pin_end = kRedisPinPubSub;
  } else if (name == "client|tracking") {
    if (args.size() >= 3 && EqualsIgnoreCase(args[2], "on")) {
      out.pin_begin = kRedisPinTracking;
    } else if (args.size() >= 3 && EqualsIgnoreCase(args[2], "off")) {
      out.pin_end = kRedisPinTracking;
    }
  } else if (name == "reset") {
    out.pin_end = kRedisPinAll;  // RESET leaves MULTI, WATCH, pub/sub and tracking
  }
  return out;
}

}  // namespace nerava::routing
