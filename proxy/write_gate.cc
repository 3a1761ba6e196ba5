#include "proxy/write_gate.h"

#include <thread>
#include <vector>

namespace nerava::proxy {

WriteGate::Ticket& WriteGate::Ticket::operator=(Ticket&& other) noexcept {
  if (this != &other) {
    Release();
    gate_ = std::exchange(other.gate_, nullptr);
    id_ = other.id_;
  }
  return *this;
}

void WriteGate::Ticket::Release() {
  if (gate_) gate_->Leave(id_);
  gate_ = nullptr;
}

std::optional<WriteGate::Ticket> WriteGate::TryEnter(std::function<void()> abort) {
  active_.fetch_add(1);  // count first: Close() then sees us, or we see Close()
  if (Holds(/*write=*/true)) {
    active_.fetch_sub(1);
    return std::nullopt;
  }
  std::lock_guard lock(mutex_);
  const uint64_t id = next_id_++;
  aborts_.emplace(id, std::move(abort));
  return Ticket(this, id);
}

void WriteGate::Leave(uint64_t id) {
  {
    std::lock_guard lock(mutex_);
    aborts_.erase(id);
  }
  active_.fetch_sub(1);
}

awaitable<bool> WriteGate::WaitOpen(bool write, std::chrono::steady_clock::time_point deadline) {
  if (!Holds(write)) co_return true;
  held_.fetch_add(1);
  asio::steady_timer poll(co_await asio::this_coro::executor);
  // Polling keeps the gate free of per-executor wake-up lists; holds are rare and short.
  while (Holds(write) && std::chrono::steady_clock::now() < deadline) {
    poll.expires_after(std::chrono::milliseconds(5));
    co_await poll.async_wait(kNoThrow);
  }
  held_.fetch_sub(1);
  co_return !Holds(write);
}

void WriteGate::Close(Mode mode) { mode_.store(mode); }

void WriteGate::Open() { mode_.store(Mode::kOpen); }

bool WriteGate::WaitDrained(std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (active_.load() > 0) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

int WriteGate::AbortActive() {
  std::vector<std::function<void()>> aborts;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [id, abort] : aborts_) aborts.push_back(abort);
  }
  for (const auto& abort : aborts) {
    if (abort) abort();
  }
  return static_cast<int>(aborts.size());
}

}  // namespace nerava::proxy
