#include "proxy/listener.h"

#include <spdlog/spdlog.h>

#include "absl/status/status.h"

namespace nerava::proxy {

absl::StatusOr<std::unique_ptr<Listener>> Listener::Open(asio::io_context& io, std::string name,
                                                         const config::Endpoint& endpoint,
                                                         int max_connections) {
  error_code ec;
  auto address = asio::ip::make_address(endpoint.host, ec);
  if (ec) {
    return absl::InvalidArgumentError(name + ": cannot listen on " + endpoint.ToString() +
                                      ": not an IP address");
  }
  tcp::acceptor acceptor(io);
  const tcp::endpoint where(address, endpoint.port);
  acceptor.open(where.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(where, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(name + ": cannot listen on " + endpoint.ToString() + ": " +
                                  ec.message() +
                                  (ec == asio::error::address_in_use
                                       ? " (another process uses this port; change the config)"
                                       : ""));
  }
  return std::unique_ptr<Listener>(new Listener(std::move(acceptor), std::move(name),
                                                max_connections));
}

void Listener::Start(WorkerPool& workers, SessionFn session, RefuseFn refuse) {
  asio::co_spawn(acceptor_.get_executor(),
                 AcceptLoop(workers, std::move(session), std::move(refuse)), asio::detached);
}

void Listener::Close() {
  error_code ignored;
  acceptor_.close(ignored);
}

awaitable<void> Listener::AcceptLoop(WorkerPool& workers, SessionFn session, RefuseFn refuse) {
  for (;;) {
    auto [ec, socket] = co_await acceptor_.async_accept(workers.Next(), kNoThrow);
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
    if (ec) {
      // EMFILE and the like: back off briefly instead of spinning.
      spdlog::warn("{}: accept failed: {}", name_, ec.message());
      asio::steady_timer pause(acceptor_.get_executor(), std::chrono::milliseconds(50));
      co_await pause.async_wait(kNoThrow);
      continue;
    }
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    auto executor = socket.get_executor();
    auto counter = connections_;
    const bool over_limit = counter->fetch_add(1) >= max_connections_;
    asio::co_spawn(
        executor,
        [](tcp::socket client, SessionFn run, RefuseFn refuse_fn, bool refuse_it,
           std::shared_ptr<std::atomic<int>> count) -> awaitable<void> {
          struct Release {
            std::shared_ptr<std::atomic<int>> count;
            ~Release() { count->fetch_sub(1); }
          } release{std::move(count)};
          if (refuse_it) {
            co_await refuse_fn(client);
          } else {
            co_await run(std::move(client));
          }
        }(std::move(socket), session, refuse, over_limit, counter),
        [name = name_](std::exception_ptr error) {
          if (!error) return;
          try {
            std::rethrow_exception(error);
          } catch (const std::exception& e) {
            spdlog::error("{}: session ended by an unexpected exception: {}", name, e.what());
          }
        });
  }
}

}  // namespace nerava::proxy
