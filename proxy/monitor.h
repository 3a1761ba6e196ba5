// The topology monitor: one thread per node checks it every `monitor.interval` (so one slow node
// never delays another), and every finished check publishes a fresh immutable snapshot.
//
//   node thread ──Check()──▶ NodeProbe ──result──▶ Monitor::Record ──▶ BuildSnapshot ──▶ holder
//   (x N nodes)                                    (mutex, not on the data path)   (atomic swap)
//
// Lag (DESIGN §6): every check of the chosen primary adds a (time, position) sample to that
// protocol's watermark; a replica's lag in seconds is the time since the primary stood at the
// replica's replayed position, measured at the moment the replica was checked.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <thread>
#include <vector>

#include "nerava/config/config.h"
#include "nerava/routing/topology.h"
#include "nerava/routing/watermark.h"
#include "proxy/node_probe.h"
#include "proxy/topology_holder.h"

namespace nerava::proxy {

class Monitor {
 public:
  Monitor(const config::Config& config, TopologyHolder& holder);
  ~Monitor();  // stops and joins the node threads
  Monitor(const Monitor&) = delete;
  Monitor& operator=(const Monitor&) = delete;

  void Start();

  // The node that wins a tie between nodes that both say they are primary (same timeline), set
  // by a switchover; empty: primary_region breaks ties.
  void PreferPrimary(routing::Protocol protocol, const std::string& node);
  // Called (under the monitor's lock, from a node thread) when the primary in use changes:
  // `from` empty when there was none, `to` empty when there is none now.
  using PrimaryChange = std::function<void(routing::Protocol, const std::string& from,
                                           const std::string& to)>;
  void OnPrimaryChange(PrimaryChange callback);
  // Called from a node thread, after the snapshot that shows it is published, when a node that
  // was up is marked down: sessions drop their connections to it rather than wait on them.
  // Not at once when no other node of the protocol is healthy (up, last check passed): nodes
  // that all fail their checks together more likely show a starved or paused observer (this
  // proxy's host) than servers that all died, and dropping connections then turns a hiccup into
  // errors. The report is held until another node passes a check started after the hold began
  // (the trouble is this node's alone after all) or `failure_threshold` × max(interval, timeout)
  // has passed, and not made at all if the node comes back first.
  using NodeDown = std::function<void(routing::Protocol, const std::string& node)>;
  void OnNodeDown(NodeDown callback);

  // Redis Sentinel's view (DESIGN §7, optional): the node Sentinel names as master wins ties
  // like PreferPrimary, and replicas Sentinel flags (s_down, o_down, disconnected) serve no
  // reads. Node names are config names; an empty master leaves ties to primary_region.
  void SetSentinelView(const std::string& master, std::vector<std::string> unusable_replicas);

 private:
  struct Slot {
    routing::Protocol protocol;
    size_t index;  // into the protocol's node list
    std::unique_ptr<NodeProbe> probe;
  };

  // Lag bookkeeping of one protocol, guarded by mutex_.
  struct LagState {
    routing::Watermark watermark;
    routing::Watermark commit_watermark;  // read-your-writes: (check start, commit position)
    int owner = -1;         // node index whose positions the watermark holds
    uint32_t timeline = 0;  // and its timeline (PostgreSQL)
    bool changed = true;    // the snapshot's copy is stale
    // Per node: when its last successful check saw its position (mid-point of the check).
    std::vector<std::chrono::steady_clock::time_point> observed;
    std::string preferred;        // PreferPrimary (a switchover's target)
    std::string sentinel_master;  // SetSentinelView (Redis); PreferPrimary wins over it
    std::string primary_name;  // the primary last published, for change reports
    bool split_brain = false;  // two nodes say they are primary
    std::vector<std::string> unusable;  // Sentinel-flagged replicas (Redis)
    // Per node: when its last passed check started.
    std::vector<std::chrono::steady_clock::time_point> passed_check_started;
    // Per node: since when its down report is held (OnNodeDown); empty when none is.
    std::vector<std::optional<std::chrono::steady_clock::time_point>> held_since;
  };

  void RunNode(std::stop_token stop, Slot& slot);
  // Returns the node's name when the sessions are to drop their connections to it (the caller
  // tells them, outside the lock, after the new snapshot is published): the check marked it
  // down, or ended the hold of its report. Only the node's own thread reports it, so a report
  // can never overtake the node's coming back up.
  std::optional<std::string> Record(const Slot& slot, const ProbeResult& result,
                                    std::chrono::steady_clock::time_point started,
                                    std::chrono::steady_clock::time_point observed);
  // Whether the node's down report is due now (see OnNodeDown).
  bool ReportDownLocked(routing::Protocol protocol, const routing::ProtocolTopology& topology,
                        LagState& lag, size_t index, bool marked_down);
  routing::TopologySnapshot BuildSnapshotLocked();
  static const std::string& Preferred(const LagState& lag);
  // Split-brain flag, PRIMARY_REGION mismatch and primary changes: logged and reported.
  void ReportPrimaryLocked(routing::Protocol protocol, routing::ProtocolTopology& topology,
                           LagState& lag);

  const std::chrono::milliseconds interval_;
  const std::chrono::milliseconds timeout_;
  const int failure_threshold_;
  const std::chrono::milliseconds hold_down_limit_;  // see OnNodeDown
  const std::string primary_region_;
  TopologyHolder& holder_;

  std::mutex mutex_;
  routing::Topology state_;  // guarded by mutex_
  LagState pg_lag_;          // guarded by mutex_
  LagState redis_lag_;       // guarded by mutex_
  std::vector<std::unique_ptr<Slot>> slots_;
  PrimaryChange on_primary_change_;  // guarded by mutex_
  NodeDown on_node_down_;            // guarded by mutex_
  std::vector<std::jthread> threads_;
};

// Picks the primary among nodes that are up and say they are primary: for PostgreSQL the
// highest timeline wins; a tie goes to `preferred` (a switchover's target), then to
// `primary_region`, then to config order. -1 when none.
int ChoosePrimary(const routing::ProtocolTopology& topology, routing::Protocol protocol,
                  const std::string& primary_region, const std::string& preferred = "");

}  // namespace nerava::proxy
