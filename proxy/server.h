// The whole proxy process: workers, listeners, monitor, and the orderly drain on SIGTERM.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "nerava/config/config.h"
#include "proxy/asio.h"
#include "proxy/cancel_registry.h"
#include "proxy/listener.h"
#include "proxy/monitor.h"
#include "proxy/pg_context.h"
#include "proxy/session_registry.h"
#include "proxy/topology_holder.h"
#include "proxy/worker_pool.h"

namespace nerava::proxy {

class Server {
 public:
  explicit Server(config::Config config);
  ~Server();

  // Opens every listener (failing when any address is taken), starts the monitor and serves
  // until SIGTERM or SIGINT, then drains. Returns the process exit code.
  int Run();

 private:
  absl::Status Open();
  awaitable<void> Drain();

  config::Config config_;
  asio::io_context main_io_{1};
  std::unique_ptr<WorkerPool> workers_;
  TopologyHolder topology_;
  CancelRegistry cancels_;
  SessionRegistry sessions_;
  std::unique_ptr<Monitor> monitor_;
  std::shared_ptr<const PgContext> pg_rw_;
  std::shared_ptr<const PgContext> pg_ro_;
  std::vector<std::unique_ptr<Listener>> listeners_;
};

}  // namespace nerava::proxy
