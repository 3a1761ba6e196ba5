#include "nerava/protocol/pg/startup.h"

#include "absl/status/status.h"
#include "concat.h"

namespace nerava::pg {
namespace {

using internal::Cat;

uint32_t ReadUint32(std::string_view bytes) {
  return (uint32_t{static_cast<uint8_t>(bytes[0])} << 24) |
         (uint32_t{static_cast<uint8_t>(bytes[1])} << 16) |
         (uint32_t{static_cast<uint8_t>(bytes[2])} << 8) | uint32_t{static_cast<uint8_t>(bytes[3])};
}

absl::Status InvalidLayout() {
  return absl::InvalidArgumentError(
      "invalid startup packet layout: expected terminator as last byte");
}

// Parses name\0value\0 ... \0 as PostgreSQL's ProcessStartupPacket does.
absl::Status ParseParameters(std::string_view rest, StartupPacket& packet) {
  while (true) {
    const size_t name_end = rest.find('\0');
    if (name_end == std::string_view::npos) return InvalidLayout();
    if (name_end == 0) {
      // The empty name is the final terminator, and it must be the last byte.
      if (rest.size() != 1) return InvalidLayout();
      break;
    }
    std::string_view name = rest.substr(0, name_end);
    rest.remove_prefix(name_end + 1);
    const size_t value_end = rest.find('\0');
    if (value_end == std::string_view::npos) return InvalidLayout();
    std::string_view value = rest.substr(0, value_end);
    rest.remove_prefix(value_end + 1);
    packet.parameters.emplace_back(std::string(name), std::string(value));
  }
  if (packet.Get("user").empty()) {
    return absl::InvalidArgumentError("no PostgreSQL user name specified in startup packet");
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view StartupPacket::Get(std::string_view name) const {
  // The last occurrence wins, as in PostgreSQL where a later parameter overrides an earlier one.
  for (auto it = parameters.rbegin(); it != parameters.rend(); ++it) {
    if (it->first == name) return it->second;
  }
  return {};
}

absl::StatusOr<std::optional<ParsedStartup>> ParseStartupPacket(std::string_view bytes,
                                                                const Limits& limits) {
  if (bytes.size() < 4) return std::nullopt;
  // Decided from the length alone so an oversized packet is refused before it is buffered.
  const uint32_t length = ReadUint32(bytes);
  if (length < 8) {
    return absl::InvalidArgumentError(Cat("invalid length of startup packet: ", length));
  }
  if (length > limits.max_startup_packet) {
    return absl::ResourceExhaustedError(
        Cat("startup packet length ", length, " exceeds limit ", limits.max_startup_packet));
  }
  if (bytes.size() < length) return std::nullopt;

  ParsedStartup parsed;
  parsed.consumed = length;
  StartupPacket& packet = parsed.packet;
  std::string_view body = bytes.substr(8, length - 8);
  const uint32_t code = ReadUint32(bytes.substr(4, 4));
  switch (static_cast<int32_t>(code)) {
    case kSslRequestCode:
    case kGssEncRequestCode:
      if (length != 8) {
        return absl::InvalidArgumentError(
            Cat("invalid length ", length, " of SSLRequest/GSSENCRequest"));
      }
      packet.kind = static_cast<int32_t>(code) == kSslRequestCode
                        ? StartupPacket::Kind::kSslRequest
                        : StartupPacket::Kind::kGssEncRequest;
      return parsed;
    case kCancelRequestCode: {
      if (length != 16) {
        return absl::InvalidArgumentError(Cat("invalid length ", length, " of CancelRequest"));
      }
      packet.kind = StartupPacket::Kind::kCancelRequest;
      packet.cancel_key.process_id = static_cast<int32_t>(ReadUint32(body));
      packet.cancel_key.secret_key = static_cast<int32_t>(ReadUint32(body.substr(4)));
      return parsed;
    }
    default:
      break;
  }
  packet.kind = StartupPacket::Kind::kStartup;
  packet.major = static_cast<uint16_t>(code >> 16);
  packet.minor = static_cast<uint16_t>(code & 0xffff);
  // Other majors are framed only; the caller refuses them with the right message.
  if (packet.major != 3) return parsed;
  if (auto status = ParseParameters(body, packet); !status.ok()) return status;
  return parsed;
}

}  // namespace nerava::pg
