// Prometheus metrics (DESIGN §10, prefix nerava_proxy_).
//
//   data path (workers)                      scrape (/metrics on the main io_context)
//   session: Counter& / Gauge& / Histogram&  ──▶ Registry::Collect()  ─┐
//            looked up once, then atomic ops                           ├─▶ TextSerializer
//   topology snapshot ──────────────────────▶ fresh gauges per scrape ─┘
//
// Topology gauges (node_up, replica_lag_*, primary_info) are rebuilt from the snapshot at every
// scrape, so a node that changed role leaves no stale series behind. Everything else lives in
// one registry. Lookups (`Queries`, `Errors`, ...) take the family's lock: call them when a
// session starts or changes node, keep the reference, and only increment on the data path.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "nerava/routing/topology.h"
#include "proxy/topology_holder.h"
#include "proxy/write_gate.h"

namespace nerava::proxy {

// errors_total{kind} values used by the sessions.
inline constexpr std::string_view kErrorProtocol = "protocol";  // unframeable input
inline constexpr std::string_view kErrorAuth = "auth";          // client auth failed
inline constexpr std::string_view kErrorBackendConnect = "backend_connect";
inline constexpr std::string_view kErrorBackendLost = "backend_lost";

class Metrics {
 public:
  explicit Metrics(const TopologyHolder& topology);
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // queries_total{protocol,route,node}; route is "primary" or "replica".
  prometheus::Counter& Queries(routing::Protocol protocol, std::string_view route,
                               std::string_view node);
  // errors_total{protocol,kind}
  prometheus::Counter& Errors(routing::Protocol protocol, std::string_view kind);
  // query_duration_seconds{protocol}: from a request's first byte to its last reply.
  prometheus::Histogram& QueryDuration(routing::Protocol protocol);
  // client_connections{listener}: open client connections of one listener.
  prometheus::Gauge& ClientConnections(std::string_view listener);
  // backend_connections{protocol,node}: open proxy-to-server connections.
  prometheus::Gauge& BackendConnections(routing::Protocol protocol, std::string_view node);
  // stale_read_avoided_total{protocol}: reads sent to the primary because the replica that was
  // fresh enough for others had not replayed this session's last write yet.
  prometheus::Counter& StaleReadAvoided(routing::Protocol protocol);
  // failovers_total{protocol,kind}: kind "planned" (switch-primary) or "unplanned".
  prometheus::Counter& Failovers(routing::Protocol protocol, std::string_view kind);
  // last_failover_duration_seconds{protocol}: writes held (planned) or no primary (unplanned).
  prometheus::Gauge& LastFailoverSeconds(routing::Protocol protocol);
  // writes_held{protocol} and writes_paused{protocol} are read from the gates at each scrape.
  void SetWriteGates(const WriteGates* gates) { gates_ = gates; }

  // The text exposition format (version 0.0.4) of everything, topology gauges refreshed.
  std::string Serialize() const;

 private:
  const TopologyHolder& topology_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& queries_;
  prometheus::Family<prometheus::Counter>& errors_;
  prometheus::Family<prometheus::Histogram>& query_duration_;
  prometheus::Family<prometheus::Gauge>& client_connections_;
  prometheus::Family<prometheus::Gauge>& backend_connections_;
  prometheus::Family<prometheus::Counter>& stale_read_avoided_;
  prometheus::Family<prometheus::Counter>& failovers_;
  prometheus::Family<prometheus::Gauge>& last_failover_;
  const WriteGates* gates_ = nullptr;
};

// Holds +1 on a gauge for its lifetime (an open connection). Movable, not copyable; a null
// gauge holds nothing, so sessions without metrics need no branches.
class GaugeHold {
 public:
  GaugeHold() = default;
  explicit GaugeHold(prometheus::Gauge* gauge) : gauge_(gauge) {
    if (gauge_) gauge_->Increment();
  }
  GaugeHold(GaugeHold&& other) noexcept : gauge_(std::exchange(other.gauge_, nullptr)) {}
  GaugeHold& operator=(GaugeHold&& other) noexcept {
    if (this != &other) {
      Release();
      gauge_ = std::exchange(other.gauge_, nullptr);
    }
    return *this;
  }
  GaugeHold(const GaugeHold&) = delete;
  GaugeHold& operator=(const GaugeHold&) = delete;
  ~GaugeHold() { Release(); }

  void Release() {
    if (gauge_) gauge_->Decrement();
    gauge_ = nullptr;
  }

 private:
  prometheus::Gauge* gauge_ = nullptr;
};

}  // namespace nerava::proxy
