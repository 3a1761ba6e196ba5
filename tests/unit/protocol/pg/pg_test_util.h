// Byte builders and a feeding driver shared by the PostgreSQL codec tests.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "nerava/protocol/pg/framer.h"

namespace nerava::pg::testing {

// absl::StrCat does not take std::string_view with Debian's abseil (its own absl::string_view).
inline void AppendPiece(std::string& out, std::string_view s) { out.append(s); }
inline void AppendPiece(std::string& out, const char* s) { out.append(s); }
template <typename T>
requires(std::is_integral_v<T> && !std::is_same_v<T, char>) void AppendPiece(std::string& out,
                                                                             T value) {
  out.append(std::to_string(value));
}
template <typename... Pieces>
std::string Cat(const Pieces&... pieces) {
  std::string out;
  (AppendPiece(out, pieces), ...);
  return out;
}

inline std::string Int32(int32_t v) {
  const auto u = static_cast<uint32_t>(v);
  return {static_cast<char>(u >> 24), static_cast<char>(u >> 16), static_cast<char>(u >> 8),
          static_cast<char>(u)};
}

inline std::string Int16(int16_t v) {
  const auto u = static_cast<uint16_t>(v);
  return {static_cast<char>(u >> 8), static_cast<char>(u)};
}

inline std::string Cstr(std::string_view s) { return std::string(s) + '\0'; }

// A typed message with a correct length.
inline std::string Msg(char type, std::string_view body) {
  return std::string(1, type) + Int32(static_cast<int32_t>(body.size() + 4)) + std::string(body);
}

// A typed message with an arbitrary length field.
inline std::string RawHeader(char type, uint32_t length) {
  return std::string(1, type) + Int32(static_cast<int32_t>(length));
}

// One reassembled message as the caller of a Framer would see it.
struct Framed {
  char type = 0;
  std::string bytes;  // header + body
  bool operator==(const Framed&) const = default;
};

struct FeedResult {
  std::vector<Framed> messages;
  absl::StatusCode error = absl::StatusCode::kOk;
  std::string leftover;  // bytes buffered but never handed out (an incomplete message)
  bool in_message = false;
  bool operator==(const FeedResult&) const = default;
};

// Feeds `chunks` in order through a Framer the way a session would: append to a buffer, take
// pieces until kNeedMore, consume exactly piece.size. Also checks piece invariants.
inline FeedResult Feed(Direction direction, Limits limits, const std::vector<std::string>& chunks,
                       std::vector<std::string>* violations = nullptr) {
  Framer framer(direction, limits);
  FeedResult result;
  std::string buffer;
  std::string partial;
  bool have_partial = false;
  char partial_type = 0;
  auto violation = [&](std::string what) {
    if (violations != nullptr) violations->push_back(std::move(what));
  };
  for (const std::string& chunk : chunks) {
    buffer += chunk;
    while (true) {
      absl::StatusOr<Piece> piece = framer.Next(buffer);
      if (!piece.ok()) {
        result.error = piece.status().code();
        result.leftover = buffer;
        return result;
      }
      if (piece->kind == Piece::Kind::kNeedMore) break;
      if (piece->size == 0 || piece->size > buffer.size()) {
        // Either would loop forever or read past the input: stop here.
        violation(piece->size == 0 ? "empty piece" : "piece larger than input");
        result.error = absl::StatusCode::kInternal;
        return result;
      }
      std::string bytes = buffer.substr(0, piece->size);
      buffer.erase(0, piece->size);
      if (piece->kind == Piece::Kind::kMessage) {
        if (have_partial) violation("kMessage in the middle of a streamed message");
        if (!piece->starts_message || !piece->ends_message) violation("kMessage flags");
        if (framer.in_message()) violation("in_message after kMessage");
        result.messages.push_back({piece->type, std::move(bytes)});
        continue;
      }
      // kPart
      if (piece->starts_message == have_partial) violation("starts_message out of order");
      if (piece->starts_message && bytes.size() < 5) violation("first part without header");
      if (!piece->starts_message && bytes.size() == 0) violation("empty continuation");
      if (have_partial && piece->type != partial_type) violation("part type changed");
      partial_type = piece->type;
      partial += bytes;
      have_partial = true;
      if (piece->ends_message) {
        if (framer.in_message()) violation("in_message after ends_message");
        result.messages.push_back({piece->type, std::move(partial)});
        partial.clear();
        have_partial = false;
      } else if (!framer.in_message()) {
        violation("not in_message after a non-final part");
      }
    }
  }
  result.leftover = partial + buffer;
  result.in_message = framer.in_message();
  return result;
}

// The three ways every fixture is fed: whole, one byte at a time, and split at every offset.
inline std::vector<std::vector<std::string>> AllSplits(std::string_view bytes) {
  std::vector<std::vector<std::string>> splits;
  splits.push_back({std::string(bytes)});
  std::vector<std::string> bytewise;
  for (char c : bytes) bytewise.emplace_back(1, c);
  splits.push_back(std::move(bytewise));
  for (size_t i = 1; i < bytes.size(); ++i) {
    splits.push_back({std::string(bytes.substr(0, i)), std::string(bytes.substr(i))});
  }
  return splits;
}

}  // namespace nerava::pg::testing
