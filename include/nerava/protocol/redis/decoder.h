// Incremental RESP2/RESP3 decoder that never needs a whole value in memory.
//
// A Redis proxy must find where each request and each reply ends, read the command name and the
// first key of requests, and tell pushes from replies -- but it must not buffer a 100 MB bulk
// string to forward it. The decoder is a resumable state machine over a byte stream: each Feed()
// consumes as much input as it can and stops at the end of a top-level value, so the caller can
// forward the consumed bytes (or hold them) and knows exactly where values end.
//
// Pure: no I/O, no Asio. Every length read from the wire is checked against Limits before it
// is used; a violation is an error, never an allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace nerava::redis {

enum class Type : uint8_t {
  kSimpleString,  // +
  kError,         // -
  kInteger,       // :
  kBulkString,    // $   ($-1 is kNull)
  kArray,         // *   (*-1 is kNull)
  kNull,          // _   and RESP2 null bulk / null array
  kDouble,        // ,
  kBoolean,       // #
  kBigNumber,     // (
  kBlobError,     // !
  kVerbatim,      // =
  kMap,           // %
  kSet,           // ~
  kPush,          // >
  kInline,        // a request line without a type byte ("PING\r\n")
};

struct Limits {
  int64_t max_bulk = 512ll << 20;    // Redis' proto-max-bulk-len default
  int64_t max_elements = 1ll << 24;  // elements of one aggregate
  int max_depth = 32;                // aggregate nesting
  size_t max_inline = 64 << 10;      // Redis' PROTO_INLINE_MAX_SIZE
  size_t max_line = 64 << 10;        // a +, -, :, , # ( header line
};

// What Feed() tells about the input it was given.
struct Progress {
  size_t consumed = 0;     // bytes of the input that belong to the current top-level value
  bool complete = false;   // the top-level value ended at `consumed`
  Type type = Type::kNull; // type of the top-level value (valid once its first byte was seen);
                           // an attribute (|) is folded into the value after it
};

class Decoder {
 public:
  // `capture_args`: how many leading elements of a top-level array (or inline command) to copy
  // out, each truncated to `capture_bytes`. Requests need the command name and first key (3,
  // e.g. "CLIENT SETNAME name" or "SET key value"); replies need none (0).
  explicit Decoder(Limits limits = {}, size_t capture_args = 0, size_t capture_bytes = 1024);

  // Consumes bytes of `in` up to the end of the current top-level value or the end of `in`.
  // Call again with the rest of the input (after `consumed`) for the next value.
  // Errors: InvalidArgument (malformed), ResourceExhausted (a limit). After an error the stream
  // is out of sync: answer "-ERR Protocol error: <message>" and close.
  absl::StatusOr<Progress> Feed(std::string_view in);

  // Of the value that just completed (or is in progress):
  // The leading elements captured (for a request: args()[0] is the command name as sent).
  const std::vector<std::string>& args() const { return args_; }
  // Number of elements in the top-level aggregate (or inline words); 0 for scalars.
  int64_t arg_count() const { return arg_count_; }
  // True when a captured arg was longer than capture_bytes and was cut.
  bool args_truncated() const { return args_truncated_; }
  // For a top-level simple string, error or integer: its text (e.g. "OK", "ERR ...", "42").
  const std::string& scalar() const { return scalar_; }

 private:
  struct Frame {
    int64_t remaining;  // elements still expected in this aggregate (2 per map/attribute entry)
    bool attribute;     // an attribute (|) does not count as an element of its parent
  };
  enum class State { kType, kLine, kBulkBody, kBulkCrlf, kInline };

  void ResetValue();
  absl::Status Fail(absl::Status status);
  // Assembles one line ending in \n starting at `pos`; false when `in` ended first.
  absl::StatusOr<bool> TakeLine(std::string_view in, size_t& pos, size_t limit,
                                std::string_view& line);
  absl::Status StartValue(char marker);
  absl::Status OnHeaderLine(std::string_view line);
  absl::Status OnInlineLine(std::string_view line);
  // Marks the current value finished and pops finished aggregates; true when the top-level
  // value is complete.
  bool FinishValue(bool attribute);
  void Capture(std::string_view text);

  Limits limits_;
  size_t capture_args_;
  size_t capture_bytes_;
  absl::Status error_;  // sticky: after an error the stream cannot be framed again

  State state_ = State::kType;
  char current_marker_ = 0;
  bool value_started_ = false;    // bytes of a top-level value were consumed
  bool after_attribute_ = false;  // a top-level attribute was read; the real value follows
  bool top_value_ = false;        // the value being read is the top-level one
  bool capture_value_ = false;    // the value being read is a captured top-level element
  std::string line_;              // a line split across Feed() calls (bounded by the limits)
  int64_t bulk_remaining_ = 0;
  int crlf_seen_ = 0;  // bytes of the \r\n after a bulk body already consumed
  std::vector<Frame> stack_;

  Type top_type_ = Type::kNull;
  std::vector<std::string> args_;
  int64_t arg_count_ = 0;
  bool args_truncated_ = false;
  std::string scalar_;
};

}  // namespace nerava::redis
