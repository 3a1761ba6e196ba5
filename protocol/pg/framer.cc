#include "nerava/protocol/pg/framer.h"

#include <algorithm>

#include "absl/status/status.h"
#include "concat.h"

namespace nerava::pg {
namespace {

using internal::Cat;

constexpr size_t kHeaderSize = 5;

uint32_t ReadUint32(std::string_view bytes) {
  return (uint32_t{static_cast<uint8_t>(bytes[0])} << 24) |
         (uint32_t{static_cast<uint8_t>(bytes[1])} << 16) |
         (uint32_t{static_cast<uint8_t>(bytes[2])} << 8) | uint32_t{static_cast<uint8_t>(bytes[3])};
}

}  // namespace

absl::StatusOr<std::optional<MessageHeader>> PeekHeader(std::string_view bytes,
                                                        uint32_t max_length) {
  if (bytes.size() < kHeaderSize) return std::nullopt;
  MessageHeader header;
  header.type = bytes[0];
  header.length = ReadUint32(bytes.substr(1, 4));
  if (header.length < 4) {
    return absl::InvalidArgumentError(Cat("invalid message length ", header.length,
                                          " for message type ",
                                          static_cast<int>(static_cast<uint8_t>(header.type))));
  }
  if (header.length > max_length) {
    return absl::ResourceExhaustedError(
        Cat("message length ", header.length, " exceeds limit ", max_length));
  }
  return header;
}

Framer::Framer(Direction direction, Limits limits) : direction_(direction), limits_(limits) {}

bool Framer::Streams(char type) const {
  if (type == 'd') return true;                             // CopyData, both directions
  return direction_ == Direction::kBackend && type == 'D';  // DataRow ('D' is Describe upstream)
}

absl::StatusOr<Piece> Framer::Next(std::string_view in) {
  Piece piece;
  if (remaining_ > 0) {
    // Continuation of a streamed message: hand out whatever arrived, never an empty part.
    if (in.empty()) return piece;
    piece.kind = Piece::Kind::kPart;
    piece.type = current_type_;
    piece.size = std::min(in.size(), remaining_);
    remaining_ -= piece.size;
    piece.ends_message = remaining_ == 0;
    return piece;
  }
  if (in.size() < kHeaderSize) return piece;
  // The limit depends on the type, so it is known from the type byte before the length is read;
  // an oversized length is refused before a single body byte is buffered.
  const bool streams = Streams(in[0]);
  absl::StatusOr<std::optional<MessageHeader>> header =
      PeekHeader(in, streams ? limits_.max_streamed_message : limits_.max_message);
  if (!header.ok()) return header.status();
  const size_t total = (*header)->total_size();
  piece.type = (*header)->type;
  if (in.size() >= total) {
    piece.kind = Piece::Kind::kMessage;
    piece.size = total;
    piece.starts_message = true;
    piece.ends_message = true;
    return piece;
  }
  if (!streams) return piece;
  // in.size() >= 5 here, so the first part is never empty.
  piece.kind = Piece::Kind::kPart;
  piece.size = in.size();
  piece.starts_message = true;
  current_type_ = piece.type;
  remaining_ = total - in.size();
  return piece;
}

}  // namespace nerava::pg
