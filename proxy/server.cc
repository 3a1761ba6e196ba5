#include "proxy/server.h"

#include <spdlog/spdlog.h>

#include "nerava/protocol/pg/messages.h"
#include "proxy/pg_handshake.h"
#include "proxy/pg_io.h"
#include "proxy/pg_session.h"
#include "proxy/redis_session.h"

namespace nerava::proxy {
namespace {

awaitable<void> RefusePgClient(tcp::socket& socket) {
  co_await RefusePgConnection(socket, "53300", "sorry, too many clients already");
}

}  // namespace

Server::Server(config::Config config) : config_(std::move(config)) {}

Server::~Server() {
  // An accept the drain aborted still sits in main_io_'s queue, holding the new socket it made
  // on a worker's io_context: let those accept loops end while the workers and listeners exist
  // (destroyed with main_io_ after the workers, they touched a freed io_context; ASan).
  for (auto& listener : listeners_) listener->Close();
  main_io_.restart();
  main_io_.poll();
  listeners_.clear();
  function_loader_.reset();
  sentinel_watcher_.reset();  // it calls into monitor_
  monitor_.reset();
  // Destroy the workers (and with their io_contexts, any session frames still pending) while
  // the registries those sessions point to are alive.
  if (workers_) workers_->Stop();
  workers_.reset();
}

absl::Status Server::Open() {
  workers_ = std::make_unique<WorkerPool>(config_.workers);
  monitor_ = std::make_unique<Monitor>(config_, topology_);
  monitor_->OnNodeDown([sessions = &sessions_](routing::Protocol protocol,
                                              const std::string& node) {
    sessions->NodeDown(protocol, node);
  });
  if (auto status = OpenAdmin(); !status.ok()) return status;
  PgServices services{&topology_, &cancels_, &sessions_, metrics_.get(), &clients_};
  services.function_policies = &function_policies_;
  services.write_gate = &gates_.postgres;
  if (config_.postgres) {
    // Until pg_proc is loaded: the built-in fallback with the configured allowlist.
    routing::FunctionPolicy fallback;
    fallback.SetAllowlist(config_.postgres->volatile_allowlist);
    function_policies_.Publish(std::make_shared<const routing::FunctionPolicy>(fallback));
    function_loader_ = std::make_unique<FunctionLoader>(config_, topology_, function_policies_);
    auto rw = MakePgContext(config_, /*read_only=*/false, services);
    if (!rw.ok()) return rw.status();
    pg_rw_ = *rw;
    if (auto status = OpenPgListener("pg", config_.postgres->listen_rw, pg_rw_); !status.ok()) {
      return status;
    }
    if (config_.postgres->listen_ro) {
      auto ro = MakePgContext(config_, /*read_only=*/true, services);
      if (!ro.ok()) return ro.status();
      pg_ro_ = *ro;
      if (auto status = OpenPgListener("pg_ro", *config_.postgres->listen_ro, pg_ro_);
          !status.ok()) {
        return status;
      }
    }
  }
  if (config_.redis) {
    auto context = MakeRedisContext(config_, &topology_, &sessions_, metrics_.get(), &gates_.redis,
                                    &clients_);
    if (!context.ok()) return context.status();
    redis_ = *context;
    auto listener = Listener::Open(main_io_, "redis", config_.redis->listen,
                                   config_.redis->max_client_connections);
    if (!listener.ok()) return listener.status();
    listeners_.push_back(std::move(*listener));
    listeners_.back()->Start(
        *workers_,
        [context = redis_](tcp::socket socket) {
          return RunRedisSession(std::move(socket), context);
        },
        RefuseRedisClient);
  }
  return absl::OkStatus();
}

absl::Status Server::OpenPgListener(const char* name, const config::Endpoint& endpoint,
                                    std::shared_ptr<const PgContext> context) {
  auto listener =
      Listener::Open(main_io_, name, endpoint, config_.postgres->max_client_connections);
  if (!listener.ok()) return listener.status();
  listeners_.push_back(std::move(*listener));
  listeners_.back()->Start(
      *workers_,
      [context = std::move(context)](tcp::socket socket) {
        return RunPgSession(std::move(socket), context);
      },
      RefusePgClient);
  return absl::OkStatus();
}

int Server::Run() {
  if (auto status = Open(); !status.ok()) {
    spdlog::critical("{}", std::string(status.message()));
    return 1;
  }
  monitor_->Start();
  if (config_.redis && !config_.redis->sentinels.empty()) {
    sentinel_watcher_ = std::make_unique<SentinelWatcher>(config_, *monitor_);
    sentinel_watcher_->Start();
  }
  if (function_loader_) function_loader_->Start();
  for (const auto& listener : listeners_) {
    spdlog::info("{}: listening on port {}", listener->name(), listener->port());
  }
  asio::signal_set signals(main_io_, SIGINT, SIGTERM);
  signals.async_wait([this](const error_code& ec, int signal) {
    if (ec) return;
    spdlog::info("received signal {}: draining", signal);
    asio::co_spawn(main_io_, Drain(), asio::detached);
  });
  main_io_.run();
  spdlog::info("stopped");
  return 0;
}

absl::Status Server::OpenAdmin() {
  metrics_ = std::make_unique<Metrics>(topology_);
  // Series exist from the start, 0 until used: rate() and absent() in alert rules need them.
  for (routing::Protocol protocol : {routing::Protocol::kPostgres, routing::Protocol::kRedis}) {
    const bool postgres = protocol == routing::Protocol::kPostgres;
    if (postgres ? !config_.postgres : !config_.redis) continue;
    for (const auto& node : postgres ? config_.postgres->nodes : config_.redis->nodes) {
      metrics_->BackendConnections(protocol, node.name);
    }
    metrics_->Failovers(protocol, "planned");
    metrics_->Failovers(protocol, "unplanned");
    metrics_->LastFailoverSeconds(protocol);
    metrics_->StaleReadAvoided(protocol);
    if (!postgres) metrics_->ClientConnections("redis");
  }
  if (config_.admin.http) {
    auto http = HttpServer::Open(main_io_, *config_.admin.http, *metrics_, [this] {
      return Readiness(*topology_.Get(), config_.postgres.has_value(),
                       config_.redis.has_value());
    });
    if (!http.ok()) return http.status();
    http_ = std::move(*http);
    http_->Start();
    spdlog::info("admin http: listening on {}:{}", config_.admin.http->host, http_->port());
  }
  metrics_->SetWriteGates(&gates_);
  switchover_ = std::make_unique<Switchover>(config_, topology_, gates_, *monitor_, metrics_.get());
  monitor_->OnPrimaryChange([switchover = switchover_.get()](routing::Protocol protocol,
                                                             const std::string& from,
                                                             const std::string& to) {
    switchover->OnPrimaryChange(protocol, from, to);
  });
  if (!config_.admin.socket.empty()) {
    AdminSources sources{&topology_, &clients_, &config_, metrics_.get()};
    sources.switchover = switchover_.get();
    sources.gates = &gates_;
    auto admin = AdminSocket::Open(
        main_io_, config_.admin.socket,
        [sources](std::string_view line) { return RunAdminCommand(line, sources); });
    if (!admin.ok()) return admin.status();
    admin_ = std::move(*admin);
    admin_->Start();
    spdlog::info("admin socket: listening on {}", config_.admin.socket);
  }
  return absl::OkStatus();
}

awaitable<void> Server::Drain() {
  if (http_) http_->SetDraining();
  for (auto& listener : listeners_) listener->Close();
  // Sessions finish on their own for up to shutdown_timeout; then the rest are told 57P01.
  asio::steady_timer poll(main_io_);
  const auto give_up = std::chrono::steady_clock::now() + config_.shutdown_timeout;
  while (sessions_.size() > 0 && std::chrono::steady_clock::now() < give_up) {
    poll.expires_after(std::chrono::milliseconds(50));
    co_await poll.async_wait(kNoThrow);
  }
  if (sessions_.size() > 0) {
    spdlog::info("drain: closing {} remaining sessions", sessions_.size());
    sessions_.ShutdownAll();
    const auto hard_stop = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (sessions_.size() > 0 && std::chrono::steady_clock::now() < hard_stop) {
      poll.expires_after(std::chrono::milliseconds(20));
      co_await poll.async_wait(kNoThrow);
    }
  }
  workers_->Stop();
  main_io_.stop();
}

}  // namespace nerava::proxy
