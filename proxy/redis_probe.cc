// Redis node check with hiredis: `INFO replication` gives role, offsets and link status in one
// round trip. The connection is kept between checks and dropped after any failure but one: a
// check that timed out leaves its INFO pending, and the next checks wait for that answer. Redis
// runs one command at a time; busy with long ones back to back (scripts, 100 MB values) it
// answers a pending INFO in the next gap, while one re-sent on a new connection is read a turn
// later and waits behind the next long command, and the next: a live node marked down.
#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "nerava/routing/redis_commands.h"
#include "proxy/hiredis_util.h"
#include "proxy/node_probe.h"
#include "proxy/redis_commands.h"

namespace nerava::proxy {
namespace {

// Value of "key:value" in INFO output, or "" when absent.
std::string_view InfoField(std::string_view info, std::string_view key) {
  size_t pos = 0;
  while (pos < info.size()) {
    size_t end = info.find('\n', pos);
    if (end == std::string_view::npos) end = info.size();
    std::string_view line = info.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > key.size() && line.substr(0, key.size()) == key && line[key.size()] == ':') {
      return line.substr(key.size() + 1);
    }
    pos = end + 1;
  }
  return {};
}

uint64_t ToU64(std::string_view text) {
  return text.empty() ? 0 : std::strtoull(std::string(text).c_str(), nullptr, 10);
}

// hiredis' reply tree (RESP2: hiredis 0.14 speaks no RESP3) as routing::RedisReply.
routing::RedisReply ToRedisReply(const redisReply& reply) {
  using routing::RedisReply;
  switch (reply.type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
      return RedisReply::String(std::string(reply.str != nullptr ? reply.str : "", reply.len));
    case REDIS_REPLY_ERROR: {
      RedisReply error = RedisReply::String(std::string(reply.str, reply.len));
      error.type = RedisReply::Type::kError;
      return error;
    }
    case REDIS_REPLY_INTEGER:
      return RedisReply::Integer(reply.integer);
    case REDIS_REPLY_ARRAY: {
      std::vector<RedisReply> items;
      items.reserve(reply.elements);
      for (size_t i = 0; i < reply.elements; ++i) items.push_back(ToRedisReply(*reply.element[i]));
      return RedisReply::Array(std::move(items));
    }
    default:
      return RedisReply::Nil();
  }
}

class RedisProbe final : public NodeProbe {
 public:
  RedisProbe(const config::Node& node, std::string username, std::string password, int patience)
      : node_(node),
        username_(std::move(username)),
        password_(std::move(password)),
        patience_(patience) {}

  ProbeResult Check(std::chrono::milliseconds timeout) override {
    if (context_ && asked_at_) return AwaitLateAnswer(timeout);
    if (!context_) {
      if (auto error = Connect(timeout); !error.empty()) {
        ProbeResult result;
        result.error = std::move(error);
        return result;
      }
    }
    asked_at_ = Clock::now();
    unanswered_checks_ = 0;
    RedisReplyPtr reply(static_cast<redisReply*>(redisCommand(context_.get(), "INFO replication")));
    const int error_number = errno;
    return Answer(std::move(reply), error_number, /*late=*/false);
  }

 private:
  using Clock = std::chrono::steady_clock;

  ProbeResult AwaitLateAnswer(std::chrono::milliseconds timeout) {
    // hiredis marks a blocking context failed when a read times out, though nothing is lost
    // (its reader keeps any part of a reply): clearing the mark resumes the same read.
    context_->err = 0;
    context_->errstr[0] = '\0';
    redisSetTimeout(context_.get(), ToTimeval(timeout));
    void* raw = nullptr;
    const int status = redisGetReply(context_.get(), &raw);
    const int error_number = errno;
    RedisReplyPtr reply(status == REDIS_OK ? static_cast<redisReply*>(raw) : nullptr);
    return Answer(std::move(reply), error_number, /*late=*/true);
  }

  // The result of the pending INFO; errno_after is errno right after hiredis returned.
  ProbeResult Answer(RedisReplyPtr reply, int errno_after, bool late) {
    ProbeResult result;
    if (!reply) {
      const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
          Clock::now() - *asked_at_);
      // A read timeout, with the whole command already written.
      const bool timed_out = context_->err == REDIS_ERR_IO &&
                             (errno_after == EAGAIN || errno_after == EWOULDBLOCK) &&
                             sdslen(context_->obuf) == 0;
      if (timed_out) {
        result.error = "no answer for " + std::to_string(waited.count()) + " ms";
        // Given up after patience_ checks: by then the node is marked down, and the connection
        // may be dead without a reset (a peer that restarted behind a partition never answers).
        if (++unanswered_checks_ < patience_) return result;  // still waiting for it
      } else {
        result.error = context_->errstr;
      }
      context_.reset();
      asked_at_.reset();
      return result;
    }
    const Clock::time_point asked_at = *asked_at_;
    asked_at_.reset();
    if (reply->type != REDIS_REPLY_STRING) {
      result.error = std::string(reply->str ? reply->str : "unexpected INFO reply");
      context_.reset();
      return result;
    }
    const std::string_view info(reply->str, reply->len);
    const std::string_view role = InfoField(info, "role");
    result.ok = true;
    result.late = late;
    result.asked_at = asked_at;
    if (role == "master") {
      result.role = routing::Role::kPrimary;
      result.position = ToU64(InfoField(info, "master_repl_offset"));
      result.received_position = result.position;
      result.commit_position = result.position;
      // Not on a late answer: COMMAND would wait behind the same long commands and time out.
      if (!commands_loaded_ && !late) LoadCommandTable();
    } else {
      result.role = routing::Role::kReplica;
      result.link_up = InfoField(info, "master_link_status") == "up";
      // A replica applies what it receives at once: one offset serves for both.
      result.position = ToU64(InfoField(info, "slave_repl_offset"));
      result.received_position = result.position;
    }
    return result;
  }

  std::string Connect(std::chrono::milliseconds timeout) {
    RedisContextPtr context(
        redisConnectWithTimeout(node_.host.c_str(), node_.port, ToTimeval(timeout)));
    if (!context) return "out of memory";
    if (context->err) return context->errstr;
    redisSetTimeout(context.get(), ToTimeval(timeout));
    if (!password_.empty()) {
      RedisReplyPtr reply(static_cast<redisReply*>(
          username_.empty()
              ? redisCommand(context.get(), "AUTH %s", password_.c_str())
              : redisCommand(context.get(), "AUTH %s %s", username_.c_str(), password_.c_str())));
      if (!reply || reply->type == REDIS_REPLY_ERROR) {
        return !reply ? std::string(context->errstr) : std::string(reply->str, reply->len);
      }
    }
    context_ = std::move(context);
    commands_loaded_ = false;  // maybe another server (version) now: ask it again
    return {};
  }

  // Redis sessions classify commands with the primary's own table (DESIGN §5). Tried once per
  // connection; the built-in table stays in use when it fails.
  void LoadCommandTable() {
    commands_loaded_ = true;
    RedisReplyPtr reply(static_cast<redisReply*>(redisCommand(context_.get(), "COMMAND")));
    if (!reply) {
      context_.reset();  // a timeout leaves the connection out of step
      return;
    }
    auto table = routing::ParseCommandReply(ToRedisReply(*reply));
    if (!table.ok()) {
      spdlog::warn("redis: COMMAND on {}: {}; using the built-in command table", node_.name,
                   std::string(table.status().message()));
      return;
    }
    spdlog::info("redis: command table from {}: {} commands", node_.name, table->size());
    RedisCommandCatalog::Instance().Publish(
        std::make_shared<const routing::RedisCommandTable>(std::move(*table)));
  }

  config::Node node_;
  std::string username_;
  std::string password_;
  RedisContextPtr context_;
  const int patience_;
  std::optional<Clock::time_point> asked_at_;  // an INFO is pending on context_ since then
  int unanswered_checks_ = 0;                  // checks that timed out waiting for it
  bool commands_loaded_ = false;
};

}  // namespace

std::unique_ptr<NodeProbe> MakeRedisProbe(const config::Node& node, std::string username,
                                          std::string password, int patience) {
  return std::make_unique<RedisProbe>(node, std::move(username), std::move(password), patience);
}

}  // namespace nerava::proxy
