// Latency histogram with log-linear buckets (the HdrHistogram idea, much smaller): values below
// 128 ns get one bucket each; above, every power of two is split into 64 equal buckets, so any
// recorded value is reported within 1/64 (1.6 %) of itself. Memory is fixed (~30 KiB) however
// long the run, histograms of several threads and rounds merge by adding counts, and the
// maximum is kept exactly.
#pragma once

#include <array>
#include <cstdint>

namespace nerava::bench {

class LatencyHistogram {
 public:
  void Record(int64_t nanos);
  void Merge(const LatencyHistogram& other);

  uint64_t count() const { return count_; }
  int64_t max() const { return max_; }
  double mean() const { return count_ == 0 ? 0.0 : static_cast<double>(sum_) / count_; }
  // Value at quantile q in [0, 1] (nanoseconds): the upper edge of the bucket holding the
  // ceil(q * count)-th sample, capped by the exact maximum. 0 when empty.
  int64_t ValueAt(double q) const;

 private:
  static constexpr int kSubBits = 6;  // 64 buckets per power of two
  static constexpr int kLinear = 2 << kSubBits;  // 128 exact buckets at the bottom
  static constexpr int kBuckets = kLinear + (63 - kSubBits) * (1 << kSubBits);

  static int BucketOf(uint64_t value);
  static uint64_t UpperEdge(int bucket);

  std::array<uint64_t, kBuckets> counts_{};
  uint64_t count_ = 0;
  int64_t max_ = 0;
  uint64_t sum_ = 0;
};

}  // namespace nerava::bench
