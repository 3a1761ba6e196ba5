// The whole proxy process: workers, listeners, monitor, and the orderly drain on SIGTERM.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "nerava/config/config.h"
#include "proxy/admin_socket.h"
#include "proxy/asio.h"
#include "proxy/cancel_registry.h"
#include "proxy/client_registry.h"
#include "proxy/function_loader.h"
#include "proxy/function_policy_holder.h"
#include "proxy/http_server.h"
#include "proxy/listener.h"
#include "proxy/metrics.h"
#include "proxy/monitor.h"
#include "proxy/pg_context.h"
#include "proxy/redis_context.h"
#include "proxy/sentinel_watcher.h"
#include "proxy/session_registry.h"
#include "proxy/switchover.h"
#include "proxy/topology_holder.h"
#include "proxy/worker_pool.h"
#include "proxy/write_gate.h"

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
  absl::Status OpenPgListener(const char* name, const config::Endpoint& endpoint,
                              std::shared_ptr<const PgContext> context);
  absl::Status OpenAdmin();  // metrics, admin.http and admin.socket
  awaitable<void> Drain();

  config::Config config_;
  // Declared before workers_: session frames destroyed with the workers' io_contexts still
  // release their gauges and client rows then.
  ClientRegistry clients_;
  std::unique_ptr<Metrics> metrics_;
  WriteGates gates_;  // sessions hold tickets on them: outlives the workers
  asio::io_context main_io_{1};
  std::unique_ptr<WorkerPool> workers_;
  TopologyHolder topology_;
  FunctionPolicyHolder function_policies_;  // pg_proc volatility, from function_loader_
  CancelRegistry cancels_;
  SessionRegistry sessions_;
  std::unique_ptr<Monitor> monitor_;
  std::unique_ptr<SentinelWatcher> sentinel_watcher_;  // redis.sentinel; feeds monitor_
  std::unique_ptr<Switchover> switchover_;  // switch-primary, pause, resume; failover counts
  std::unique_ptr<FunctionLoader> function_loader_;  // postgres only
  std::shared_ptr<const PgContext> pg_rw_;
  std::shared_ptr<const PgContext> pg_ro_;
  std::shared_ptr<const RedisContext> redis_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unique_ptr<HttpServer> http_;    // admin.http
  std::unique_ptr<AdminSocket> admin_;  // admin.socket
};

}  // namespace nerava::proxy
