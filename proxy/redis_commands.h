// What a Redis session must know about a few commands: the connection state they change (to
// replay it on every server connection the session opens later) and the pub/sub replies.
// Pure: no I/O.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nerava/config/config.h"
#include "nerava/routing/redis_commands.h"

namespace nerava::proxy {

// The connection state a client set with AUTH, HELLO, CLIENT SETNAME and SELECT.
struct RedisConnState {
  std::vector<std::string> auth;  // {password} or {user, password}; empty: never authenticated
  int protocol = 2;               // RESP version chosen with HELLO
  std::string name;               // CLIENT SETNAME / HELLO SETNAME
  std::string db = "0";           // SELECT
};

// A change to RedisConnState, applied once the server accepted the command (a wrong password
// must not be replayed on the next server).
struct RedisStateChange {
  std::optional<std::vector<std::string>> auth;
  std::optional<int> protocol;
  std::optional<std::string> name;
  std::optional<std::string> db;
  bool reset = false;  // RESET: back to a fresh connection
  void ApplyTo(RedisConnState& state) const;
};

// HELLO [protover [AUTH username password] [SETNAME clientname]], as far as it parses.
struct HelloArgs {
  std::optional<int> protocol;
  std::optional<std::vector<std::string>> auth;  // {user, password}
  std::optional<std::string> name;
  bool valid = true;  // false: let the server explain what is wrong
  // The same HELLO without its AUTH part (the proxy authenticated the client itself).
  std::vector<std::string> WithoutAuth() const;
};
HelloArgs ParseHello(const std::vector<std::string>& args);

// The commands that re-create `state` on a new server connection. With a proxy-side password
// the server login uses the configured backend credentials instead of the client's.
std::vector<std::vector<std::string>> ReplayCommands(const RedisConnState& state,
                                                     const config::Redis& settings);

// Pub/sub command families, whose replies are confirmations (one per channel argument).
enum class PubSubKind : uint8_t { kNone, kChannel, kPattern, kShard };
struct PubSubCommand {
  PubSubKind kind = PubSubKind::kNone;
  bool unsubscribe = false;
};
PubSubCommand ClassifyPubSub(std::string_view upper_name);
// "subscribe", "punsubscribe", ... (first element of a confirmation), case-insensitive.
PubSubCommand ClassifyConfirmation(std::string_view first_element);
// "message", "pmessage", "smessage": published data, never a reply.
bool IsPubSubMessage(std::string_view first_element);

// The integer that ends a confirmation ("...:3\r\n"): the subscription count after it.
std::optional<int64_t> TrailingInteger(std::string_view value);

// The command table Redis sessions classify with (DESIGN §5): the primary's own, from `COMMAND`
// (the monitor's Redis probe publishes it once per probe connection), else the built-in Redis 7.0
// table. One per process: the proxy fronts one Redis deployment. Tables are immutable snapshots;
// a session keeps its copy and takes the lock only when generation() moved.
class RedisCommandCatalog {
 public:
  static RedisCommandCatalog& Instance();

  void Publish(std::shared_ptr<const routing::RedisCommandTable> table);
  // Never null: the built-in table until one was published.
  std::shared_ptr<const routing::RedisCommandTable> Get() const;
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const routing::RedisCommandTable> table_;  // guarded by mutex_
  std::atomic<uint64_t> generation_{0};
};

std::string AsciiUpper(std::string_view s);
bool EqualsIgnoreCase(std::string_view a, std::string_view b);

}  // namespace nerava::proxy
