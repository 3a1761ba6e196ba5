// Redis node check with hiredis: `INFO replication` gives role, offsets and link status in one
// round trip. The connection is kept between checks and dropped after any failure.
#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <memory>
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
  RedisProbe(const config::Node& node, std::string username, std::string password)
      : node_(node), username_(std::move(username)), password_(std::move(password)) {}

  ProbeResult Check(std::chrono::milliseconds timeout) override {
    ProbeResult result;
    if (!context_) {
      if (auto error = Connect(timeout); !error.empty()) {
        result.error = std::move(error);
        return result;
      }
    }
    RedisReplyPtr reply(static_cast<redisReply*>(redisCommand(context_.get(), "INFO replication")));
    if (!reply || reply->type != REDIS_REPLY_STRING) {
      result.error = !reply ? std::string(context_->errstr)
                            : std::string(reply->str ? reply->str : "unexpected INFO reply");
      context_.reset();
      return result;
    }
    const std::string_view info(reply->str, reply->len);
    const std::string_view role = InfoField(info, "role");
    result.ok = true;
    if (role == "master") {
      result.role = routing::Role::kPrimary;
      result.position = ToU64(InfoField(info, "master_repl_offset"));
      result.received_position = result.position;
      result.commit_position = result.position;
      if (!commands_loaded_) LoadCommandTable();
    } else {
      result.role = routing::Role::kReplica;
      result.link_up = InfoField(info, "master_link_status") == "up";
      // A replica applies what it receives at once: one offset serves for both.
      result.position = ToU64(InfoField(info, "slave_repl_offset"));
      result.received_position = result.position;
    }
    return result;
  }

 private:
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
  bool commands_loaded_ = false;
};

}  // namespace

std::unique_ptr<NodeProbe> MakeRedisProbe(const config::Node& node, std::string username,
                                          std::string password) {
  return std::make_unique<RedisProbe>(node, std::move(username), std::move(password));
}

}  // namespace nerava::proxy
