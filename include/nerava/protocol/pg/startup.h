// The untyped first packet of a connection: StartupMessage, SSLRequest, GSSENCRequest or
// CancelRequest. Its length is checked against Limits::max_startup_packet before anything is
// read, as PostgreSQL does, so a client cannot make the proxy buffer an arbitrary amount.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nerava/protocol/pg/framer.h"
#include "nerava/protocol/pg/messages.h"

namespace nerava::pg {

inline constexpr int32_t kProtocolV3 = 196608;          // 3.0
inline constexpr int32_t kSslRequestCode = 80877103;    // 1234.5679
inline constexpr int32_t kCancelRequestCode = 80877102; // 1234.5678
inline constexpr int32_t kGssEncRequestCode = 80877104; // 1234.5680

struct StartupPacket {
  enum class Kind { kStartup, kSslRequest, kGssEncRequest, kCancelRequest };
  Kind kind = Kind::kStartup;
  uint16_t major = 0;  // kStartup: protocol version
  uint16_t minor = 0;
  // kStartup: name/value pairs in the order the client sent them ("user", "database",
  // "options", "_pq_.*" ...). Copied: they outlive the read buffer for the whole session.
  std::vector<std::pair<std::string, std::string>> parameters;
  BackendKeyData cancel_key;  // kCancelRequest

  // Value of a parameter, or "" when absent.
  std::string_view Get(std::string_view name) const;
};

struct ParsedStartup {
  StartupPacket packet;
  size_t consumed = 0;  // bytes of input the packet occupied
};

// Parses the packet at the front of `bytes`. nullopt: incomplete, read more.
// InvalidArgument: malformed (bad length, missing terminators, no "user", major != 3 for
// a StartupMessage is *not* an error here: the caller decides). ResourceExhausted: the
// declared length is above limits.max_startup_packet.
absl::StatusOr<std::optional<ParsedStartup>> ParseStartupPacket(std::string_view bytes,
                                                                const Limits& limits);

}  // namespace nerava::pg
