// Incremental framing of PostgreSQL v3 typed messages (everything after the startup packet).
//
// The proxy never needs a whole DataRow or CopyData in memory to forward it, but it must see
// ReadyForQuery, ErrorResponse, Query, Parse... whole to act on them. The framer decides per
// message (PgBouncer's forward / skip / buffer): messages of a "streamed" type are handed out as
// pieces as bytes arrive; all others only once complete, and only up to Limits::max_message.
//
// Pure: bytes in, decisions out. No allocation, no copy; the caller owns the buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/status/statusor.h"

namespace nerava::pg {

// Which side sent the stream; selects the streamed message types.
enum class Direction {
  kFrontend,  // client -> server: CopyData ('d') streams
  kBackend,   // server -> client: DataRow ('D') and CopyData ('d') stream
};

struct Limits {
  // PostgreSQL's own MAX_STARTUP_PACKET_LENGTH.
  uint32_t max_startup_packet = 10000;
  // Largest message buffered whole (Query, Parse, Bind, ErrorResponse ...).
  uint32_t max_message = 64u << 20;
  // Largest streamed message (DataRow, CopyData); PostgreSQL caps a field at 1 GB.
  uint32_t max_streamed_message = (1u << 30) + 1024;
};

// The 5-byte header of a typed message.
struct MessageHeader {
  char type = 0;
  uint32_t length = 0;  // as on the wire: counts the 4 length bytes, not the type byte
  size_t total_size() const { return size_t{length} + 1; }
  size_t body_size() const { return size_t{length} - 4; }
};

// Decodes the header at the front of `bytes`; nullopt when fewer than 5 bytes are there.
// InvalidArgument when the length is below 4, ResourceExhausted when above `max_length`.
absl::StatusOr<std::optional<MessageHeader>> PeekHeader(std::string_view bytes,
                                                        uint32_t max_length);

// One decision of the framer about the front of the unconsumed input.
struct Piece {
  enum class Kind {
    kNeedMore,  // nothing can be handed out yet; read more bytes
    kMessage,   // a whole message (header + body) of `size` bytes is at the front
    kPart,      // `size` bytes of a streamed message; more parts follow unless `ends_message`
  };
  Kind kind = Kind::kNeedMore;
  char type = 0;            // type byte of the message this piece belongs to
  size_t size = 0;          // bytes at the front of the input covered by this piece
  bool starts_message = false;  // the piece begins with the 5-byte header
  bool ends_message = false;    // the piece completes its message (always true for kMessage)
};

class Framer {
 public:
  Framer(Direction direction, Limits limits);

  // Looks at the unconsumed input (which starts where the previous piece ended) and decides.
  // The caller must consume exactly `piece.size` bytes before calling again. A streamed
  // message that is already whole in `in` is returned as kMessage.
  // Errors: InvalidArgument (bad length), ResourceExhausted (over a limit). After an error
  // the stream cannot be framed any more: the caller answers 08P01 and closes.
  absl::StatusOr<Piece> Next(std::string_view in);

  // True while in the middle of a streamed message.
  bool in_message() const { return remaining_ > 0; }

 private:
  bool Streams(char type) const;

  Direction direction_;
  Limits limits_;
  char current_type_ = 0;
  size_t remaining_ = 0;  // bytes of the current streamed message not yet handed out
};

}  // namespace nerava::pg
