// The proxy authenticates PostgreSQL clients itself, against the users in its config, before it
// opens any server connection: a client that cannot log in never costs a server a backend.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "proxy/asio.h"
#include "proxy/byte_buffer.h"
#include "proxy/pg_context.h"
#include "proxy/stream.h"

namespace nerava::proxy {

// Runs the exchange the config's auth method calls for. On success returns the user's entry
// (null under `trust` for a user the config does not list). On failure the client has been
// sent its FATAL ErrorResponse already (28P01 for a wrong password or unknown user, 08P01 for a
// protocol violation) and the status says why, for the log.
awaitable<absl::StatusOr<const PgUserEntry*>> AuthenticateClient(Stream& client,
                                                                 ByteBuffer& buffer,
                                                                 const std::string& user,
                                                                 const PgContext& context);

}  // namespace nerava::proxy
