#include "proxy/peer_close_watch.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <array>

namespace nerava::proxy {

asio::execution_context::id PeerCloseWatch::id;

PeerCloseWatch::PeerCloseWatch(asio::execution_context& context)
    : asio::execution_context::service(context), epoll_fd_(::epoll_create1(EPOLL_CLOEXEC)) {}

PeerCloseWatch::~PeerCloseWatch() {
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
}

void PeerCloseWatch::shutdown() {
  // Here, not in the destructor: the descriptor's Asio service was created after this one and
  // is destroyed before it. Pending waits are destroyed, not run, from here on.
  ready_.reset();
  shut_down_ = true;
}

std::shared_ptr<PeerClose> PeerCloseWatch::Watch(tcp::socket& socket) {
  if (epoll_fd_ < 0 || shut_down_) return nullptr;
  if (!ready_) {
    // The set becomes an Asio descriptor on the first socket's executor (this context's).
    const int own = ::dup(epoll_fd_);
    if (own < 0) return nullptr;
    error_code ec;
    ready_.emplace(socket.get_executor());
    ready_->assign(own, ec);
    if (ec) {
      ::close(own);
      ready_.reset();
      return nullptr;
    }
    Arm();
  }
  const uint64_t watch_key = next_key_++;
  epoll_event event{};
  event.events = EPOLLRDHUP | EPOLLET;  // EPOLLHUP and EPOLLERR come unasked
  event.data.u64 = watch_key;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, socket.native_handle(), &event) != 0) return nullptr;
  auto mark = std::make_shared<PeerClose>();
  if (watched_.size() >= forget_at_) ForgetClosedSockets();
  watched_.emplace(watch_key, mark);
  return mark;
}

void PeerCloseWatch::Arm() {
  ready_->async_wait(asio::posix::descriptor_base::wait_read, [this](error_code ec) {
    if (ec) return;  // closed at shutdown
    Drain();
    Arm();  // its EPOLL_CTL_MOD reports a close that came after Drain
  });
}

void PeerCloseWatch::Drain() {
  std::array<epoll_event, 64> events;
  for (;;) {
    const int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), 0);
    for (int i = 0; i < n; ++i) {
      auto found = watched_.find(events[i].data.u64);
      if (found == watched_.end()) continue;
      if (auto mark = found->second.lock()) {
        mark->seen = true;
        if (mark->reading) {
          mark->woken = true;
          mark->wake.emit(asio::cancellation_type::terminal);
        }
      }
      watched_.erase(found);  // one close per socket: nothing more to learn
    }
    if (n < static_cast<int>(events.size())) return;
  }
}

void PeerCloseWatch::ForgetClosedSockets() {
  absl::erase_if(watched_, [](const auto& entry) { return entry.second.expired(); });
  forget_at_ = std::max<size_t>(64, 2 * watched_.size());
}

}  // namespace nerava::proxy
