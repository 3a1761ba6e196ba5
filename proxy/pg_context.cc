#include "proxy/pg_context.h"

#include <spdlog/spdlog.h>

namespace nerava::proxy {

absl::StatusOr<std::shared_ptr<const PgContext>> MakePgContext(const config::Config& config,
                                                               bool read_only,
                                                               const PgServices& services) {
  const config::Postgres& pg = *config.postgres;
  auto context = std::make_shared<PgContext>();
  context->settings = pg;
  context->failover_wait = config.failover.wait;
  context->server_keepalive = config.server_keepalive;
  context->read_only = read_only;
  context->limits.max_message = pg.max_message_bytes;
  context->route_policy.local_region = config.region;
  context->route_policy.max_lag_seconds =
      std::chrono::duration<double>(pg.max_lag.seconds).count();
  context->route_policy.max_lag_bytes = pg.max_lag.bytes;
  context->functions.SetAllowlist(pg.volatile_allowlist);
  context->function_policies = services.function_policies;
  for (const auto& user : pg.users) {
    PgUserEntry entry{user.name, user.password,
                      user.backend_password.empty() ? user.password : user.backend_password,
                      pg::MakeScramSecret(user.password)};
    context->users.emplace(user.name, std::move(entry));
  }
  context->unknown_user_scram = pg::MakeScramSecret(pg::MakeScramNonce());
  try {
    if (pg.tls.enabled()) {
      auto tls = std::make_shared<ssl::context>(ssl::context::tls_server);
      tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                       ssl::context::no_tlsv1_1);
      tls->use_certificate_chain_file(pg.tls.cert_file);
      tls->use_private_key_file(pg.tls.key_file, ssl::context::pem);
      context->server_tls = std::move(tls);
    }
    auto backend_tls = std::make_shared<ssl::context>(ssl::context::tls_client);
    if (pg.backend_tls.mode == config::SslMode::kVerifyFull) {
      if (pg.backend_tls.root_cert.empty()) {
        backend_tls->set_default_verify_paths();
      } else {
        backend_tls->load_verify_file(pg.backend_tls.root_cert);
      }
    }
    context->backend_tls = std::move(backend_tls);
  } catch (const boost::system::system_error& e) {
    return absl::InvalidArgumentError(config.source + ": postgres.tls: " + e.what());
  }
  context->topology = services.topology;
  context->cancels = services.cancels;
  context->sessions = services.sessions;
  context->metrics = services.metrics;
  context->clients = services.clients;
  context->write_gate = services.write_gate;
  return std::shared_ptr<const PgContext>(std::move(context));
}

}  // namespace nerava::proxy
