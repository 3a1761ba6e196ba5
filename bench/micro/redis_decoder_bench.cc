// RESP decoding of requests as a client pipelines them (redis-benchmark -P 16 GET), with the
// proxy's capture of the command name and key, and of the replies coming back.
#include <string>

#include "alloc_counter.h"
#include "benchmark/benchmark.h"
#include "nerava/protocol/redis/decoder.h"

namespace nerava::micro {
namespace {

std::string PipelinedGets(int count) {
  std::string out;
  for (int i = 0; i < count; ++i) {
    const std::string key = "key:" + std::to_string(100000 + i);
    // Appended piecewise: GCC 12 -O3 misreports operator+ chains here (-Wrestrict).
    out.append("*2\r\n$3\r\nGET\r\n$").append(std::to_string(key.size())).append("\r\n");
    out.append(key).append("\r\n");
  }
  return out;
}

std::string BulkReplies(int count, size_t value_bytes) {
  std::string out;
  for (int i = 0; i < count; ++i) {
    out.append("$").append(std::to_string(value_bytes)).append("\r\n");
    out.append(value_bytes, 'x').append("\r\n");
  }
  return out;
}

// Feeds `input` value by value as a session does; counters per decoded value.
void DecodeAll(benchmark::State& state, const std::string& input, size_t capture_args) {
  redis::Decoder decoder(redis::Limits{}, capture_args);
  int64_t values = 0;
  AllocScope allocs;
  for (auto _ : state) {
    std::string_view rest = input;
    while (!rest.empty()) {
      absl::StatusOr<redis::Progress> progress = decoder.Feed(rest);
      if (!progress.ok() || !progress->complete) {
        state.SkipWithError("decode failed");
        return;
      }
      rest.remove_prefix(progress->consumed);
      benchmark::DoNotOptimize(decoder.args());
      ++values;
    }
  }
  allocs.Report(state);
  state.SetBytesProcessed(static_cast<int64_t>(input.size()) * state.iterations());
  state.counters["values/op"] =
      benchmark::Counter(static_cast<double>(values), benchmark::Counter::kAvgIterations);
}

void BM_RespPipelinedGets(benchmark::State& state) {
  DecodeAll(state, PipelinedGets(static_cast<int>(state.range(0))), /*capture_args=*/3);
}
BENCHMARK(BM_RespPipelinedGets)->Arg(1)->Arg(16)->Arg(256);

void BM_RespBulkReplies(benchmark::State& state) {
  DecodeAll(state, BulkReplies(16, static_cast<size_t>(state.range(0))), /*capture_args=*/0);
}
BENCHMARK(BM_RespBulkReplies)->Arg(3)->Arg(1024);

}  // namespace
}  // namespace nerava::micro
