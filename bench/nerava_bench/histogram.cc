#include "nerava_bench/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace nerava::bench {

// Bucket layout: [0, 128) one value each; then for each exponent e >= 1 the 64 buckets of
// [64 << e, 128 << e), each 2^e wide.
int LatencyHistogram::BucketOf(uint64_t value) {
  if (value < static_cast<uint64_t>(kLinear)) return static_cast<int>(value);
  const int msb = 63 - std::countl_zero(value);  // >= 7
  const int shift = msb - kSubBits;               // >= 1
  const int sub = static_cast<int>(value >> shift) - (1 << kSubBits);  // [0, 64)
  return kLinear + (shift - 1) * (1 << kSubBits) + sub;
}

uint64_t LatencyHistogram::UpperEdge(int bucket) {
  if (bucket < kLinear) return static_cast<uint64_t>(bucket);
  const int rel = bucket - kLinear;
  const int shift = rel / (1 << kSubBits) + 1;
  const uint64_t sub = static_cast<uint64_t>(rel % (1 << kSubBits)) + (1u << kSubBits);
  return ((sub + 1) << shift) - 1;
}

void LatencyHistogram::Record(int64_t nanos) {
  const uint64_t value = nanos < 0 ? 0 : static_cast<uint64_t>(nanos);
  ++counts_[static_cast<size_t>(BucketOf(value))];
  ++count_;
  sum_ += value;
  max_ = std::max(max_, static_cast<int64_t>(value));
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
  count_ += other.count_;
  sum_ += other.sum_;
  max_ = std::max(max_, other.max_);
}

int64_t LatencyHistogram::ValueAt(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  const auto rank = std::max<uint64_t>(
      1, static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_))));
  uint64_t seen = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      return std::min(static_cast<int64_t>(UpperEdge(static_cast<int>(i))), max_);
    }
  }
  return max_;
}

}  // namespace nerava::bench
