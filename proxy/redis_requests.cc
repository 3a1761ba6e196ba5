// What each Redis request means, decided once its name (and first arguments) arrived: forward it
// (to the worker's shared connection or the session's own), answer it here (QUIT, the proxy's
// AUTH, NOAUTH), or read it whole first (AUTH, HELLO, SELECT, CLIENT SETNAME) to keep the
// session state that is replayed on new server connections. Part of RedisSession
// (redis_session.cc has the reader loop and the diagram).
#include "nerava/protocol/redis/encoder.h"
#include "proxy/redis_session_impl.h"

namespace nerava::proxy::redis_session {
namespace {

constexpr std::string_view kNoAuth = "NOAUTH Authentication required.";
constexpr std::string_view kWrongPass =
    "WRONGPASS invalid username-password pair or user is disabled.";
// Whether the reply to `command` acknowledges a possible data change (read-your-writes).
// Unknown commands, scripts and EXEC may write; PING, INFO, PUBLISH, SUBSCRIBE... do not.
bool MayWrite(const routing::RedisCommandClass& command) {
  using routing::RedisKind;
  // The server's own word (EVALSHA_RO is sent to the primary, yet writes nothing).
  if ((command.flags & routing::kRedisReadonly) != 0) return false;
  switch (command.kind) {
    case RedisKind::kRead:
    case RedisKind::kConnectionState:
      return false;
    case RedisKind::kOther:
      return (command.flags & (routing::kRedisScript | routing::kRedisTransaction |
                               routing::kRedisAdmin)) != 0;
    case RedisKind::kWrite:
    case RedisKind::kUnknown:
      break;
  }
  return true;
}

}  // namespace

// An argument is whole once the next one started. Routing needs the name and the first
// argument (a subcommand), CLIENT the second too (TRACKING ON), XREAD all (BLOCK). An argument
// too long to capture whole is no subcommand: decide at once rather than buffer it.
bool RedisSession::ReadyToDecide(bool complete) const {
  if (complete || requests_.args_truncated()) return true;
  const std::vector<std::string>& args = requests_.args();
  if (args.empty()) return false;
  size_t needed = 2;
  if (args.size() >= 2 && EqualsIgnoreCase(args[0], "CLIENT")) needed = 3;
  if (args.size() >= 2 && EqualsIgnoreCase(args[0], "XREAD")) return false;
  needed = std::min<size_t>(needed, static_cast<size_t>(requests_.arg_count()));
  return args.size() > needed;
}

routing::RedisCommandClass RedisSession::Classify(bool complete) {
  RedisCommandCatalog& catalog = RedisCommandCatalog::Instance();
  if (const uint64_t generation = catalog.generation();
      !commands_ || generation != commands_generation_) {
    commands_ = catalog.Get();
    commands_generation_ = generation;
  }
  const std::vector<std::string>& args = requests_.args();
  size_t whole = args.size();
  if (!complete && whole > 0) --whole;  // the last one may still be arriving
  routing::RedisCommandClass command =
      routing::ClassifyRedisCommand(*commands_, std::span<const std::string>(args.data(), whole));
  if (command.name == "xread" && (command.flags & routing::kRedisBlocking) == 0) {
    // Not blocking only when STREAMS was seen without BLOCK before it.
    bool streams = false;
    for (size_t i = 1; i < whole; ++i) streams = streams || EqualsIgnoreCase(args[i], "STREAMS");
    if (!streams) command.flags |= routing::kRedisBlocking;
  }
  if (command.name == "evalsha_ro") {
    // Redis 7 does not replicate SCRIPT LOAD: a replica would answer NOSCRIPT.
    command.kind = routing::RedisKind::kOther;
  }
  return command;
}

void RedisSession::SetPins(bool multi, bool watching, bool pubsub, bool tracking,
                           const std::shared_ptr<RedisBackend>& target) {
  in_multi_ = multi;
  watching_ = watching;
  pubsub_active_ = pubsub;
  tracking_ = tracking;
  if (!multi && !watching && !pubsub && !tracking) {
    pin_.reset();
  } else if (!pin_) {
    pin_ = target;
  }
}

// CLIENT subcommands that only label or describe the connection: the shared connections give
// the same answers to the reads that follow. redis-py >= 5 and go-redis 9 send SETINFO on
// every new connection; counting it as connection state would keep them off sharing for good.
bool RedisSession::LeavesConnectionAsIs(const std::vector<std::string>& args) {
  if (args.size() < 2) return false;
  const std::string sub = AsciiUpper(args[1]);
  return sub == "SETINFO" || sub == "ID" || sub == "INFO" || sub == "GETNAME" || sub == "LIST";
}

// Decides what to do with the request whose name (and first arguments) just became known.
awaitable<void> RedisSession::Decide(bool complete) {
  action_ = Action::kDrop;
  if (requests_.arg_count() == 0) co_return;  // an empty request: Redis ignores it too
  if (requests_.args().empty()) {
    EnqueueLocalError("ERR Protocol error: expected '$' for a command name", /*close_after=*/true);
    co_return;
  }
  const std::string name = AsciiUpper(requests_.args()[0]);
  const int64_t argc = requests_.arg_count();
  if (name == "QUIT") {
    Pending entry;
    redis::AppendSimpleString(entry.local, "OK");
    entry.close_after = true;
    Enqueue(std::move(entry));
    stop_reading_ = true;
    co_return;
  }
  // Connection-level settings (CLIENT REPLY, NO-TOUCH...) would not hold on a shared connection.
  if (name == "MONITOR" || name == "READONLY" || name == "READWRITE" ||
      (name == "CLIENT" && !LeavesConnectionAsIs(requests_.args()))) {
    may_share_ = false;
  }
  if (name == "AUTH" || name == "HELLO" || name == "SELECT" || (name == "CLIENT" && argc == 3)) {
    action_ = Action::kWhole;
    co_return;
  }
  if (!context_->settings.password.empty() && !authenticated_) {
    EnqueueLocalError(kNoAuth);
    co_return;
  }
  // Transactions, subscriptions and tracking pin the session to the primary while they last.
  // The command itself goes where the pin was before it (EXEC to the MULTI's backend).
  const routing::RedisCommandClass command = Classify(complete);
  Pending entry;
  entry.write = MayWrite(command);
  bool multi = in_multi_;
  bool watching = watching_;
  bool pubsub = pubsub_active_;
  bool tracking = tracking_;
  if ((command.pin_begin & routing::kRedisPinTracking) != 0) tracking = true;
  if ((command.pin_end & routing::kRedisPinTracking) != 0) tracking = false;
  const bool reset = name == "RESET";
  if (reset) {
    RedisStateChange change;
    change.reset = true;
    entry.on_ok = change;
    multi = watching = pubsub = tracking = false;
  } else if (name == "MULTI") {
    multi = true;
  } else if (name == "EXEC" || name == "DISCARD") {
    multi = watching = false;
  } else if (name == "WATCH") {
    watching = true;
  } else if (name == "UNWATCH") {
    watching = false;
  } else if (PubSubCommand kind = ClassifyPubSub(name); kind.kind != PubSubKind::kNone) {
    entry.pubsub = kind;
    if (argc > 1) {
      entry.expected = argc - 1;
    } else {
      entry.expected = kind.unsubscribe ? -1 : 1;
    }
    if (!kind.unsubscribe) pubsub = true;
  }
  if (!Pinned()) pin_.reset();
  routing::RouteIntent intent = routing::IntentFor(command);
  // Opening a pin on a replica would leave MULTI or tracking there: the primary takes it.
  if (multi || watching || pubsub || tracking) intent.replica_ok = false;
  if (!multi && !watching && !pubsub && !tracking && CanShare(command, complete) &&
      (!entry.write || MayWriteShared())) {
    if (co_await TrySendShared(intent, entry)) co_return;  // kDrop: the bytes went to the link
  }
  co_await WaitSharedAnswered();  // so that this request runs after them
  std::string error;
  auto target = co_await Target(intent, error);
  if (!target) {
    EnqueueLocalError(error);
    co_return;
  }
  SetPins(multi, watching, pubsub, tracking, target);
  if (!multi && (name == "WAIT" || name == "WAITAOF") && !co_await FenceWait(name, target)) {
    co_return;  // kDrop: answered here
  }
  if (reset) {
    // Other servers of the session keep the old state: drop them, they reopen fresh.
    std::erase_if(backends_, [&](const auto& item) { return item.second != target; });
    if (!context_->settings.password.empty()) {
      authenticated_ = false;
      SetState(SessionState::kNeedAuth);
    }
  }
  entry.backend = target;
  Enqueue(std::move(entry));
  action_ = Action::kForward;
  action_target_ = target;
  if (reset && !context_->settings.password.empty() &&
      !context_->settings.backend_password.empty()) {
    // RESET logged the server connection out; log it back in with the proxy's credentials,
    // right after the RESET itself.
    co_await Append(target, client_in_.data().substr(pos_, request_fed_));
    pos_ += request_fed_;
    request_fed_ = 0;
    std::string login_bytes;
    redis::AppendCommand(login_bytes, ReplayCommands(RedisConnState{}, context_->settings)[0]);
    Pending login;
    login.backend = target;
    login.swallow = true;
    Enqueue(std::move(login));
    co_await AppendOwned(target, std::move(login_bytes));
  }
}

// AUTH, HELLO, SELECT and CLIENT <x> <y>, now complete in the buffer.
awaitable<void> RedisSession::HandleWhole(std::string_view bytes) {
  redis::Decoder full(context_->limits, /*capture_args=*/16, /*capture_bytes=*/64 * 1024);
  auto parsed = full.Feed(bytes);
  if (!parsed.ok() || full.args_truncated() || full.args().empty()) {
    EnqueueLocalError("ERR invalid arguments");
    co_return;
  }
  const std::vector<std::string>& args = full.args();
  const std::string name = AsciiUpper(args[0]);
  const bool proxy_auth = !context_->settings.password.empty();
  Pending entry;
  if (name == "AUTH") {
    if (args.size() < 2 || args.size() > 3) {
      EnqueueLocalError("ERR wrong number of arguments for 'auth' command");
      co_return;
    }
    if (proxy_auth) {
      // The proxy checks the password itself; servers see the configured credentials.
      if (args.back() != context_->settings.password) {
        EnqueueLocalError(kWrongPass);
        co_return;
      }
      authenticated_ = true;
      SetState(SessionState::kReady);
      Pending ok;
      redis::AppendSimpleString(ok.local, "OK");
      Enqueue(std::move(ok));
      co_return;
    }
    RedisStateChange change;
    change.auth = std::vector<std::string>(args.begin() + 1, args.end());
    entry.on_ok = std::move(change);
    co_await ForwardToTarget(bytes, std::move(entry));
    co_return;
  }
  if (name == "HELLO") {
    const HelloArgs hello = ParseHello(args);
    if (proxy_auth && hello.valid && hello.auth) {
      if (hello.auth->back() != context_->settings.password) {
        EnqueueLocalError(kWrongPass);
        co_return;
      }
      authenticated_ = true;
      SetState(SessionState::kReady);
    }
    if (proxy_auth && !authenticated_) {
      EnqueueLocalError(kNoAuth);
      co_return;
    }
    RedisStateChange change;
    change.protocol = hello.protocol;
    change.name = hello.name;
    if (!proxy_auth) change.auth = hello.auth;
    if (hello.valid) entry.on_ok = std::move(change);
    std::string rewritten;
    if (proxy_auth && hello.auth) redis::AppendCommand(rewritten, hello.WithoutAuth());
    co_await ForwardToTarget(bytes, std::move(entry), std::move(rewritten));
    co_return;
  }
  if (proxy_auth && !authenticated_) {
    EnqueueLocalError(kNoAuth);
    co_return;
  }
  if (name == "SELECT" && args.size() == 2) {
    RedisStateChange change;
    change.db = args[1];
    entry.on_ok = std::move(change);
  } else if (name == "CLIENT" && args.size() == 3 && EqualsIgnoreCase(args[1], "SETNAME")) {
    RedisStateChange change;
    change.name = args[2];
    entry.on_ok = std::move(change);
  } else if (name == "CLIENT") {
    // CLIENT <x> <y>: TRACKING ON|OFF opens or closes the pin; the rest runs on the primary.
    const routing::RedisCommandClass command =
        routing::ClassifyRedisCommand(routing::RedisCommandTable::Builtin(), args);
    bool tracking = tracking_;
    if ((command.pin_begin & routing::kRedisPinTracking) != 0) tracking = true;
    if ((command.pin_end & routing::kRedisPinTracking) != 0) tracking = false;
    if (!Pinned()) pin_.reset();
    std::string error;
    const routing::RouteIntent primary_intent;
    auto target = co_await Target(primary_intent, error);
    if (!target) {
      EnqueueLocalError(error);
      co_return;
    }
    SetPins(in_multi_, watching_, pubsub_active_, tracking, target);
    entry.backend = target;
    entry.write = MayWrite(command);
    Enqueue(std::move(entry));
    co_await Append(target, bytes);
    co_return;
  }
  co_await ForwardToTarget(bytes, std::move(entry));
}

awaitable<void> RedisSession::ForwardToTarget(std::string_view bytes, Pending entry,
                                              std::string composed) {
  std::string error;
  routing::RouteIntent intent;
  intent.session_state = true;
  auto target = co_await Target(intent, error);
  if (!target) {
    EnqueueLocalError(error);
    co_return;
  }
  entry.backend = target;
  Enqueue(std::move(entry));
  if (composed.empty()) {
    co_await Append(target, bytes);
  } else {
    co_await AppendOwned(target, std::move(composed));
  }
}

}  // namespace nerava::proxy::redis_session
