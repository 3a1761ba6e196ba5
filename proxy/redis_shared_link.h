// A pipelined server connection that the Redis sessions of one worker share for their plain
// keyed reads and writes, as twemproxy funnels its clients: the requests of many clients travel in one write and
// their replies come back in one read, which saves system calls in the proxy and in the server.
//
//   session A ─GET─┐                                          ┌─▶ reply 1 ─▶ A
//   session B ─GET─┼─▶ out ─one write─▶ node ─one read─▶ in ──┼─▶ reply 2 ─▶ B
//   session A ─GET─┘                                          └─▶ reply 3 ─▶ A
//
// Redis answers one connection's requests in order, so the n-th reply belongs to the n-th
// request. Sessions only send what does not depend on a connection (RESP2, db 0, no name, no
// AUTH of their own, no MULTI/WATCH/pub-sub/tracking pin, keyed non-blocking commands, no
// scripts): see RedisSession::CanShare. A write still takes the session's write-gate ticket,
// and WAIT after shared writes is fenced on the session's own connection (FenceWait). A link
// that fails answers what it owes with -TRYAGAIN, as a lost dedicated connection does, and is
// replaced on next use.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "proxy/asio.h"
#include "proxy/byte_buffer.h"
#include "proxy/redis_backend.h"
#include "proxy/redis_context.h"
#include "proxy/wake_signal.h"

namespace nerava::proxy {

// One request's reply, filled in by the link. A large reply is passed on in pieces: the link
// appends, the session writes and clears `bytes`, and the link waits while too much is unread.
struct SharedReply {
  std::string bytes;  // reply bytes not yet taken by the session (or the link's -TRYAGAIN)
  bool done = false;  // the reply is complete in `bytes` plus what was taken before
  bool started = false;  // a first piece was passed on
  bool broken = false;   // the link failed half way through: the client's stream is cut
  bool abandoned = false;  // the session is gone (or gave up on it): the link discards it
  std::function<void()> on_data;     // wakes the session's reply writer
  std::function<void()> on_drained;  // the session took `bytes`: the link may read on
};

class RedisSharedLink : public std::enable_shared_from_this<RedisSharedLink> {
 public:
  RedisSharedLink(const asio::any_io_executor& executor, RedisBackendTarget target,
                  const redis::Limits& limits);

  // The calling worker's link to `node`, when it is connected. The first call opens it in the
  // background and returns null: the session uses its own connection meanwhile.
  static std::shared_ptr<RedisSharedLink> For(const routing::NodeState& node,
                                              const RedisContext& context,
                                              const asio::any_io_executor& executor);

  // Fails the calling worker's link to `node`, if it has a live one (the monitor gave up on
  // the node: an unreachable server sends no reset).
  static void FailWorkerLink(const std::string& node, const std::string& why);

  // Queues a whole request; its reply arrives in the returned SharedReply.
  std::shared_ptr<SharedReply> Send(std::string_view request, std::function<void()> on_data);

  const std::string& node_name() const { return target_.node_name; }
  bool usable() const { return ready_ && !failed_; }

 private:
  awaitable<void> Open(std::shared_ptr<RedisSharedLink> self, RedisBackendOptions options,
                       std::vector<RedisCommand> login);
  awaitable<void> WriteLoop(std::shared_ptr<RedisSharedLink> self);
  awaitable<void> ReadLoop(std::shared_ptr<RedisSharedLink> self);
  // The connection is gone: every reply owed becomes -TRYAGAIN; the worker forgets the link.
  void Fail(const std::string& why);

  RedisBackendTarget target_;
  redis::Limits limits_;
  std::shared_ptr<RedisBackend> connection_;  // null until open
  bool ready_ = false;
  bool failed_ = false;
  std::string out_;      // requests not yet written
  std::string sending_;  // what the write loop writes now
  WakeSignal out_ready_;
  WakeSignal drained_;  // a session took a large reply's piece
  std::deque<std::shared_ptr<SharedReply>> owed_;  // in request order
};

}  // namespace nerava::proxy
