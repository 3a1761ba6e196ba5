// The admin socket's commands (`status`, `show nodes|clients|config`, `help`), separate from the
// socket so that they are plain functions of the proxy's state: a topology snapshot, the client
// registry, the config and the metrics. Every command accepts `--json`.
#pragma once

#include <string>
#include <string_view>

#include "nerava/config/config.h"
#include "proxy/client_registry.h"
#include "proxy/metrics.h"
#include "proxy/switchover.h"
#include "proxy/topology_holder.h"

namespace nerava::proxy {

struct AdminReply {
  bool ok = true;
  std::string text;  // the body; on error, one line saying what is wrong
};

struct AdminSources {
  const TopologyHolder* topology = nullptr;
  const ClientRegistry* clients = nullptr;  // may be null: no clients shown
  const config::Config* config = nullptr;
  Metrics* metrics = nullptr;  // may be null: connections shown as 0
  Switchover* switchover = nullptr;  // may be null: switch-primary/pause/resume refused
  const WriteGates* gates = nullptr;  // may be null: pause state not shown
};

// Runs one request line ("status --json"). Never throws. switch-primary blocks the calling
// thread for up to its timeout: call from the admin thread, not a worker.
AdminReply RunAdminCommand(std::string_view line, const AdminSources& sources);

}  // namespace nerava::proxy
