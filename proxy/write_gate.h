// The gate in front of one protocol's primary (DESIGN §7): a planned switchover or `pause`
// closes it, so new write work waits instead of reaching a primary that is about to change,
// while the write work already under way finishes.
//
//   session: TakeSeat() once; TryEnter() ──▶ ticket held while its writes are in flight / its
//            transaction is open
//            gate closed? ──▶ wait (bounded by failover.wait) ──▶ Enter() again
//   admin:   Close() ──▶ WaitDrained(timeout) ──▶ [AbortActive()] ──▶ move the primary ──▶ Open()
//
// Entering counts first and checks the gate second, and closing sets the gate before it reads
// the count, so a session never slips past a switchover that believes the primary drained.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>

#include "proxy/asio.h"

namespace nerava::proxy {

class WriteGate {
 public:
  enum class Mode : uint8_t { kOpen, kHoldWrites, kHoldAll };

  // A session's place at the gate for its whole life: how to abort its write work. Taking a
  // seat is the one locked step; entering and leaving are then atomic operations only, so a
  // session that writes all the time does not allocate or lock per write.
  class Seat {
   public:
    ~Seat();
    Seat(const Seat&) = delete;
    Seat& operator=(const Seat&) = delete;

   private:
    friend class WriteGate;
    Seat(WriteGate* gate, std::function<void()> abort) : gate_(gate), abort_(std::move(abort)) {}
    WriteGate* gate_;
    std::function<void()> abort_;
    std::atomic<bool> holding_{false};  // a ticket of this seat is out
  };

  // Held by a session while it has write work on the primary. Movable; releases on destruction.
  // It must not outlive its seat.
  class Ticket {
   public:
    Ticket() = default;
    Ticket(Ticket&& other) noexcept : seat_(std::exchange(other.seat_, nullptr)) {}
    Ticket& operator=(Ticket&& other) noexcept;
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    ~Ticket() { Release(); }
    void Release();
    explicit operator bool() const { return seat_ != nullptr; }

   private:
    friend class WriteGate;
    explicit Ticket(Seat* seat) : seat_(seat) {}
    Seat* seat_ = nullptr;
  };

  // `abort` is called (from the admin thread) when a switchover gives up waiting for the
  // session: it must make the session's in-flight write work fail soon, from its own executor.
  std::unique_ptr<Seat> TakeSeat(std::function<void()> abort);

  // Whether new work of this kind must wait now.
  bool Holds(bool write) const {
    const Mode mode = mode_.load();
    return mode == Mode::kHoldAll || (write && mode == Mode::kHoldWrites);
  }

  // A ticket, or nullopt when the gate holds writes (then wait with WaitOpen and retry).
  // One ticket per seat at a time.
  std::optional<Ticket> TryEnter(Seat& seat);

  // Waits until work of this kind may proceed or `deadline` passes; true when it may.
  // Counts the waiter in held() (the writes_held gauge) while it waits.
  awaitable<bool> WaitOpen(bool write, std::chrono::steady_clock::time_point deadline);

  // Admin side.
  void Close(Mode mode);  // kHoldWrites or kHoldAll
  void Open();
  Mode mode() const { return mode_.load(); }
  // Blocks the calling (admin) thread until no ticket is held or `timeout` passes.
  bool WaitDrained(std::chrono::milliseconds timeout) const;
  // Asks every session that still holds a ticket to abort its write work; returns how many.
  int AbortActive();

  int active() const { return active_.load(); }
  int held() const { return held_.load(); }

 private:
  std::atomic<Mode> mode_{Mode::kOpen};
  std::atomic<int> active_{0};
  std::atomic<int> held_{0};
  mutable std::mutex mutex_;
  std::set<Seat*> seats_;  // guarded by mutex_
};

// One gate per protocol, shared by every session and the admin commands.
struct WriteGates {
  WriteGate postgres;
  WriteGate redis;
};

}  // namespace nerava::proxy
