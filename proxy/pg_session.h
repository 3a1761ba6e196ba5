// One PostgreSQL client connection, from its first byte to its close.
#pragma once

#include <memory>

#include "proxy/asio.h"
#include "proxy/pg_context.h"

namespace nerava::proxy {

// Runs the session on the socket's executor until the client or the server goes away, or a
// drain ends it. Never throws.
awaitable<void> RunPgSession(tcp::socket socket, std::shared_ptr<const PgContext> context);

}  // namespace nerava::proxy
