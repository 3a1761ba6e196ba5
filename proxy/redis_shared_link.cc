#include "proxy/redis_shared_link.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <map>
#include <tuple>

#include "nerava/protocol/redis/decoder.h"
#include "proxy/redis_commands.h"

namespace nerava::proxy {
namespace {

constexpr size_t kReadChunk = 64 * 1024;
// A reply larger than this is passed on in pieces; the link reads on once the client took
// what it has (so a 100 MB value never sits in memory whole, at the price of the other
// sessions' replies waiting behind it, as on one connection).
constexpr size_t kPieceBytes = 64 * 1024;
constexpr size_t kMaxUnread = 1024 * 1024;
// After a failed connect, sessions use their own connections this long before the next try.
constexpr auto kRetryAfter = std::chrono::seconds(1);

struct LinkSlot {
  std::shared_ptr<RedisSharedLink> link;
  std::chrono::steady_clock::time_point retry_after{};
};

// One registry per worker thread, by node name: each worker runs one io_context, so its
// sessions and links share a thread and need no locks.
std::map<std::string, LinkSlot, std::less<>>& WorkerLinks() {
  thread_local std::map<std::string, LinkSlot, std::less<>> links;
  return links;
}

}  // namespace

RedisSharedLink::RedisSharedLink(const asio::any_io_executor& executor, RedisBackendTarget target,
                                 const redis::Limits& limits)
    : target_(std::move(target)), limits_(limits), out_ready_(executor), drained_(executor) {}

std::shared_ptr<RedisSharedLink> RedisSharedLink::For(const routing::NodeState& node,
                                                      const RedisContext& context,
                                                      const asio::any_io_executor& executor) {
  auto& links = WorkerLinks();
  auto it = links.find(node.name);
  if (it == links.end()) it = links.emplace(node.name, LinkSlot{}).first;
  LinkSlot& slot = it->second;
  const bool moved = slot.link && (slot.link->target_.host != node.host ||
                                   slot.link->target_.port != node.port);
  if (moved) slot.link->Fail("the node's address changed");
  if (slot.link && slot.link->usable()) return slot.link;
  if (slot.link && !slot.link->failed_) return nullptr;  // still opening
  const auto now = std::chrono::steady_clock::now();
  if (now < slot.retry_after) return nullptr;
  slot.retry_after = now + kRetryAfter;
  slot.link = std::make_shared<RedisSharedLink>(
      executor, RedisBackendTarget{node.name, node.host, node.port}, context.limits);
  RedisBackendOptions options{context.backend_tls, context.settings.connect_timeout,
                              context.limits, context.metrics, context.server_keepalive};
  asio::co_spawn(executor,
                 slot.link->Open(slot.link, std::move(options),
                                 ReplayCommands(RedisConnState{}, context.settings)),
                 asio::detached);
  return nullptr;
}

std::shared_ptr<SharedReply> RedisSharedLink::Send(std::string_view request,
                                                   std::function<void()> on_data) {
  auto reply = std::make_shared<SharedReply>();
  reply->on_data = std::move(on_data);
  std::weak_ptr<RedisSharedLink> self = weak_from_this();
  reply->on_drained = [self] {
    if (auto link = self.lock()) link->drained_.Notify();
  };
  out_.append(request);
  owed_.push_back(reply);
  out_ready_.Notify();
  return reply;
}

awaitable<void> RedisSharedLink::Open(std::shared_ptr<RedisSharedLink> self,
                                      RedisBackendOptions options,
                                      std::vector<RedisCommand> login) {
  RedisBackendResult result = co_await ConnectRedisBackend(target_, options, login);
  if (!result.backend) {
    spdlog::warn("redis: cannot open the shared connection to {}: {}", target_.node_name,
                 result.error);
    failed_ = true;
    co_return;
  }
  if (failed_) {  // given up on while it connected (its node was marked down)
    result.backend->stream.Close();
    co_return;
  }
  connection_ = std::move(result.backend);
  connection_->node_name = target_.node_name;
  ready_ = true;
  spdlog::debug("redis: shared connection to {} open", target_.node_name);
  asio::co_spawn(connection_->stream.socket().get_executor(), WriteLoop(self), asio::detached);
  co_await ReadLoop(self);
}

awaitable<void> RedisSharedLink::WriteLoop(std::shared_ptr<RedisSharedLink> self) {
  while (!failed_) {
    if (out_.empty()) {
      co_await out_ready_.Wait();
      continue;
    }
    // Everything queued since the last write goes in one write.
    std::swap(out_, sending_);
    Stream& stream = connection_->stream;
    error_code ec;
    const size_t sent = stream.WriteInPlace(asio::buffer(sending_), ec);
    if (!ec && sent < sending_.size()) {
      std::tie(ec, std::ignore) = co_await stream.WriteRest(asio::buffer(sending_), sent);
    }
    sending_.clear();
    if (ec) {
      if (!failed_) Fail("write failed: " + ec.message());
      co_return;
    }
  }
}

awaitable<void> RedisSharedLink::ReadLoop(std::shared_ptr<RedisSharedLink> self) {
  ByteBuffer& in = connection_->in;
  redis::Decoder decoder(limits_);  // replies need no captured arguments
  size_t value_bytes = 0;  // bytes at the front of `in` fed for the reply in progress
  for (;;) {
    for (;;) {
      const std::string_view rest = in.data().substr(value_bytes);
      if (rest.empty()) break;
      auto progress = decoder.Feed(rest);
      if (!progress.ok()) {
        Fail("unframeable reply: " + std::string(progress.status().message()));
        co_return;
      }
      value_bytes += progress->consumed;
      if (owed_.empty()) {
        Fail("a reply nobody asked for");
        co_return;
      }
      if (!progress->complete && value_bytes < kPieceBytes) break;
      std::shared_ptr<SharedReply> reply = owed_.front();
      if (!reply->abandoned) reply->bytes.append(in.data().substr(0, value_bytes));
      in.Consume(value_bytes);
      value_bytes = 0;
      reply->started = true;
      if (progress->complete) {
        reply->done = true;
        owed_.pop_front();
      }
      if (reply->on_data) reply->on_data();
      while (!reply->done && reply->bytes.size() >= kMaxUnread && !reply->abandoned &&
             !failed_) {
        co_await drained_.Wait();  // a slow reader of a large value
      }
      if (failed_) co_return;
    }
    if (in.empty()) in.ShrinkTo(kReadChunk * 4);
    auto [ec, n] = co_await connection_->stream.ReadSome(in.Prepare(kReadChunk));
    if (ec) {
      if (!failed_) Fail(ec == asio::error::eof ? "closed by the server" : ec.message());
      co_return;
    }
    in.Commit(n);
  }
}

void RedisSharedLink::FailWorkerLink(const std::string& node, const std::string& why) {
  auto& links = WorkerLinks();
  auto it = links.find(node);
  if (it == links.end() || !it->second.link || it->second.link->failed_) return;
  it->second.link->Fail(why);
}

void RedisSharedLink::Fail(const std::string& why) {
  failed_ = true;
  ready_ = false;
  spdlog::info("redis: shared connection to {} lost: {}", target_.node_name, why);
  const std::string error = "-TRYAGAIN connection to Redis node \"" + target_.node_name +
                            "\" was lost (failover?); the command may have run\r\n";
  std::deque<std::shared_ptr<SharedReply>> owed;
  owed.swap(owed_);
  for (const std::shared_ptr<SharedReply>& reply : owed) {
    if (reply->started) {
      // Half passed on: the client cannot be given a clean error; the session must end.
      reply->broken = true;
    } else {
      reply->bytes = error;
    }
    reply->done = true;
    if (reply->on_data) reply->on_data();
  }
  if (connection_) connection_->stream.Close();
  out_ready_.Cancel();
  drained_.Cancel();
}

}  // namespace nerava::proxy
