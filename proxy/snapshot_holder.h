// Where one thread publishes immutable snapshots and many read them, never waiting for each
// other and never seeing a snapshot change under them (topology, function policy).
//
// Readers get the snapshot from a per-thread cache that is refreshed only when a newer one was
// published: GCC 12's std::atomic<shared_ptr> spins on a lock bit on every load, and two
// workers loading it for every request contended for it measurably.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>

namespace nerava::proxy {

template <typename T>
class SnapshotHolder {
 public:
  using Snapshot = std::shared_ptr<const T>;

  explicit SnapshotHolder(Snapshot initial)
      : snapshot_(std::move(initial)), generation_(NextGeneration()) {}

  // Never null.
  Snapshot Get() const {
    struct Cache {
      uint64_t generation = 0;  // unique across holders: identifies holder and version
      Snapshot snapshot;
    };
    thread_local Cache cache;
    const uint64_t generation = generation_.load(std::memory_order_acquire);
    if (cache.generation != generation) {
      cache.snapshot = snapshot_.load(std::memory_order_acquire);
      cache.generation = generation;
    }
    return cache.snapshot;
  }

  void Publish(Snapshot snapshot) {
    snapshot_.store(std::move(snapshot), std::memory_order_release);
    generation_.store(NextGeneration(), std::memory_order_release);
  }

 private:
  static uint64_t NextGeneration() {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
  }

  std::atomic<Snapshot> snapshot_;
  std::atomic<uint64_t> generation_;
};

}  // namespace nerava::proxy
