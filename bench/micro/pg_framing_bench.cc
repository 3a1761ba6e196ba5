// PostgreSQL framing of a server reply stream: RowDescription, N DataRows, CommandComplete,
// ReadyForQuery, as the relay sees a result set. Measures the framer alone (no copies).
#include <algorithm>
#include <cstdint>
#include <string>

#include "alloc_counter.h"
#include "benchmark/benchmark.h"
#include "nerava/protocol/pg/framer.h"

namespace nerava::micro {
namespace {

void PutMessage(std::string& out, char type, const std::string& body) {
  out.push_back(type);
  const uint32_t len = static_cast<uint32_t>(body.size() + 4);
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(len >> shift));
  out += body;
}

// One int4 column per row, as pgbench -S returns; `rows` DataRows.
std::string ResultSet(int rows, int field_bytes) {
  std::string out;
  PutMessage(out, 'T', std::string("\0\x01" "abalance\0" "\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
                                   2 + 9 + 18));
  std::string row("\0\x01", 2);
  row += std::string("\0\0\0", 3) + static_cast<char>(field_bytes);
  row += std::string(static_cast<size_t>(field_bytes), '7');
  for (int i = 0; i < rows; ++i) PutMessage(out, 'D', row);
  PutMessage(out, 'C', std::string("SELECT 1\0", 9));
  PutMessage(out, 'Z', "I");
  return out;
}

// Whole buffer available at once: every message comes out as one kMessage piece.
void BM_PgFramerDataRows(benchmark::State& state) {
  const std::string input = ResultSet(static_cast<int>(state.range(0)), 8);
  pg::Framer framer(pg::Direction::kBackend, pg::Limits{});
  int64_t messages = 0;
  AllocScope allocs;
  for (auto _ : state) {
    std::string_view rest = input;
    while (!rest.empty()) {
      absl::StatusOr<pg::Piece> piece = framer.Next(rest);
      if (!piece.ok() || piece->kind == pg::Piece::Kind::kNeedMore) {
        state.SkipWithError("framing failed");
        return;
      }
      rest.remove_prefix(piece->size);
      ++messages;
    }
  }
  allocs.Report(state);
  state.SetBytesProcessed(static_cast<int64_t>(input.size()) * state.iterations());
  state.counters["msgs/op"] =
      benchmark::Counter(static_cast<double>(messages), benchmark::Counter::kAvgIterations);
}
BENCHMARK(BM_PgFramerDataRows)->Arg(1)->Arg(100)->Arg(1000);

// The same stream arriving in 1460-byte reads (a TCP segment each): streamed DataRows split
// across reads come out as kPart pieces.
void BM_PgFramerSegmented(benchmark::State& state) {
  const std::string input = ResultSet(1000, 64);
  constexpr size_t kSegment = 1460;
  pg::Framer framer(pg::Direction::kBackend, pg::Limits{});
  AllocScope allocs;
  for (auto _ : state) {
    // [pos, end) is what the proxy has read and not yet handed on.
    size_t pos = 0;
    size_t end = std::min(input.size(), kSegment);
    while (pos < input.size()) {
      absl::StatusOr<pg::Piece> piece = framer.Next(std::string_view(input).substr(pos, end - pos));
      if (!piece.ok() || (piece->kind == pg::Piece::Kind::kNeedMore && end == input.size())) {
        state.SkipWithError("framing failed");
        return;
      }
      if (piece->kind != pg::Piece::Kind::kNeedMore) pos += piece->size;
      if (piece->kind == pg::Piece::Kind::kNeedMore || pos == end) {
        end = std::min(input.size(), end + kSegment);
      }
    }
  }
  allocs.Report(state);
  state.SetBytesProcessed(static_cast<int64_t>(input.size()) * state.iterations());
}
BENCHMARK(BM_PgFramerSegmented);

}  // namespace
}  // namespace nerava::micro
