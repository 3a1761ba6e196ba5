// Feeds arbitrary bytes to a request decoder (capturing 3 args) and a reply decoder, whole and
// in small splits. Any input may be rejected; none may crash, hang or allocate unboundedly.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "nerava/protocol/redis/decoder.h"

namespace {

// Small limits so that the fuzzer reaches every limit check quickly.
nerava::redis::Limits FuzzLimits() {
  nerava::redis::Limits limits;
  limits.max_bulk = 1 << 20;
  limits.max_elements = 1 << 16;
  limits.max_depth = 8;
  limits.max_inline = 256;
  limits.max_line = 256;
  return limits;
}

void Drive(nerava::redis::Decoder& decoder, std::string_view in, size_t step) {
  while (!in.empty()) {
    std::string_view chunk = in.substr(0, step);
    in.remove_prefix(chunk.size());
    while (!chunk.empty()) {
      absl::StatusOr<nerava::redis::Progress> p = decoder.Feed(chunk);
      if (!p.ok()) return;
      if (p->consumed > chunk.size()) __builtin_trap();
      if (!p->complete && p->consumed != chunk.size()) __builtin_trap();
      if (p->complete && p->consumed == 0) __builtin_trap();  // no progress: would loop forever
      chunk.remove_prefix(p->consumed);
      for (const std::string& arg : decoder.args()) {
        if (arg.size() > 16) __builtin_trap();
      }
      if (!p->complete) break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  // The first byte picks the split size so that both whole and fragmented feeds are explored.
  const size_t step = size == 0 ? 1 : 1 + data[0] % 7;
  for (size_t split : {in.size() + 1, step}) {
    nerava::redis::Decoder requests(FuzzLimits(), 3, 16);
    Drive(requests, in, split);
    nerava::redis::Decoder replies(FuzzLimits(), 0, 0);
    Drive(replies, in, split);
  }
  return 0;
}
