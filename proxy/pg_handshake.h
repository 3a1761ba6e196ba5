// The start of a PostgreSQL connection, before authentication: TLS and GSS negotiation,
// CancelRequest forwarding, protocol version negotiation, and the StartupMessage.
#pragma once

#include <optional>

#include "nerava/protocol/pg/startup.h"
#include "proxy/asio.h"
#include "proxy/byte_buffer.h"
#include "proxy/pg_context.h"
#include "proxy/stream.h"

namespace nerava::proxy {

// Returns the client's StartupMessage (with `_pq_.` extensions removed after declining them), or
// nullopt when the connection is done: a cancel request was forwarded, or the client was refused
// with a FATAL error (already sent), or it went away.
awaitable<std::optional<pg::StartupPacket>> RunPgHandshake(Stream& client, ByteBuffer& in,
                                                           const PgContext& context);

// Refuses a connection the way PostgreSQL does (53300 over the connection limit): TLS and GSS
// requests are declined first so that libpq, which reads an error during SSL negotiation as a
// broken server, shows the client the refusal itself. Bounded by a short deadline.
awaitable<void> RefusePgConnection(tcp::socket& socket, std::string code, std::string message);

}  // namespace nerava::proxy
