// Accepts connections on one address and starts a session for each on a worker, refusing
// clients over the listener's connection limit with the protocol's own "too many" error.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nerava/config/config.h"
#include "proxy/asio.h"
#include "proxy/worker_pool.h"

namespace nerava::proxy {

class Listener {
 public:
  // Starts a session on the socket's executor; returns when the session ends.
  using SessionFn = std::function<awaitable<void>(tcp::socket)>;
  // Writes the protocol's refusal for a client over the limit (then the socket is closed).
  using RefuseFn = std::function<awaitable<void>(tcp::socket&)>;

  // Binds and listens; a taken port is an error that names the address.
  static absl::StatusOr<std::unique_ptr<Listener>> Open(asio::io_context& io, std::string name,
                                                        const config::Endpoint& endpoint,
                                                        int max_connections);

  void Start(WorkerPool& workers, SessionFn session, RefuseFn refuse);
  void Close();
  const std::string& name() const { return name_; }
  int connections() const { return connections_->load(std::memory_order_relaxed); }
  uint16_t port() const { return acceptor_.local_endpoint().port(); }

 private:
  Listener(tcp::acceptor acceptor, std::string name, int max_connections)
      : acceptor_(std::move(acceptor)), name_(std::move(name)), max_connections_(max_connections) {}
  awaitable<void> AcceptLoop(WorkerPool& workers, SessionFn session, RefuseFn refuse);

  tcp::acceptor acceptor_;
  std::string name_;
  int max_connections_;
  // Shared with sessions, which may outlive the listener during a drain.
  std::shared_ptr<std::atomic<int>> connections_ = std::make_shared<std::atomic<int>>(0);
};

}  // namespace nerava::proxy
