#include "proxy/switchover.h"

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <thread>
#include <utility>

#include "proxy/admin_sql.h"

namespace nerava::proxy {
namespace {

using routing::NodeState;
using routing::Protocol;
using routing::Role;
using Clock = std::chrono::steady_clock;

int Index(Protocol protocol) { return protocol == Protocol::kPostgres ? 0 : 1; }

std::chrono::milliseconds Left(Clock::time_point deadline) {
  return std::max(std::chrono::milliseconds(1),
                  std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
}

uint64_t ToU64(const std::string& text) { return std::strtoull(text.c_str(), nullptr, 10); }

// "key:value" of an INFO reply.
std::string InfoField(const std::string& info, const std::string& key) {
  const std::string needle = "\n" + key + ":";
  size_t pos = ("\n" + info).find(needle);
  if (pos == std::string::npos) return "";
  pos += needle.size() - 1;  // in `info` (one char shorter)
  const size_t end = info.find_first_of("\r\n", pos);
  return info.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
}

// Without --promote the target must be the primary already; with it, a replica to promote.
absl::Status CheckTargetRole(const NodeState& target, bool promote) {
  if (!promote && target.role != Role::kPrimary) {
    return absl::FailedPreconditionError(target.name + " is a replica: add --promote to promote it");
  }
  if (promote && target.role != Role::kReplica) {
    return absl::FailedPreconditionError(target.name + " is not a replica; nothing to promote");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<SwitchReport>> Switchover::SwitchPrimary(
    const std::string& target, bool promote, std::chrono::milliseconds timeout) {
  std::unique_lock running(running_, std::try_to_lock);
  if (!running.owns_lock()) return absl::FailedPreconditionError("a switchover is running");
  const routing::TopologySnapshot snapshot = topology_.Get();
  // Choose first, switch after: a region switch moves every protocol with a node there or
  // none of them, so writes never end up split across regions by a half-done command.
  std::vector<std::pair<Protocol, const NodeState*>> chosen_by_protocol;
  std::string unfit;  // protocols with a node in the region but none that can take over
  bool known = false;
  for (Protocol protocol : {Protocol::kPostgres, Protocol::kRedis}) {
    const routing::ProtocolTopology& nodes = snapshot->Get(protocol);
    const NodeState* chosen = nullptr;
    for (const NodeState& node : nodes.nodes) {
      if (node.name == target) chosen = &node;
    }
    // A region: its node that can take over (a replica when promoting, else a primary).
    bool in_region = false;
    for (const NodeState& node : nodes.nodes) {
      if (chosen || node.region != target) continue;
      in_region = true;
      const bool fits = promote ? node.role == Role::kReplica || nodes.Primary() == &node
                                : node.role == Role::kPrimary;
      if (fits && node.up) chosen = &node;
    }
    known = known || chosen || in_region;
    if (chosen) {
      chosen_by_protocol.emplace_back(protocol, chosen);
    } else if (in_region) {
      unfit += (unfit.empty() ? "" : " and ") + std::string(routing::ProtocolName(protocol));
    }
  }
  if (!known) {
    return absl::NotFoundError("unknown node or region \"" + target +
                               "\" (see `status` for the node names)");
  }
  if (!unfit.empty()) {
    return absl::FailedPreconditionError(
        "region \"" + target + "\" has no " + unfit + " node that is up and " +
        (promote ? "a replica" : "a primary (add --promote)") + "; nothing was switched");
  }
  std::vector<SwitchReport> reports;
  for (const auto& [protocol, chosen] : chosen_by_protocol) {
    if (!reports.empty() && !reports.back().ok) {
      // One protocol failed to move: moving the next would split writes across regions.
      const NodeState* current = snapshot->Get(protocol).Primary();
      SwitchReport skipped{protocol, current ? current->name : "", chosen->name};
      skipped.error = "not attempted: the " +
                      std::string(routing::ProtocolName(reports.back().protocol)) +
                      " switch failed";
      reports.push_back(std::move(skipped));
      continue;
    }
    if (snapshot->Get(protocol).Primary() == chosen) {
      SwitchReport report{protocol, chosen->name, chosen->name};
      report.ok = true;
      report.Step(chosen->name + " is already the primary in use: nothing to do");
      reports.push_back(std::move(report));
      continue;
    }
    reports.push_back(protocol == Protocol::kPostgres ? SwitchPostgres(*chosen, promote, timeout)
                                                      : SwitchRedis(*chosen, promote, timeout));
  }
  return reports;
}

template <typename Move>
SwitchReport Switchover::Run(Protocol protocol, const NodeState& target,
                             std::chrono::milliseconds timeout, Move move) {
  const routing::TopologySnapshot snapshot = topology_.Get();
  const NodeState* old = snapshot->Get(protocol).Primary();
  SwitchReport report{protocol, old ? old->name : "", target.name};
  WriteGate& gate = protocol == Protocol::kPostgres ? gates_.postgres : gates_.redis;
  const WriteGate::Mode mode_before = gate.mode();
  const auto started = report.started;
  const auto deadline = started + timeout;
  {
    std::lock_guard lock(state_mutex_);
    planned_[Index(protocol)] = true;
  }
  gate.Close(mode_before == WriteGate::Mode::kHoldAll ? mode_before
                                                      : WriteGate::Mode::kHoldWrites);
  report.Step("new writes held");
  if (!gate.WaitDrained(Left(deadline))) {
    report.aborted = gate.AbortActive();
    gate.WaitDrained(std::chrono::seconds(2));
    report.Step("aborted the write work of " + std::to_string(report.aborted) +
                           " sessions that did not finish within the timeout");
  } else {
    report.Step("write work under way finished");
  }
  absl::Status moved = move(old, report, deadline);
  if (moved.ok()) {
    monitor_.PreferPrimary(protocol, target.name);
    if (WaitPublished(protocol, target.name, deadline + std::chrono::seconds(5))) {
      report.ok = true;
      report.Step("writes now go to " + target.name);
    } else {
      report.error = "the monitor did not see " + target.name + " as the primary in time";
    }
  } else {
    report.error = std::string(moved.message());
  }
  gate.Close(mode_before);  // back to what `pause` had, usually open
  if (mode_before == WriteGate::Mode::kOpen) gate.Open();
  report.writes_held_ms = std::chrono::duration<double, std::milli>(Clock::now() - started).count();
  {
    std::lock_guard lock(state_mutex_);
    planned_[Index(protocol)] = false;
  }
  if (report.ok && metrics_) {
    metrics_->Failovers(protocol, "planned").Increment();
    metrics_->LastFailoverSeconds(protocol).Set(report.writes_held_ms / 1000);
  }
  spdlog::info("switchover: {} {} -> {}: {} (writes held {:.1f} ms)", routing::ProtocolName(protocol),
               report.from.empty() ? "none" : report.from, report.to,
               report.ok ? "done" : "failed: " + report.error, report.writes_held_ms);
  return report;
}

SwitchReport Switchover::SwitchPostgres(const NodeState& target, bool promote,
                                        std::chrono::milliseconds timeout) {
  const config::Postgres& settings = *config_.postgres;
  return Run(Protocol::kPostgres, target, timeout,
             [&](const NodeState* old, SwitchReport& report, Clock::time_point deadline)
                 -> absl::Status {
    if (auto role = CheckTargetRole(target, promote); !role.ok() || !promote) return role;
    auto standby = AdminPgConnection::Open(settings, target.host, target.port, Left(deadline));
    if (!standby.ok()) return standby.status();
    if (old) {
      // Fence the old primary for every other client (other sidecars too): new transactions
      // there are read only, so nothing is acknowledged after the position we wait for.
      auto primary = AdminPgConnection::Open(settings, old->host, old->port, Left(deadline));
      if (!primary.ok()) return primary.status();
      for (const char* sql : {"ALTER SYSTEM SET default_transaction_read_only = on",
                              "SELECT pg_reload_conf()"}) {
        if (auto done = primary->Value(sql); !done.ok()) return done.status();
      }
      auto unfence = [&primary] {
        (void)primary->Value("ALTER SYSTEM RESET default_transaction_read_only");
        (void)primary->Value("SELECT pg_reload_conf()");
      };
      report.Step("fenced " + old->name + ": default_transaction_read_only = on");
      // A marker transaction, committed (and flushed) after every acknowledged one: once the
      // standby sees it committed it has replayed them all, WAL being replayed in order. (An
      // LSN comparison can wait for a record that never comes when the insert position sits
      // past a page header.)
      std::string marker;
      for (const char* sql : {"BEGIN READ WRITE", "SET LOCAL synchronous_commit = on",
                              "SELECT pg_current_xact_id()::text", "COMMIT"}) {
        auto done = primary->Value(sql);
        if (!done.ok()) {
          (void)primary->Value("ROLLBACK");
          unfence();
          return done.status();
        }
        if (!done->empty()) marker = *done;
      }
      const std::string probe = "SELECT pg_xact_status('" + marker + "'::xid8)";
      bool replayed = false;
      while (!replayed && Clock::now() < deadline) {
        auto status = standby->Value(probe);  // an error: "in the future", not replayed yet
        replayed = status.ok() && *status == "committed";
        if (!replayed) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      if (!replayed) {
        unfence();
        return absl::DeadlineExceededError(target.name + " did not replay " + old->name +
                                           "'s last commit in time");
      }
      report.Step(target.name + " replayed " + old->name + "'s last commit (xid " + marker + ")");
    }
    auto promoted = standby->Value("SELECT pg_promote(true, 30)");
    if (!promoted.ok()) return promoted.status();
    if (*promoted != "t") return absl::InternalError("pg_promote() on " + target.name + " failed");
    // The fence travels with the configuration (pg_rewind copies it): lift it on the new primary.
    (void)standby->Value("ALTER SYSTEM RESET default_transaction_read_only");
    (void)standby->Value("SELECT pg_reload_conf()");
    report.promoted = true;
    report.Step("promoted " + target.name);
    if (old) {
      report.Step(old->name + " stays up, fenced read-only, on the old timeline; no "
                             "writes reach it (demote it with pg_rewind + standby.signal)");
    }
    return absl::OkStatus();
  });
}

SwitchReport Switchover::SwitchRedis(const NodeState& target, bool promote,
                                     std::chrono::milliseconds timeout) {
  const config::Redis& settings = *config_.redis;
  return Run(Protocol::kRedis, target, timeout,
             [&](const NodeState* old, SwitchReport& report, Clock::time_point deadline)
                 -> absl::Status {
    auto command = [&](const NodeState& node, const std::string& words) {
      return RedisCommand(settings, node.host, node.port, words, Left(deadline));
    };
    if (auto role = CheckTargetRole(target, promote); !role.ok() || !promote) return role;
    if (!settings.sentinels.empty()) {
      // Sentinel would undo a promotion it did not make: it must run the failover itself.
      return absl::FailedPreconditionError(
          "Redis is managed by Sentinel (redis.sentinel): run SENTINEL FAILOVER " +
          settings.sentinel_master + " on a sentinel; the proxy follows it");
    }
    if (old) {
      // Fence: writes of every client of the old primary wait while the replica catches up.
      const auto pause_ms = std::to_string(Left(deadline).count() + 2000);
      if (auto paused = command(*old, "CLIENT PAUSE " + pause_ms + " WRITE"); !paused.ok()) {
        return paused.status();
      }
      report.Step("paused writes on " + old->name + " (CLIENT PAUSE WRITE)");
      auto info = command(*old, "INFO replication");
      if (!info.ok()) return info.status();
      const uint64_t wanted = ToU64(InfoField(*info, "master_repl_offset"));
      uint64_t replayed = 0;
      while (Clock::now() < deadline) {
        auto replica_info = command(target, "INFO replication");
        if (!replica_info.ok()) break;
        replayed = ToU64(InfoField(*replica_info, "slave_repl_offset"));
        if (replayed >= wanted) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      if (replayed < wanted) {
        (void)command(*old, "CLIENT UNPAUSE");
        return absl::DeadlineExceededError(target.name + " did not reach " + old->name +
                                           "'s replication offset in time");
      }
      report.Step(target.name + " reached " + old->name + "'s replication offset");
    }
    if (auto done = command(target, "REPLICAOF NO ONE"); !done.ok()) return done.status();
    report.promoted = true;
    report.Step("promoted " + target.name + " (REPLICAOF NO ONE)");
    if (old) {
      auto follow = command(*old, "REPLICAOF " + target.host + " " + std::to_string(target.port));
      (void)command(*old, "CLIENT UNPAUSE");
      if (follow.ok()) {
        report.Step(old->name + " now replicates from " + target.name);
      } else {
        report.Step("could not make " + old->name + " a replica: " +
                               std::string(follow.status().message()));
      }
    }
    return absl::OkStatus();
  });
}

bool Switchover::WaitPublished(Protocol protocol, const std::string& node,
                               Clock::time_point deadline) const {
  while (Clock::now() < deadline) {
    const routing::TopologySnapshot snapshot = topology_.Get();
    const NodeState* primary = snapshot->Get(protocol).Primary();
    if (primary && primary->name == node) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

absl::Status Switchover::Pause(WriteGate::Mode mode) {
  std::unique_lock running(running_, std::try_to_lock);
  if (!running.owns_lock()) return absl::FailedPreconditionError("a switchover is running");
  gates_.postgres.Close(mode);
  gates_.redis.Close(mode);
  return absl::OkStatus();
}

absl::Status Switchover::Resume() {
  std::unique_lock running(running_, std::try_to_lock);
  if (!running.owns_lock()) return absl::FailedPreconditionError("a switchover is running");
  gates_.postgres.Open();
  gates_.redis.Open();
  return absl::OkStatus();
}

void Switchover::OnPrimaryChange(Protocol protocol, const std::string& from,
                                 const std::string& to) {
  std::lock_guard lock(state_mutex_);
  const int index = Index(protocol);
  if (to.empty()) {
    lost_at_[index] = Clock::now();
    return;
  }
  const bool first = from.empty() && lost_at_[index] == Clock::time_point{};
  const double seconds =
      lost_at_[index] == Clock::time_point{}
          ? 0
          : std::chrono::duration<double>(Clock::now() - lost_at_[index]).count();
  lost_at_[index] = {};
  if (first || planned_[index]) return;  // start-up, or counted by the switchover
  spdlog::warn("failover: {} primary is now {} (was {}); {:.2f} s without a primary",
               routing::ProtocolName(protocol), to, from.empty() ? "none" : from, seconds);
  if (metrics_) {
    metrics_->Failovers(protocol, "unplanned").Increment();
    metrics_->LastFailoverSeconds(protocol).Set(seconds);
  }
}

}  // namespace nerava::proxy
