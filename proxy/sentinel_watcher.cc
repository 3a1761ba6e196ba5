#include "proxy/sentinel_watcher.h"

#include <poll.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <initializer_list>
#include <string_view>

#include "proxy/hiredis_util.h"

namespace nerava::proxy {
namespace {


// Sentinel answers in a few milliseconds; a short timeout keeps a dead one from delaying the
// next in the list (and destruction) by more than that.
std::chrono::milliseconds SentinelTimeout(const config::Monitor& monitor) {
  const auto cap = std::clamp(monitor.interval * 8 / 10, std::chrono::milliseconds(100),
                              std::chrono::milliseconds(2000));
  return monitor.timeout.count() > 0 ? std::min(monitor.timeout, cap) : cap;
}

RedisReplyPtr Command(redisContext& context, std::initializer_list<std::string_view> args) {
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  for (std::string_view arg : args) {
    argv.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  return RedisReplyPtr(static_cast<redisReply*>(
      redisCommandArgv(&context, static_cast<int>(argv.size()), argv.data(), lengths.data())));
}

std::string_view Text(const redisReply& reply) {
  if (reply.type != REDIS_REPLY_STRING && reply.type != REDIS_REPLY_STATUS &&
      reply.type != REDIS_REPLY_ERROR) {
    return {};
  }
  return reply.str != nullptr ? std::string_view(reply.str, reply.len) : std::string_view();
}

std::optional<uint16_t> ParsePort(std::string_view text) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535) {
    return std::nullopt;
  }
  return static_cast<uint16_t>(value);
}

// Is `flag` one of the comma-separated `flags` ("slave,s_down,disconnected")?
bool HasFlag(std::string_view flags, std::string_view flag) {
  while (!flags.empty()) {
    const size_t comma = flags.find(',');
    if (flags.substr(0, comma) == flag) return true;
    if (comma == std::string_view::npos) break;
    flags.remove_prefix(comma + 1);
  }
  return false;
}

// Does the space-separated `payload` of a Sentinel event name `master`? (+switch-master starts
// with it; +sdown of a replica carries it after "@".)
bool MentionsMaster(std::string_view payload, std::string_view master) {
  while (!payload.empty()) {
    const size_t space = payload.find(' ');
    if (payload.substr(0, space) == master) return true;
    if (space == std::string_view::npos) break;
    payload.remove_prefix(space + 1);
  }
  return false;
}

}  // namespace

void SentinelWatcher::ContextDeleter::operator()(redisContext* context) const {
  redisFree(context);
}

SentinelWatcher::SentinelWatcher(const config::Config& config, Monitor& monitor)
    : nodes_(config.redis->nodes),
      master_name_(config.redis->sentinel_master),
      username_(config.redis->backend_username),
      password_(config.redis->backend_password),
      interval_(config.monitor.interval),
      timeout_(SentinelTimeout(config.monitor)),
      monitor_(monitor),
      sentinels_(config.redis->sentinels) {}

SentinelWatcher::~SentinelWatcher() {
  // Stop both before joining either: each may be waiting on a socket for up to a timeout.
  poll_thread_.request_stop();
  watch_thread_.request_stop();
}

void SentinelWatcher::Start() {
  poll_thread_ = std::jthread([this](std::stop_token stop) { Poll(stop); });
  watch_thread_ = std::jthread([this](std::stop_token stop) { Watch(stop); });
}

void SentinelWatcher::Wake() {
  {
    std::lock_guard lock(mutex_);
    wake_ = true;
  }
  wake_cv_.notify_all();
}

SentinelWatcher::ContextPtr SentinelWatcher::Connect(const std::string& host, uint16_t port,
                                                     std::string& error) const {
  ContextPtr context(redisConnectWithTimeout(host.c_str(), port, ToTimeval(timeout_)));
  if (!context) {
    error = "out of memory";
    return nullptr;
  }
  if (context->err) {
    error = context->errstr;
    return nullptr;
  }
  redisSetTimeout(context.get(), ToTimeval(timeout_));
  return context;
}

// ------------------------------------------------------------------------------- poll thread

void SentinelWatcher::Poll(std::stop_token stop) {
  while (!stop.stop_requested()) {
    {
      std::lock_guard lock(mutex_);
      wake_ = false;
    }
    const std::chrono::milliseconds delay = Round(stop);
    std::unique_lock lock(mutex_);
    wake_cv_.wait_for(lock, stop, delay, [this] { return wake_; });
  }
}

std::chrono::milliseconds SentinelWatcher::Round(std::stop_token stop) {
  std::string errors;
  std::optional<Answer> answer = AskSentinels(stop, errors);
  if (stop.stop_requested()) return interval_;
  if (!answer) {
    if (!outage_) {
      spdlog::warn("sentinel: no Sentinel answers for master {} ({}); following the nodes' "
                   "own roles until one does",
                   master_name_, errors);
      outage_ = true;
    }
    // Stale flags could keep healthy replicas out of service for the whole outage.
    last_unusable_.clear();
    monitor_.SetSentinelView("", {});
    return interval_;
  }
  if (outage_) {
    spdlog::info("sentinel: Sentinel answers again for master {}", master_name_);
    outage_ = false;
  }

  const std::string address = answer->master.ToString();
  const config::Node* node = FindNode(answer->master.host, answer->master.port);
  if (address != last_master_) {
    spdlog::info("sentinel: Sentinel names {} ({}) master of {} (was {})", address,
                 node ? node->name : "no configured node", master_name_,
                 last_master_.empty() ? "unknown" : last_master_);
    last_master_ = address;
  }
  if (answer->unusable) last_unusable_ = std::move(*answer->unusable);

  std::string master;
  std::chrono::milliseconds delay = interval_;
  if (node == nullptr) {
    if (warned_unknown_ != address) {
      spdlog::warn("sentinel: master {} of {} is no configured redis node: not routed to; "
                   "add it to redis.nodes",
                   address, master_name_);
      warned_unknown_ = address;
    }
  } else if (std::string error = VerifyMaster(*node); error.empty()) {
    master = node->name;
  } else {
    // Mid-failover Sentinel may name a replica not yet promoted: ask again soon.
    spdlog::debug("sentinel: {} named master of {} but not verified: {}", node->name,
                  master_name_, error);
    delay = std::max(std::chrono::milliseconds(10), interval_ / 4);
  }
  monitor_.SetSentinelView(master, last_unusable_);
  return delay;
}

std::optional<SentinelWatcher::Answer> SentinelWatcher::AskSentinels(std::stop_token stop,
                                                                      std::string& errors) {
  std::vector<config::Endpoint> order;
  {
    std::lock_guard lock(mutex_);
    order = sentinels_;
  }
  for (size_t i = 0; i < order.size() && !stop.stop_requested(); ++i) {
    const config::Endpoint& sentinel = order[i];
    auto fail = [&](std::string_view why) {
      if (!errors.empty()) errors += "; ";
      errors += sentinel.ToString() + ": " + std::string(why);
    };
    ContextPtr fresh;
    redisContext* context = i == 0 ? sentinel_context_.get() : nullptr;
    if (context == nullptr) {
      std::string error;
      fresh = Connect(sentinel.host, sentinel.port, error);
      if (!fresh) {
        fail(error);
        continue;
      }
      context = fresh.get();
    }
    RedisReplyPtr reply = Command(*context, {"SENTINEL", "get-master-addr-by-name", master_name_});
    if (!reply) {
      fail(context->errstr);
      if (context == sentinel_context_.get()) sentinel_context_.reset();
      continue;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
      // Nil: this sentinel does not monitor the name (yet); an error: not a sentinel.
      fail(reply->type == REDIS_REPLY_ERROR ? Text(*reply) : "does not know the master");
      continue;
    }
    const std::optional<uint16_t> port = ParsePort(Text(*reply->element[1]));
    if (!port || Text(*reply->element[0]).empty()) {
      fail("malformed get-master-addr-by-name reply");
      continue;
    }
    Answer answer;
    answer.master = config::Endpoint{std::string(Text(*reply->element[0])), *port};
    answer.unusable = UnusableReplicas(*context);
    if (context->err) {
      if (context == sentinel_context_.get()) sentinel_context_.reset();
      fresh.reset();
    }
    if (i != 0) {
      // The guidelines: the sentinel that answered goes first, so the next round asks it
      // first too (and the watch thread subscribes to it).
      std::lock_guard lock(mutex_);
      auto it = std::find_if(sentinels_.begin(), sentinels_.end(), [&](const auto& e) {
        return e.host == sentinel.host && e.port == sentinel.port;
      });
      if (it != sentinels_.end()) std::rotate(sentinels_.begin(), it, it + 1);
    }
    if (fresh) sentinel_context_ = std::move(fresh);  // kept for the next round
    return answer;
  }
  return std::nullopt;
}

std::optional<std::vector<std::string>> SentinelWatcher::UnusableReplicas(
    redisContext& context) {
  RedisReplyPtr reply = Command(context, {"SENTINEL", "replicas", master_name_});
  if (reply && reply->type == REDIS_REPLY_ERROR) {
    reply = Command(context, {"SENTINEL", "slaves", master_name_});  // before Redis 5
  }
  if (!reply || reply->type != REDIS_REPLY_ARRAY) return std::nullopt;
  std::vector<std::string> unusable;
  for (size_t i = 0; i < reply->elements; ++i) {
    const redisReply& replica = *reply->element[i];
    if (replica.type != REDIS_REPLY_ARRAY) continue;
    std::string_view ip, port, flags;
    // A flat list of field, value pairs.
    for (size_t f = 0; f + 1 < replica.elements; f += 2) {
      const std::string_view field = Text(*replica.element[f]);
      const std::string_view value = Text(*replica.element[f + 1]);
      if (field == "ip") ip = value;
      if (field == "port") port = value;
      if (field == "flags") flags = value;
    }
    if (!HasFlag(flags, "s_down") && !HasFlag(flags, "o_down") &&
        !HasFlag(flags, "disconnected")) {
      continue;
    }
    const std::optional<uint16_t> parsed = ParsePort(port);
    const config::Node* node = parsed ? FindNode(std::string(ip), *parsed) : nullptr;
    if (node != nullptr) unusable.push_back(node->name);
  }
  std::sort(unusable.begin(), unusable.end());  // stable order: the monitor compares lists
  return unusable;
}

std::string SentinelWatcher::VerifyMaster(const config::Node& node) {
  if (!master_context_ || master_context_node_ != node.name) {
    master_context_.reset();
    std::string error;
    ContextPtr context = Connect(node.host, node.port, error);
    if (!context) return error;
    if (!password_.empty()) {
      RedisReplyPtr reply = username_.empty()
                           ? Command(*context, {"AUTH", password_})
                           : Command(*context, {"AUTH", username_, password_});
      if (!reply) return context->errstr;
      if (reply->type == REDIS_REPLY_ERROR) return std::string(Text(*reply));
    }
    master_context_ = std::move(context);
    master_context_node_ = node.name;
  }
  RedisReplyPtr reply = Command(*master_context_, {"ROLE"});
  if (!reply) {
    std::string error = master_context_->errstr;
    master_context_.reset();
    return error;
  }
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
    return reply->type == REDIS_REPLY_ERROR ? std::string(Text(*reply)) : "unexpected ROLE reply";
  }
  const std::string_view role = Text(*reply->element[0]);
  if (role != "master") return "ROLE says " + std::string(role);
  return {};
}

const config::Node* SentinelWatcher::FindNode(const std::string& host, uint16_t port) const {
  for (const config::Node& node : nodes_) {
    if (node.host == host && node.port == port) return &node;
  }
  return nullptr;
}

// ------------------------------------------------------------------------------ watch thread

void SentinelWatcher::Watch(std::stop_token stop) {
  while (!stop.stop_requested()) {
    std::vector<config::Endpoint> order;
    {
      std::lock_guard lock(mutex_);
      order = sentinels_;
    }
    ContextPtr context;
    for (const config::Endpoint& sentinel : order) {
      if (stop.stop_requested()) return;
      std::string error;
      context = Connect(sentinel.host, sentinel.port, error);
      if (!context) continue;
      RedisReplyPtr reply = Command(*context, {"SUBSCRIBE", "+switch-master", "+sdown", "-sdown"});
      if (reply && reply->type == REDIS_REPLY_ARRAY) break;
      context.reset();
    }
    if (!context) {
      // The poll thread reports the outage; try again after an interval.
      std::mutex sleep_mutex;
      std::condition_variable_any sleeper;
      std::unique_lock lock(sleep_mutex);
      sleeper.wait_for(lock, stop, interval_, [] { return false; });
      continue;
    }
    // A switch may have happened while no subscription was in place.
    Wake();
    Listen(stop, *context);
  }
}

void SentinelWatcher::Listen(std::stop_token stop, redisContext& context) {
  using Clock = std::chrono::steady_clock;
  // Without events a sentinel sends nothing: PING now and then to notice a dead one.
  const auto idle_limit = std::max(std::chrono::milliseconds(3000), interval_ * 4);
  const int poll_ms = static_cast<int>(std::clamp(interval_, std::chrono::milliseconds(10),
                                                  std::chrono::milliseconds(200))
                                           .count());
  // Replies already parsed into the reader: false when the stream is broken.
  auto drain = [&]() {
    for (;;) {
      void* raw = nullptr;
      if (redisReaderGetReply(context.reader, &raw) != REDIS_OK) return false;
      if (raw == nullptr) return true;
      RedisReplyPtr reply(static_cast<redisReply*>(raw));
      // ["message", channel, payload]; subscribe confirmations and PONGs are ignored.
      if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
          Text(*reply->element[0]) != "message") {
        continue;
      }
      const std::string_view channel = Text(*reply->element[1]);
      const std::string_view payload = Text(*reply->element[2]);
      if (!MentionsMaster(payload, master_name_)) continue;
      if (channel == "+switch-master") {
        spdlog::info("sentinel: +switch-master {}", payload);
      } else {
        spdlog::debug("sentinel: {} {}", channel, payload);
      }
      Wake();
    }
  };
  auto last_data = Clock::now();
  bool pinged = false;
  while (!stop.stop_requested()) {
    if (!drain()) return;
    pollfd fd{context.fd, POLLIN, 0};
    const int ready = ::poll(&fd, 1, poll_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (ready == 0) {
      const auto idle = Clock::now() - last_data;
      if (idle > 2 * idle_limit) return;  // no PONG either: subscribe elsewhere
      if (idle > idle_limit && !pinged) {
        if (redisAppendCommand(&context, "PING") != REDIS_OK) return;
        int done = 0;
        while (!done) {
          if (redisBufferWrite(&context, &done) != REDIS_OK) return;
        }
        pinged = true;
      }
      continue;
    }
    if (redisBufferRead(&context) != REDIS_OK) return;  // closed or reset
    last_data = Clock::now();
    pinged = false;
  }
}

}  // namespace nerava::proxy
