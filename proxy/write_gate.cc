#include "proxy/write_gate.h"

#include <thread>
#include <vector>

namespace nerava::proxy {

WriteGate::Seat::~Seat() {
  std::lock_guard lock(gate_->mutex_);
  gate_->seats_.erase(this);
}

WriteGate::Ticket& WriteGate::Ticket::operator=(Ticket&& other) noexcept {
  if (this != &other) {
    Release();
    seat_ = std::exchange(other.seat_, nullptr);
  }
  return *this;
}

void WriteGate::Ticket::Release() {
  if (seat_ == nullptr) return;
  seat_->holding_.store(false);
  seat_->gate_->active_.fetch_sub(1);
  seat_ = nullptr;
}

std::unique_ptr<WriteGate::Seat> WriteGate::TakeSeat(std::function<void()> abort) {
  std::unique_ptr<Seat> seat(new Seat(this, std::move(abort)));  // private constructor
  std::lock_guard lock(mutex_);
  seats_.insert(seat.get());
  return seat;
}

std::optional<WriteGate::Ticket> WriteGate::TryEnter(Seat& seat) {
  // Count first: Close() then sees us, or we see Close().
  seat.holding_.store(true);
  active_.fetch_add(1);
  if (Holds(/*write=*/true)) {
    active_.fetch_sub(1);
    seat.holding_.store(false);
    return std::nullopt;
  }
  return Ticket(&seat);
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
    for (const Seat* seat : seats_) {
      if (seat->holding_.load()) aborts.push_back(seat->abort_);
    }
  }
  for (const auto& abort : aborts) {
    if (abort) abort();
  }
  return static_cast<int>(aborts.size());
}

}  // namespace nerava::proxy
