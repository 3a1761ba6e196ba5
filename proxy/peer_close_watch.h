// Tells a drained read (proxy/drained_read.h) that its peer closed or reset the connection.
//
// An edge-triggered read that trusts a short read to mean "drained" misses one thing: a close or
// reset queued behind the last bytes arrives with them, in one edge, and after the short read no
// further edge comes, so the next read would wait forever (a backend's FATAL and its close; a
// client's last request and its hang-up). Event loops that read this way register EPOLLRDHUP to
// see it (nginx's `pending_eof`); Asio registers only EPOLLIN and keeps the event mask to itself.
//
// So each execution context gets a second epoll set of its own, watched by Asio like any other
// descriptor, in which every plain socket is registered once for EPOLLRDHUP (and the EPOLLHUP and
// EPOLLERR epoll always reports). That set's own edge fires when a peer closes, however the bytes
// before it were read. Its handler marks the socket's `PeerClose` and cancels the drained read
// waiting on it; the reader then reads the socket once more without waiting (Stream::ReadSome).
// Cost: one epoll_ctl per connection, and one wake-up per peer close.
//
// No close is lost between draining the set and waiting on it again: Asio arms a wait with
// EPOLL_CTL_MOD, which reports the set at once if it became ready in between.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "proxy/asio.h"

namespace nerava::proxy {

// One socket's mark. Only its owner's thread touches it.
struct PeerClose {
  // The peer closed or reset: reads must try the socket before waiting.
  bool seen = false;
  // Set while a drained read waits, so a close can end it (Stream::ReadSome binds its slot).
  bool reading = false;
  // The watch ended that read: its abort means "read again", not a cancel.
  bool woken = false;
  // Drained reads started on this socket: a read ending late must not undo a newer one's state.
  uint64_t reads = 0;
  asio::cancellation_signal wake;
};

class PeerCloseWatch : public asio::execution_context::service {
 public:
  using key_type = PeerCloseWatch;
  static asio::execution_context::id id;

  explicit PeerCloseWatch(asio::execution_context& context);
  ~PeerCloseWatch() override;
  PeerCloseWatch(const PeerCloseWatch&) = delete;
  PeerCloseWatch& operator=(const PeerCloseWatch&) = delete;

  // Starts watching `socket` (until it is closed). Null when the kernel refuses (no epoll set,
  // or the user's epoll watch limit): the caller then reads the way Asio does.
  std::shared_ptr<PeerClose> Watch(tcp::socket& socket);

 private:
  void shutdown() override;
  void Arm();
  void Drain();
  void ForgetClosedSockets();

  int epoll_fd_ = -1;
  bool shut_down_ = false;
  std::optional<asio::posix::stream_descriptor> ready_;  // the set, as Asio sees it
  // By a number of our own, not the descriptor: a closed socket's number is soon reused.
  absl::flat_hash_map<uint64_t, std::weak_ptr<PeerClose>> watched_;
  uint64_t next_key_ = 1;
  size_t forget_at_ = 64;
};

}  // namespace nerava::proxy
