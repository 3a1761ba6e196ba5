#include "nerava/routing/watermark.h"

#include <algorithm>

namespace nerava::routing {

// Two samples at least: an idle run keeps its first and last one.
Watermark::Watermark(size_t capacity) : ring_(std::max<size_t>(capacity, 2)) {}

void Watermark::Clear() {
  head_ = 0;
  size_ = 0;
}

void Watermark::Add(Clock::time_point time, uint64_t position) {
  if (size_ > 0) {
    const WatermarkSample& last = newest();
    if (time < last.time) return;
    if (position < last.position) Clear();
  }
  if (size_ >= 2 && newest().position == position && at(size_ - 2).position == position) {
    // The middle of an idle run says nothing the run's ends do not: move its end forward.
    ring_[(head_ + size_ - 1) % ring_.size()].time = time;
    return;
  }
  if (size_ == ring_.size()) {
    head_ = (head_ + 1) % ring_.size();
    --size_;
  }
  ring_[(head_ + size_) % ring_.size()] = WatermarkSample{time, position};
  ++size_;
}

ptrdiff_t Watermark::LastAtOrBelow(uint64_t position) const {
  // Positions never decrease along the ring: binary search for the first one above.
  size_t lo = 0;
  size_t hi = size_;
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (at(mid).position <= position) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return static_cast<ptrdiff_t>(lo) - 1;
}

double Watermark::LagSeconds(uint64_t replica_position, Clock::time_point now) const {
  using Seconds = std::chrono::duration<double>;
  if (size_ == 0 || replica_position >= newest().position) return 0.0;
  const ptrdiff_t below = LastAtOrBelow(replica_position);
  if (below < 0) {
    // Older than the history: the primary stood there before the oldest sample.
    return std::max(0.0, Seconds(now - oldest().time).count());
  }
  const WatermarkSample& a = at(static_cast<size_t>(below));
  const WatermarkSample& b = at(static_cast<size_t>(below) + 1);  // exists: p < newest
  const double fraction = static_cast<double>(replica_position - a.position) /
                          static_cast<double>(b.position - a.position);
  // now − (a.time + fraction · (b.time − a.time)), relative to a.time to keep precision.
  const double lag = Seconds(now - a.time).count() - Seconds(b.time - a.time).count() * fraction;
  return std::max(0.0, lag);
}

std::optional<uint64_t> Watermark::SampleAtOrAfter(Clock::time_point t) const {
  size_t lo = 0;
  size_t hi = size_;
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (at(mid).time < t) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  if (lo == size_) return std::nullopt;
  return at(lo).position;
}

}  // namespace nerava::routing
