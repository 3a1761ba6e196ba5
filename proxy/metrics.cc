#include "proxy/metrics.h"

#include <prometheus/text_serializer.h>

#include <vector>

namespace nerava::proxy {
namespace {

using routing::Protocol;

constexpr const char* kPrefix = "nerava_proxy_";

std::string Name(const char* suffix) { return std::string(kPrefix) + suffix; }

template <typename T>
prometheus::Family<T>& MakeFamily(prometheus::Registry& registry, const char* name,
                                  const char* help) {
  if constexpr (std::is_same_v<T, prometheus::Counter>) {
    return prometheus::BuildCounter().Name(Name(name)).Help(help).Register(registry);
  } else if constexpr (std::is_same_v<T, prometheus::Gauge>) {
    return prometheus::BuildGauge().Name(Name(name)).Help(help).Register(registry);
  } else {
    return prometheus::BuildHistogram().Name(Name(name)).Help(help).Register(registry);
  }
}

// From 0.5 ms (a cached point read next door) to 10 s (a report query).
const prometheus::Histogram::BucketBoundaries& DurationBuckets() {
  static const prometheus::Histogram::BucketBoundaries buckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  return buckets;
}

// Topology gauges of one snapshot in a registry of their own, built per scrape.
void AddTopology(prometheus::Registry& registry, const routing::Topology& topology) {
  auto& up = MakeFamily<prometheus::Gauge>(
      registry, "node_up", "1 when the node answers its checks, by the role it reports");
  auto& lag_seconds = MakeFamily<prometheus::Gauge>(
      registry, "replica_lag_seconds",
      "Seconds since the primary stood at the replica's replayed position");
  auto& lag_bytes = MakeFamily<prometheus::Gauge>(
      registry, "replica_lag_bytes", "Primary position minus the replica's replayed position");
  auto& primary_info = MakeFamily<prometheus::Gauge>(
      registry, "primary_info", "1 for the node the proxy currently treats as primary");
  auto& split_brain = MakeFamily<prometheus::Gauge>(
      registry, "split_brain",
      "1 while more than one node says it is primary (writes go to one of them only)");
  for (Protocol protocol : {Protocol::kPostgres, Protocol::kRedis}) {
    const routing::ProtocolTopology& nodes = topology.Get(protocol);
    const std::string protocol_name = routing::ProtocolName(protocol);
    for (const routing::NodeState& node : nodes.nodes) {
      up.Add({{"protocol", protocol_name},
              {"node", node.name},
              {"role", routing::RoleName(node.role)}})
          .Set(node.up ? 1 : 0);
      if (node.lag_seconds) {
        lag_seconds.Add({{"protocol", protocol_name}, {"node", node.name}}).Set(*node.lag_seconds);
      }
      if (node.lag_bytes) {
        lag_bytes.Add({{"protocol", protocol_name}, {"node", node.name}})
            .Set(static_cast<double>(*node.lag_bytes));
      }
    }
    split_brain.Add({{"protocol", protocol_name}}).Set(nodes.split_brain ? 1 : 0);
    if (const routing::NodeState* primary = nodes.Primary()) {
      primary_info
          .Add({{"protocol", protocol_name}, {"node", primary->name}, {"region", primary->region}})
          .Set(1);
    }
  }
}

void AddGates(prometheus::Registry& registry, const WriteGates& gates) {
  auto& held = MakeFamily<prometheus::Gauge>(
      registry, "writes_held", "Requests waiting for a primary (switchover, pause, failover)");
  auto& paused = MakeFamily<prometheus::Gauge>(
      registry, "writes_paused", "1 while a switchover or `pause` holds new writes");
  for (Protocol protocol : {Protocol::kPostgres, Protocol::kRedis}) {
    const WriteGate& gate = protocol == Protocol::kPostgres ? gates.postgres : gates.redis;
    const std::string name = routing::ProtocolName(protocol);
    held.Add({{"protocol", name}}).Set(gate.held());
    paused.Add({{"protocol", name}}).Set(gate.mode() == WriteGate::Mode::kOpen ? 0 : 1);
  }
}

}  // namespace

Metrics::Metrics(const TopologyHolder& topology)
    : topology_(topology),
      registry_(std::make_shared<prometheus::Registry>()),
      queries_(MakeFamily<prometheus::Counter>(*registry_, "queries_total",
                                               "Queries (PostgreSQL) or commands (Redis) "
                                               "answered, by route and node")),
      errors_(MakeFamily<prometheus::Counter>(*registry_, "errors_total",
                                              "Client-visible errors, by kind")),
      query_duration_(
          MakeFamily<prometheus::Histogram>(*registry_, "query_duration_seconds",
                                            "From a request's first byte to the end of its reply")),
      client_connections_(MakeFamily<prometheus::Gauge>(*registry_, "client_connections",
                                                        "Open client connections")),
      backend_connections_(MakeFamily<prometheus::Gauge>(*registry_, "backend_connections",
                                                         "Open proxy-to-server connections")),
      stale_read_avoided_(MakeFamily<prometheus::Counter>(
          *registry_, "stale_read_avoided_total",
          "Reads sent to the primary because no replica had the session's last write yet")),
      failovers_(MakeFamily<prometheus::Counter>(
          *registry_, "failovers_total",
          "Changes of the primary in use: planned (switch-primary) or unplanned")),
      last_failover_(MakeFamily<prometheus::Gauge>(
          *registry_, "last_failover_duration_seconds",
          "The last failover: seconds writes were held (planned) or without a primary "
          "(unplanned)")) {}

prometheus::Counter& Metrics::Failovers(Protocol protocol, std::string_view kind) {
  return failovers_.Add({{"protocol", routing::ProtocolName(protocol)}, {"kind", std::string(kind)}});
}

prometheus::Gauge& Metrics::LastFailoverSeconds(Protocol protocol) {
  return last_failover_.Add({{"protocol", routing::ProtocolName(protocol)}});
}

prometheus::Counter& Metrics::Queries(Protocol protocol, std::string_view route,
                                      std::string_view node) {
  return queries_.Add({{"protocol", routing::ProtocolName(protocol)},
                       {"route", std::string(route)},
                       {"node", std::string(node)}});
}

prometheus::Counter& Metrics::Errors(Protocol protocol, std::string_view kind) {
  return errors_.Add({{"protocol", routing::ProtocolName(protocol)}, {"kind", std::string(kind)}});
}

prometheus::Histogram& Metrics::QueryDuration(Protocol protocol) {
  return query_duration_.Add({{"protocol", routing::ProtocolName(protocol)}}, DurationBuckets());
}

prometheus::Gauge& Metrics::ClientConnections(std::string_view listener) {
  return client_connections_.Add({{"listener", std::string(listener)}});
}

prometheus::Gauge& Metrics::BackendConnections(Protocol protocol, std::string_view node) {
  return backend_connections_.Add(
      {{"protocol", routing::ProtocolName(protocol)}, {"node", std::string(node)}});
}

prometheus::Counter& Metrics::StaleReadAvoided(Protocol protocol) {
  return stale_read_avoided_.Add({{"protocol", routing::ProtocolName(protocol)}});
}

std::string Metrics::Serialize() const {
  prometheus::Registry topology_registry;
  AddTopology(topology_registry, *topology_.Get());
  if (gates_) AddGates(topology_registry, *gates_);
  std::vector<prometheus::MetricFamily> families = topology_registry.Collect();
  for (auto& family : registry_->Collect()) families.push_back(std::move(family));
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace nerava::proxy
