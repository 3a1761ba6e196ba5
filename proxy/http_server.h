// The admin HTTP endpoint (admin.http, DESIGN §10): Prometheus metrics and health checks for
// the orchestrator. Runs on the server's main io_context, never on a worker.
//
//   GET /metrics  200, text format 0.0.4 (topology gauges fresh from the latest snapshot)
//   GET /healthz  200 "ok" while the process serves
//   GET /readyz   200 while a reachable primary is known for every configured protocol (and
//                 the proxy is not draining), else 503 with the reason
//   anything else 404 (405 for methods other than GET/HEAD)
//
// Each connection: requests of at most kMaxRequestBytes, each read within kReadTimeout, at
// most kMaxRequestsPerConnection kept-alive requests; at most kMaxConnections at once.
#pragma once

#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nerava/config/config.h"
#include "nerava/routing/topology.h"
#include "proxy/asio.h"
#include "proxy/metrics.h"

namespace nerava::proxy {

// OK when `topology` knows an up primary for every configured protocol; otherwise Unavailable
// naming the protocols without one.
absl::Status Readiness(const routing::Topology& topology, bool postgres, bool redis);

class HttpServer {
 public:
  using ReadyFn = std::function<absl::Status()>;

  static constexpr size_t kMaxRequestBytes = 8 * 1024;
  static constexpr auto kReadTimeout = std::chrono::seconds(10);
  static constexpr int kMaxRequestsPerConnection = 100;
  static constexpr int kMaxConnections = 64;

  // Binds and listens; a taken port is an error that names the address.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Open(asio::io_context& io,
                                                          const config::Endpoint& endpoint,
                                                          const Metrics& metrics, ReadyFn ready);
  void Start();
  void Close();
  // From now on /readyz answers 503 "draining".
  void SetDraining() { draining_ = true; }
  uint16_t port() const { return port_; }

 private:
  HttpServer(tcp::acceptor acceptor, const Metrics& metrics, ReadyFn ready)
      : acceptor_(std::move(acceptor)),
        metrics_(metrics),
        ready_(std::move(ready)),
        port_(acceptor_.local_endpoint().port()) {}
  awaitable<void> AcceptLoop();
  awaitable<void> Serve(tcp::socket socket);

  tcp::acceptor acceptor_;
  const Metrics& metrics_;
  ReadyFn ready_;
  uint16_t port_;
  bool draining_ = false;
  // Shared with connection coroutines, which may outlive a closed acceptor briefly.
  std::shared_ptr<int> connections_ = std::make_shared<int>(0);
};

}  // namespace nerava::proxy
