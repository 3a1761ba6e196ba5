// Server connections that finished sessions left clean, kept by each worker for the next session
// that logs in to the same node (in the same role, not marked down since) as the same user with
// the same start-up parameters (PgBouncer's session pooling; on when
// postgres.server_idle_timeout is set). A client that connects per request then skips the
// server's fork and authentication and gets a backend whose caches are already warm. DISCARD
// ALL runs before a connection is kept, so nothing of the old session survives: SET, SET ROLE,
// temp tables, prepared statements, LISTEN, advisory locks, sequences' currval. Off by default:
// a parked connection keeps its database in use (DROP DATABASE right after the client left
// fails) and the next client sees the same pg_backend_pid().
//
//   session ends ─▶ ParkServer: DISCARD ALL ─▶ ReadyForQuery 'I' ─▶ idle[key] (newest last)
//   new session ─▶ OpenPgServer: newest idle[key] with nothing unread ─▶ reused
//                                none ─▶ ConnectPgBackend
//   each worker closes what stayed idle longer than postgres.server_idle_timeout
//
// The client still gets the server's own start-up ParameterStatus messages (kept from the first
// login; DISCARD ALL returns every setting to them) and the proxy's own BackendKeyData.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "proxy/pg_backend.h"
#include "proxy/pg_context.h"

namespace nerava::proxy {

// A server connection for a session: a parked one when this worker has one for the same login,
// else a new one.
awaitable<PgBackendResult> OpenPgServer(const PgContext& context, const PgBackendTarget& target,
                                        const StartupParameters& parameters,
                                        const std::string& user, const std::string& password);

// Resets `backend` in the background and keeps it for the next session with the same login;
// closes it instead when pooling is off or the reset fails. `backend` must be idle ('I', no
// request unanswered, nothing unread).
void ParkServer(const PgContext& context, std::unique_ptr<PgBackend> backend,
                const StartupParameters& parameters, const std::string& user);

}  // namespace nerava::proxy
