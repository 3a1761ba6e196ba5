// One Redis client connection, from its first byte to its close.
#pragma once

#include <memory>

#include "proxy/asio.h"
#include "proxy/redis_context.h"

namespace nerava::proxy {

// Runs the session on the socket's executor until the client goes away, sends QUIT or garbage,
// or a drain ends it. Never throws.
awaitable<void> RunRedisSession(tcp::socket socket, std::shared_ptr<const RedisContext> context);

// The answer to a client over the listener's connection limit (Redis' own words).
awaitable<void> RefuseRedisClient(tcp::socket& socket);

}  // namespace nerava::proxy
