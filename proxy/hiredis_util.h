// What the proxy's own hiredis connections share (node checks, Sentinel, the switchover):
// ownership of hiredis handles and their timeouts.
#pragma once

#include <hiredis.h>
#include <sys/time.h>

#include <chrono>
#include <memory>

namespace nerava::proxy {

struct RedisContextFree {
  void operator()(redisContext* context) const { redisFree(context); }
};
using RedisContextPtr = std::unique_ptr<redisContext, RedisContextFree>;

struct RedisReplyFree {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using RedisReplyPtr = std::unique_ptr<redisReply, RedisReplyFree>;

inline timeval ToTimeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

}  // namespace nerava::proxy
