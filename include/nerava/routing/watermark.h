// The primary's position over time (DESIGN §6): a bounded ring of (steady time, position)
// samples, one per primary check. It turns a replica's replayed position into a lag in seconds
// without heartbeat writes or synchronised clocks: the lag is how long ago the primary stood
// where the replica stands now.
//
//   position ▲                         ┌── newest
//            │                 ●───●───●        replica at p: find the last sample at or
//            │           ●────╱                 below p and the first above it, interpolate
//        p ─ │ ─ ─ ─ ─ ─╱  T(p)                 the time T(p) between them;
//            │  ●──●───●                        lag = now − T(p)
//            └──────────────────────────▶ time
//
// Runs of equal positions (an idle primary) keep only their first and last sample, so idle
// periods cost no capacity and the history covers the last `capacity` changes.
// Not thread-safe: the monitor owns one per protocol under its lock; snapshots share copies.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace nerava::routing {

struct WatermarkSample {
  std::chrono::steady_clock::time_point time;
  uint64_t position = 0;
};

class Watermark {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kDefaultCapacity = 1024;  // 256 s of changes at a 250 ms interval

  explicit Watermark(size_t capacity = kDefaultCapacity);

  // Records that the primary stood at `position` at `time`. A sample older than the newest is
  // ignored; a position lower than the newest means a different history (a new primary or
  // timeline) and restarts the ring.
  void Add(Clock::time_point time, uint64_t position);
  void Clear();

  // Seconds since the primary stood at `replica_position`, interpolated between samples.
  // 0 when the replica has reached the newest sample's position (or there are no samples);
  // at least `now` − oldest sample time when the position is older than the whole history.
  // Never negative.
  double LagSeconds(uint64_t replica_position, Clock::time_point now) const;

  // The primary position of the first sample taken at or after `t` (read-your-writes: a
  // replica that replayed it has every write acknowledged before `t`); nullopt when no sample
  // is that recent yet.
  std::optional<uint64_t> SampleAtOrAfter(Clock::time_point t) const;

  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  size_t capacity() const { return ring_.size(); }
  // i-th sample, 0 = oldest.
  const WatermarkSample& at(size_t i) const { return ring_[(head_ + i) % ring_.size()]; }
  const WatermarkSample& oldest() const { return at(0); }
  const WatermarkSample& newest() const { return at(size_ - 1); }

 private:
  // Index (0 = oldest) of the last sample whose position is <= `position`; -1 when none.
  ptrdiff_t LastAtOrBelow(uint64_t position) const;

  std::vector<WatermarkSample> ring_;
  size_t head_ = 0;  // ring index of the oldest sample
  size_t size_ = 0;
};

}  // namespace nerava::routing
