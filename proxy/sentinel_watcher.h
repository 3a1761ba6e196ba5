// Follows Redis Sentinel the way its client guidelines ask (DESIGN §7, optional in config as
// `redis.sentinel: {addresses, master}`), and hands its view to the monitor:
//
//   poll thread (every monitor interval, or at once when woken)
//     ├─ SENTINEL get-master-addr-by-name NAME ──▶ sentinels in turn; the first that answers
//     │                                            moves to the front of the list
//     ├─ SENTINEL replicas NAME                ──▶ same sentinel: flags s_down / o_down /
//     │                                            disconnected make a replica unusable
//     ├─ ROLE                                  ──▶ the named master: is it really master?
//     └─▶ Monitor::SetSentinelView(master node, unusable replicas)   (config node names)
//
//   watch thread: SUBSCRIBE +switch-master +sdown -sdown on one sentinel; a message about our
//     master wakes the poll thread, so a switch is seen at once, not an interval later
//
// The monitor's own checks stay the truth about roles: Sentinel only breaks ties and takes
// replicas out of service. Both threads use blocking hiredis calls bounded by short socket
// timeouts and check their stop token between calls, so destruction is prompt.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "nerava/config/config.h"
#include "proxy/monitor.h"

struct redisContext;
struct redisReply;

namespace nerava::proxy {

class SentinelWatcher {
 public:
  // `config.redis` must be set with at least one sentinel; `monitor` outlives the watcher.
  SentinelWatcher(const config::Config& config, Monitor& monitor);
  ~SentinelWatcher();  // stops and joins both threads
  SentinelWatcher(const SentinelWatcher&) = delete;
  SentinelWatcher& operator=(const SentinelWatcher&) = delete;

  void Start();

 private:
  struct ContextDeleter {
    void operator()(redisContext* context) const;
  };
  using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;

  // What one sentinel said.
  struct Answer {
    config::Endpoint master;
    std::optional<std::vector<std::string>> unusable;  // config names; unset: not known
  };

  void Poll(std::stop_token stop);
  // One round: ask, verify, publish. Returns how long to wait before the next round.
  std::chrono::milliseconds Round(std::stop_token stop);
  std::optional<Answer> AskSentinels(std::stop_token stop, std::string& errors);
  std::optional<std::vector<std::string>> UnusableReplicas(redisContext& context);
  std::string VerifyMaster(const config::Node& node);  // "" when ROLE says master
  const config::Node* FindNode(const std::string& host, uint16_t port) const;

  void Watch(std::stop_token stop);
  void Listen(std::stop_token stop, redisContext& context);
  void Wake();

  ContextPtr Connect(const std::string& host, uint16_t port, std::string& error) const;

  const std::vector<config::Node> nodes_;
  const std::string master_name_;
  const std::string username_;
  const std::string password_;
  const std::chrono::milliseconds interval_;
  const std::chrono::milliseconds timeout_;
  Monitor& monitor_;

  std::mutex mutex_;
  std::condition_variable_any wake_cv_;
  bool wake_ = false;                        // guarded by mutex_
  std::vector<config::Endpoint> sentinels_;  // guarded by mutex_; front: the last to answer

  // Poll thread only.
  ContextPtr sentinel_context_;  // to sentinels_.front()
  ContextPtr master_context_;    // to master_context_node_, for ROLE
  std::string master_context_node_;
  std::string last_master_;  // "host:port" Sentinel last named
  std::string warned_unknown_;  // the unconfigured master address already warned about
  std::vector<std::string> last_unusable_;
  bool outage_ = false;  // no sentinel answered the last round

  // Last: joined before anything they use is destroyed.
  std::jthread poll_thread_;
  std::jthread watch_thread_;
};

}  // namespace nerava::proxy
