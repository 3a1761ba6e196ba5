// Redis ops over a hiredis context switched to non-blocking after a blocking connect.
//
//   Send:  redisAppendCommandArgv ──► hiredis output buffer        (pending_ += op)
//   Flush: redisBufferWrite ──► socket
//   Read:  redisBufferRead ◄── socket; redisGetReplyFromReader per reply ──► front of pending_
//
// Replies come back in request order (RESP has no ids), so pending_ is a FIFO of start times.
#include <fcntl.h>
#include <hiredis/hiredis.h>

#include <charconv>
#include <deque>
#include <string>

#include "nerava_bench/workload.h"

namespace nerava::bench {
namespace {

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;

struct ReplyDeleter {
  void operator()(void* reply) const { freeReplyObject(reply); }
};

// redis://[:password@]host:port[/db]; only the parts the bench needs.
struct RedisUrl {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string password;
};

absl::StatusOr<RedisUrl> ParseUrl(std::string_view url) {
  constexpr std::string_view kScheme = "redis://";
  if (url.substr(0, kScheme.size()) != kScheme) {
    return absl::InvalidArgumentError("expected redis://host:port, got " + std::string(url));
  }
  url.remove_prefix(kScheme.size());
  RedisUrl out;
  if (const size_t at = url.rfind('@'); at != std::string_view::npos) {
    std::string_view auth = url.substr(0, at);
    if (const size_t colon = auth.find(':'); colon != std::string_view::npos) {
      auth.remove_prefix(colon + 1);
    }
    out.password = std::string(auth);
    url.remove_prefix(at + 1);
  }
  url = url.substr(0, url.find('/'));
  const size_t colon = url.rfind(':');
  if (colon != std::string_view::npos) {
    std::string_view port = url.substr(colon + 1);
    if (std::from_chars(port.data(), port.data() + port.size(), out.port).ec != std::errc()) {
      return absl::InvalidArgumentError("bad port in redis URL");
    }
    url = url.substr(0, colon);
  }
  if (!url.empty()) out.host = std::string(url);
  return out;
}

absl::StatusOr<ContextPtr> Open(const std::string& url, int timeout_seconds) {
  absl::StatusOr<RedisUrl> parsed = ParseUrl(url);
  if (!parsed.ok()) return parsed.status();
  timeval tv{timeout_seconds, 0};
  ContextPtr c(redisConnectWithTimeout(parsed->host.c_str(), parsed->port, tv));
  if (c == nullptr || c->err != 0) {
    return absl::UnavailableError(c ? c->errstr : "out of memory");
  }
  if (redisSetTimeout(c.get(), tv) != REDIS_OK) return absl::UnavailableError(c->errstr);
  if (!parsed->password.empty()) {
    std::unique_ptr<void, ReplyDeleter> reply(
        redisCommand(c.get(), "AUTH %s", parsed->password.c_str()));
    if (reply == nullptr ||
        static_cast<redisReply*>(reply.get())->type == REDIS_REPLY_ERROR) {
      return absl::PermissionDeniedError("redis AUTH failed");
    }
  }
  return c;
}

class RedisConnection final : public Connection {
 public:
  RedisConnection(ContextPtr context, const WorkloadOptions& options, uint64_t seed)
      : context_(std::move(context)),
        options_(options),
        rng_(seed),
        value_(options.redis_value_size, 'x') {}

  int fd() const override { return context_->fd; }
  size_t in_flight() const override { return pending_.size(); }
  std::vector<Clock::time_point> pending_starts() const override {
    return {pending_.begin(), pending_.end()};
  }
  const std::string& first_error() const override { return first_error_; }

  absl::Status Send(Clock::time_point start) override {
    bool set = false;
    switch (options_.workload) {
      case Workload::kRedisSet:
        set = true;
        break;
      case Workload::kRedisMixed:
        set = rng_() % 100 >= 90;
        break;
      case Workload::kRedisGet:
      case Workload::kRedisPipeline:
        break;
      default:
        return absl::InvalidArgumentError("not a Redis workload");
    }
    key_ = "key:" + std::to_string(rng_() % static_cast<uint64_t>(options_.redis_keys));
    const char* argv[] = {set ? "SET" : "GET", key_.data(), value_.data()};
    const size_t lens[] = {3, key_.size(), value_.size()};
    if (redisAppendCommandArgv(context_.get(), set ? 3 : 2, argv, lens) != REDIS_OK) {
      return absl::UnavailableError(context_->errstr);
    }
    pending_.push_back(start);
    return absl::OkStatus();
  }

  absl::StatusOr<bool> Flush() override {
    int done = 0;
    if (redisBufferWrite(context_.get(), &done) != REDIS_OK) {
      return absl::UnavailableError(context_->errstr);
    }
    return done == 0;
  }

  absl::Status Read(std::vector<Completion>& done) override {
    if (redisBufferRead(context_.get()) != REDIS_OK) {
      return absl::UnavailableError(context_->errstr);
    }
    while (!pending_.empty()) {
      void* raw = nullptr;
      if (redisGetReplyFromReader(context_.get(), &raw) != REDIS_OK) {
        return absl::UnavailableError(context_->errstr);
      }
      if (raw == nullptr) break;
      std::unique_ptr<void, ReplyDeleter> reply(raw);
      const auto* r = static_cast<redisReply*>(raw);
      const bool ok = r->type != REDIS_REPLY_ERROR;
      if (!ok && first_error_.empty()) first_error_.assign(r->str, r->len);
      done.push_back({pending_.front(), ok, false});
      pending_.pop_front();
    }
    return absl::OkStatus();
  }

 private:
  ContextPtr context_;
  const WorkloadOptions& options_;
  std::mt19937_64 rng_;
  std::string value_;
  std::string key_;
  std::deque<Clock::time_point> pending_;
  std::string first_error_;
};

}  // namespace

absl::Status PrepareRedis(const std::string& url, const WorkloadOptions& options) {
  absl::StatusOr<ContextPtr> c = Open(url, options.connect_timeout_seconds);
  if (!c.ok()) return c.status();
  const std::string value(options.redis_value_size, 'x');
  // Pipelined in batches of 1000 so filling 100k keys takes a few round trips, not 100k.
  for (int64_t base = 0; base < options.redis_keys; base += 1000) {
    const int64_t end = std::min(options.redis_keys, base + 1000);
    for (int64_t i = base; i < end; ++i) {
      const std::string key = "key:" + std::to_string(i);
      const char* argv[] = {"SET", key.data(), value.data()};
      const size_t lens[] = {3, key.size(), value.size()};
      redisAppendCommandArgv(c->get(), 3, argv, lens);
    }
    for (int64_t i = base; i < end; ++i) {
      void* raw = nullptr;
      if (redisGetReply(c->get(), &raw) != REDIS_OK) return absl::UnavailableError((*c)->errstr);
      std::unique_ptr<void, ReplyDeleter> reply(raw);
      if (static_cast<redisReply*>(raw)->type == REDIS_REPLY_ERROR) {
        return absl::FailedPreconditionError(static_cast<redisReply*>(raw)->str);
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Connection>> ConnectRedis(const std::string& url,
                                                         const WorkloadOptions& options,
                                                         uint64_t seed) {
  absl::StatusOr<ContextPtr> c = Open(url, options.connect_timeout_seconds);
  if (!c.ok()) return c.status();
  // hiredis retries EAGAIN only without REDIS_BLOCK; the poll loop does the waiting.
  (*c)->flags &= ~REDIS_BLOCK;
  const int flags = fcntl((*c)->fd, F_GETFL);
  if (flags < 0 || fcntl((*c)->fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return absl::InternalError("cannot make the redis socket non-blocking");
  }
  return std::unique_ptr<Connection>(
      std::make_unique<RedisConnection>(std::move(*c), options, seed));
}

}  // namespace nerava::bench
