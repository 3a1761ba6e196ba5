// The routing half of a Redis session (DESIGN §5, §6): which node a request goes to, over which
// connection (the pin, the session's own, or the worker's shared one), the write gate, and
// bringing a connection up to date with the session's state. The reader (redis_session.cc)
// calls these per request; the writer is in redis_replies.cc.
#include <spdlog/spdlog.h>

#include "nerava/protocol/redis/encoder.h"
#include "proxy/redis_session_impl.h"

namespace nerava::proxy::redis_session {
namespace {

// A replica that refused a connection is not tried again by this session for this long.
constexpr auto kReplicaRetry = std::chrono::seconds(1);

}  // namespace

awaitable<std::optional<routing::NodeState>> RedisSession::WaitPrimary(
    std::chrono::steady_clock::time_point give_up) {
  auto primary_of = [this]() -> std::optional<routing::NodeState> {
    auto snapshot = context_->topology->Get();
    if (const routing::NodeState* primary = snapshot->redis.Primary()) return *primary;
    return std::nullopt;
  };
  std::optional<routing::NodeState> primary = primary_of();
  const auto now = std::chrono::steady_clock::now();
  if (primary || now < no_primary_until_) co_return primary;
  // A failover may be under way: wait for a primary instead of failing at once.
  co_await Flush();
  asio::steady_timer poll(executor_);
  while (!primary && std::chrono::steady_clock::now() < give_up && !shutdown_requested_) {
    poll.expires_after(std::chrono::milliseconds(20));
    co_await poll.async_wait(kNoThrow);
    primary = primary_of();
  }
  // The requests right behind this one are answered at once instead of waiting again each.
  if (!primary) no_primary_until_ = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  co_return primary;
}

awaitable<std::shared_ptr<RedisBackend>> RedisSession::Target(const routing::RouteIntent& intent,
                                                              std::string& error) {
  if (Pinned()) {
    if (!pin_->broken) {
      CountQuery(pin_->node_name);
      co_return pin_;
    }
    error = "TRYAGAIN connection to Redis node \"" + pin_->node_name + "\" was lost";
    pin_.reset();
    in_multi_ = watching_ = pubsub_active_ = tracking_ = false;
    co_return nullptr;
  }
  std::shared_ptr<RedisBackend> backend;
  std::optional<routing::NodeState> replica;
  if (intent.replica_ok) replica = PickReplica(intent);
  if (replica) {
    RedisBackendResult result = co_await BackendFor(*replica);
    backend = std::move(result.backend);
    if (!backend) {
      spdlog::warn("redis: cannot open server connection to {}: {}", replica->name, result.error);
      // The monitor has not seen it fail yet: the primary serves the read meanwhile.
      avoid_node_ = replica->name;
      avoid_until_ = std::chrono::steady_clock::now() + kReplicaRetry;
    }
  }
  // The write gate holds what may write (a switchover, `pause`); reads keep flowing. A read
  // whose replica just failed is not held waiting for an unreachable primary.
  if (!backend) {
    backend = co_await PrimaryBackend(!intent.replica_ok && !intent.session_state,
                                      /*wait_if_unreachable=*/!replica, error);
  }
  if (!backend) co_return nullptr;
  co_await BringUpToDate(backend);
  CountQuery(backend->node_name);
  co_return backend;
}

// The replica Route() picks for a read, or nullopt for the primary.
std::optional<routing::NodeState> RedisSession::PickReplica(const routing::RouteIntent& intent) {
  auto snapshot = context_->topology->Get();
  const routing::NodeState* node = ChooseReplica(intent, snapshot->redis);
  if (node == nullptr) return std::nullopt;
  return *node;
}

const routing::NodeState* RedisSession::ChooseReplica(const routing::RouteIntent& intent,
                                                      const routing::ProtocolTopology& topology) {
  routing::SessionRouteState session = route_state_;
  // A write (or SELECT...) still unanswered: no sample can show it replayed yet.
  if (unacknowledged_ > 0) session.last_write_ack = routing::RouteClock::time_point::max();
  routing::RouteRequest request;
  request.intent = intent;
  request.session = &session;
  request.topology = &topology;
  request.policy = &context_->route_policy;
  auto decision = routing::Route(request);
  if (!decision.ok() || decision->node < 0) return nullptr;
  record_.SetRoute(routing::RouteReasonName(decision->reason));
  if (decision->reason == routing::RouteReason::kReadPrimaryFallbackRyw && context_->metrics) {
    context_->metrics->StaleReadAvoided(routing::Protocol::kRedis).Increment();
  }
  const routing::NodeState& node = topology.nodes[static_cast<size_t>(decision->node)];
  if (node.role != routing::Role::kReplica) return nullptr;
  if (node.name == avoid_node_ && std::chrono::steady_clock::now() < avoid_until_) {
    return nullptr;
  }
  return &node;
}

awaitable<std::shared_ptr<RedisBackend>> RedisSession::PrimaryBackend(bool write,
                                                                       bool wait_if_unreachable,
                                                                       std::string& error) {
  if (write) record_.SetRoute(routing::RouteReasonName(routing::RouteReason::kWrite));
  WriteGate* gate = write ? context_->write_gate : nullptr;
  const auto give_up = std::chrono::steady_clock::now() + context_->failover_wait;
  asio::steady_timer pause(executor_);
  auto backoff = std::chrono::milliseconds(50);
  bool logged = false;
  for (;;) {
    if (gate && !write_ticket_ && gate->Holds(true)) {
      co_await Flush();  // what came before this write does not wait with it
      if (!co_await gate->WaitOpen(true, give_up)) {
        error = "TRYAGAIN writes are held (switchover or pause) for longer than failover.wait";
        co_return nullptr;
      }
    }
    std::optional<routing::NodeState> primary = co_await WaitPrimary(give_up);
    if (!primary) {
      error = "TRYAGAIN no primary Redis node is reachable";
      co_return nullptr;
    }
    RedisBackendResult result = co_await BackendFor(*primary);
    if (result.backend) {
      if (!gate || TakeWriteTicket(*gate)) co_return std::move(result.backend);
      continue;  // the gate closed in between (a switchover): wait for it
    }
    error = std::move(result.error);
    // The primary refuses connections or does not answer before the monitor has noticed (a
    // crash, a failover under way): wait for the topology to settle, as PostgreSQL sessions
    // do, within failover.wait. A server that answers with an error is not waited for.
    const bool wait = wait_if_unreachable && result.unreachable && !shutdown_requested_ &&
                      std::chrono::steady_clock::now() < give_up;
    if (!logged || !wait) {
      spdlog::warn("redis: cannot open server connection to {}: {}{}", primary->name, error,
                   wait ? "; waiting for the topology to settle" : "");
      logged = true;
    }
    if (!wait) co_return nullptr;
    // Backing off: until the monitor marks it down, each try is a connect to a dead host.
    pause.expires_after(backoff);
    co_await pause.async_wait(kNoThrow);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(400));
    if (shutdown_requested_) co_return nullptr;
  }
}

bool RedisSession::TakeWriteTicket(WriteGate& gate) {
  if (write_ticket_) return true;
  if (!gate_seat_) {
    std::weak_ptr<RedisSession> self = weak_from_this();
    gate_seat_ = gate.TakeSeat([self, executor = executor_] {
      asio::post(executor, [self] {
        if (auto session = self.lock()) session->AbortWrites();
      });
    });
  }
  // Held while this session's writes are unanswered, so a switchover waits for them.
  auto ticket = gate.TryEnter(*gate_seat_);
  if (!ticket) return false;
  write_ticket_ = std::move(*ticket);
  return true;
}

bool RedisSession::MayWriteShared() {
  WriteGate* gate = context_->write_gate;
  if (gate == nullptr || write_ticket_) return true;
  // A held gate (switchover, pause): the session's own connection path waits for it.
  return !gate->Holds(true) && TakeWriteTicket(*gate);
}

void RedisSession::AbortWrites() {
  // A switchover gave up waiting: the writes still unanswered fail with TRYAGAIN (unless they
  // were answered while the request to abort travelled here).
  if (!write_ticket_) return;
  for (Pending& entry : pending_) {
    if (!entry.write) continue;
    if (entry.backend && !entry.backend->broken) entry.backend->stream.Close();
    // A shared connection carries other sessions' requests: answer for this one here (its
    // reply, when it comes, is dropped with the SharedReply).
    if (entry.shared && !entry.shared->started && !entry.shared->done) {
      AnswerLocally(entry, "TRYAGAIN a switchover gave up waiting for this write; "
                           "the command may have run");
    }
  }
  reader_wake_.Notify();
  writer_wake_.Notify();
}

void RedisSession::OnNodeDown(const std::string& node) {
  if (auto it = backends_.find(node); it != backends_.end() && !it->second->broken) {
    // Broken first: an idle connection is not reused, and the reader fails what this one owes
    // (FailBackend) instead of taking the cancelled read for a wake-up.
    it->second->broken = true;
    it->second->stream.Close();
  }
  RedisSharedLink::FailWorkerLink(node, "the node stopped answering health checks");
}

void RedisSession::Abandon(SharedReply& reply) {
  reply.abandoned = true;
  reply.bytes.clear();
  if (reply.on_drained) reply.on_drained();  // a link waiting for this reader reads on
}

void RedisSession::AnswerLocally(Pending& entry, std::string_view error) {
  if (entry.backend) {
    entry.backend.reset();
    --dedicated_in_flight_;
  }
  if (entry.shared) {
    Abandon(*entry.shared);
    entry.shared.reset();
    --shared_in_flight_;
  }
  redis::AppendError(entry.local, error);
  reader_wake_.Notify();
}

awaitable<bool> RedisSession::TrySendShared(const routing::RouteIntent& intent, Pending& entry) {
  std::shared_ptr<RedisSharedLink> link = SharedLinkFor(intent);
  if (link && shared_in_flight_ > 0 && shared_link_.lock() != link) {
    // Requests on another shared connection first: a write to the primary must not overtake a
    // read still queued at a replica.
    co_await WaitSharedAnswered();
    if (!link->usable()) co_return false;  // failed meanwhile: the session's own connection
  }
  if (!link || shutdown_requested_) co_return false;
  shared_link_ = link;
  if (entry.write) {
    record_.SetRoute(routing::RouteReasonName(routing::RouteReason::kWrite));
    shared_write_node_ = link->node_name();
  }
  std::weak_ptr<RedisSession> self = weak_from_this();
  entry.shared = link->Send(client_in_.data().substr(pos_, request_fed_), [self] {
    if (auto session = self.lock()) session->writer_wake_.Notify();
  });
  Enqueue(std::move(entry));
  co_return true;
}

awaitable<void> RedisSession::WaitSharedAnswered() {
  if (shared_in_flight_ > 0) co_await Flush();
  while (shared_in_flight_ > 0 && !shutdown_requested_) co_await reader_wake_.Wait();
}

awaitable<bool> RedisSession::FenceWait(std::string_view name,
                                        const std::shared_ptr<RedisBackend>& target) {
  if (shared_write_node_.empty()) co_return true;  // no write went over a shared connection
  const bool elsewhere = target->node_name != shared_write_node_;
  shared_write_node_.clear();
  if (elsewhere) {
    // The writes went to a primary no longer in use (a failover since): no replica of this one
    // is known to have them.
    Pending zero;
    zero.local = name == "WAIT" ? ":0\r\n" : "*2\r\n:0\r\n:0\r\n";
    Enqueue(std::move(zero));
    co_return false;
  }
  // WAIT counts the replicas that have its connection's last write, and the session's writes
  // went over a shared one: a replicated no-op here first moves this connection's write offset
  // past them (they were answered before this request was decided). PUBLISH is propagated to
  // replicas yet changes no data; nobody subscribes to the channel.
  static constexpr std::string_view kWaitFence =
      "*3\r\n$7\r\nPUBLISH\r\n$27\r\n__nerava-proxy:wait-fence__\r\n$0\r\n\r\n";
  Pending fence;
  fence.backend = target;
  fence.swallow = true;
  fence.fence = true;  // the WAIT enqueued right behind it learns of a refusal
  Enqueue(std::move(fence));
  co_await AppendOwned(target, std::string(kWaitFence));
  co_return true;
}

awaitable<RedisBackendResult> RedisSession::BackendFor(const routing::NodeState& node) {
  if (auto it = backends_.find(node.name); it != backends_.end()) {
    if (!it->second->broken) co_return RedisBackendResult{it->second, {}, false};
    backends_.erase(it);
  }
  co_await Flush();  // requests before this one must not wait for the connect
  RedisBackendTarget where{node.name, node.host, node.port};
  RedisBackendOptions options{context_->backend_tls, context_->settings.connect_timeout,
                              context_->limits, context_->metrics, context_->server_keepalive};
  RedisBackendResult result =
      co_await ConnectRedisBackend(where, options, ReplayCommands(conn_, context_->settings));
  if (!result.backend) co_return result;
  result.backend->state_generation = conn_generation_;
  backends_.emplace(node.name, result.backend);
  co_return result;
}

awaitable<void> RedisSession::BringUpToDate(const std::shared_ptr<RedisBackend>& backend) {
  if (backend->state_generation == conn_generation_) co_return;
  backend->state_generation = conn_generation_;
  // The full state, HELLO and SELECT included even at their defaults (they may have changed
  // back since this connection last saw them).
  std::vector<RedisCommand> commands;
  for (RedisCommand& command : ReplayCommands(conn_, context_->settings)) {
    if (command[0] != "HELLO" && command[0] != "SELECT") commands.push_back(std::move(command));
  }
  commands.push_back({"HELLO", std::to_string(conn_.protocol)});
  commands.push_back({"SELECT", conn_.db.empty() ? std::string("0") : conn_.db});
  for (const RedisCommand& command : commands) {
    std::string bytes;
    redis::AppendCommand(bytes, command);
    Pending replay;
    replay.backend = backend;
    replay.swallow = true;
    Enqueue(std::move(replay));
    co_await AppendOwned(backend, std::move(bytes));
  }
}

bool RedisSession::CanShare(const routing::RedisCommandClass& command, bool complete) const {
  static const RedisConnState kFresh;
  // Keyed reads and writes; scripts stay on the session's own connection (SCRIPT KILL,
  // a long script would stall every session on the link).
  const bool keyed = (command.kind == routing::RedisKind::kRead ||
                      command.kind == routing::RedisKind::kWrite) &&
                     command.first_key.has_value() && (command.flags & routing::kRedisScript) == 0;
  return context_->settings.shared_connections && may_share_ && complete &&
         state_ == SessionState::kReady && !Pinned() && dedicated_in_flight_ == 0 && keyed &&
         (command.flags & routing::kRedisBlocking) == 0 && command.pin_begin == 0 &&
         conn_.auth == kFresh.auth && conn_.protocol == kFresh.protocol &&
         conn_.name == kFresh.name && (conn_.db == kFresh.db || conn_.db.empty());
}

std::shared_ptr<RedisSharedLink> RedisSession::SharedLinkFor(const routing::RouteIntent& intent) {
  auto snapshot = context_->topology->Get();  // one snapshot for the whole decision
  const routing::ProtocolTopology& topology = snapshot->redis;
  const routing::NodeState* node = intent.replica_ok ? ChooseReplica(intent, topology) : nullptr;
  if (node == nullptr) node = topology.Primary();
  if (node == nullptr) return nullptr;
  std::shared_ptr<RedisSharedLink> link = RedisSharedLink::For(*node, *context_, executor_);
  if (link) CountQuery(node->name, node->role == routing::Role::kReplica);
  return link;
}

void RedisSession::CountQuery(std::string_view node_name) {
  if (context_->metrics == nullptr) return;
  auto snapshot = context_->topology->Get();
  bool replica = false;
  for (const routing::NodeState& node : snapshot->redis.nodes) {
    if (node.name == node_name && node.role == routing::Role::kReplica) replica = true;
  }
  CountQuery(node_name, replica);
}

void RedisSession::CountQuery(std::string_view node_name, bool replica) {
  if (context_->metrics == nullptr) return;
  for (const QueryCounter& known : query_counters_) {
    if (known.replica == replica && known.node == node_name) {
      known.counter->Increment();
      return;
    }
  }
  prometheus::Counter* counter = &context_->metrics->Queries(
      routing::Protocol::kRedis, replica ? "replica" : "primary", std::string(node_name));
  query_counters_.push_back({std::string(node_name), replica, counter});
  counter->Increment();
}

}  // namespace nerava::proxy::redis_session
