#include "proxy/redis_context.h"

namespace nerava::proxy {

absl::StatusOr<std::shared_ptr<const RedisContext>> MakeRedisContext(const config::Config& config,
                                                                     TopologyHolder* topology,
                                                                     SessionRegistry* sessions,
                                                                     Metrics* metrics,
                                                                     WriteGate* write_gate,
                                                                     ClientRegistry* clients) {
  const config::Redis& redis = *config.redis;
  auto context = std::make_shared<RedisContext>();
  context->settings = redis;
  context->failover_wait = config.failover.wait;
  context->server_keepalive = config.server_keepalive;
  try {
    if (redis.tls.enabled()) {
      auto tls = std::make_shared<ssl::context>(ssl::context::tls_server);
      tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
      tls->use_certificate_chain_file(redis.tls.cert_file);
      tls->use_private_key_file(redis.tls.key_file, ssl::context::pem);
      context->server_tls = std::move(tls);
    }
    if (redis.backend_tls) {
      auto tls = std::make_shared<ssl::context>(ssl::context::tls_client);
      if (redis.backend_root_cert.empty()) {
        tls->set_default_verify_paths();
      } else {
        tls->load_verify_file(redis.backend_root_cert);
      }
      context->backend_tls = std::move(tls);
    }
  } catch (const boost::system::system_error& e) {
    return absl::InvalidArgumentError(config.source + ": redis.tls: " + e.what());
  }
  context->topology = topology;
  context->sessions = sessions;
  context->metrics = metrics;
  context->write_gate = write_gate;
  context->clients = clients;
  context->route_policy.local_region = config.region;
  context->route_policy.max_lag_seconds =
      std::chrono::duration<double>(redis.max_lag.seconds).count();
  context->route_policy.max_lag_bytes = redis.max_lag.bytes;
  return std::shared_ptr<const RedisContext>(std::move(context));
}

}  // namespace nerava::proxy
