// Sends a PostgreSQL CancelRequest: on its own connection, to the server process `key` names.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "nerava/protocol/pg/messages.h"
#include "proxy/asio.h"

namespace nerava::proxy {

// Connects, sends the request and waits for the server to close, all within `timeout`: a node
// that does not answer (unreachable, frozen) costs at most that. Arguments by value: callers
// spawn it detached.
awaitable<void> SendCancelRequest(tcp::endpoint server, pg::BackendKeyData key,
                                  std::chrono::milliseconds timeout);
// The same by name. Asio cannot cancel a name lookup, so a slow resolver can outlast `timeout`.
awaitable<void> SendCancelRequest(std::string host, uint16_t port, pg::BackendKeyData key,
                                  std::chrono::milliseconds timeout);

}  // namespace nerava::proxy
