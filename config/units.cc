#include "config/units.h"

#include <array>
#include <cctype>
#include <charconv>
#include <limits>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "config/text.h"

namespace nerava::config {

std::string Endpoint::ToString() const {
  using internal::Cat;
  // A ':' in the host can only be IPv6; brackets keep the port separable.
  if (host.find(':') != std::string::npos) return Cat("[", host, "]:", port);
  return Cat(host, ":", port);
}

namespace internal {
namespace {

struct Unit {
  std::string_view suffix;
  uint64_t multiplier;
};

constexpr uint64_t kKi = 1024;
constexpr std::array<Unit, 5> kDurationUnits{
    {{"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 60 * 60 * 1000}, {"", 1000}}};
constexpr std::array<Unit, 9> kSizeUnits{{{"B", 1},
                                          {"kB", 1000},
                                          {"KB", 1000},
                                          {"MB", 1000 * 1000},
                                          {"GB", 1000 * 1000 * 1000},
                                          {"KiB", kKi},
                                          {"MiB", kKi* kKi},
                                          {"GiB", kKi* kKi* kKi},
                                          {"", 1}}};

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Parses "<digits>[.<digits>]<unit>" exactly, in integer arithmetic so that "0.1s" is 100ms and
// not 99.999ms. `what` names the kind of value for messages.
template <size_t N>
absl::StatusOr<uint64_t> ParseScaled(std::string_view text, const std::array<Unit, N>& units,
                                     std::string_view what, std::string_view unit_name) {
  const std::string_view original = text;
  text = StripSpaces(text);
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(Cat("expected ", what, ", got \"", original, "\"",
                                          why.empty() ? "" : " (", why, why.empty() ? "" : ")"));
  };
  if (text.empty()) return bad("");
  if (text.front() == '-') return bad("must not be negative");
  size_t i = 0;
  uint64_t mantissa = 0;
  uint64_t scale = 1;
  int digits = 0;
  bool seen_point = false;
  bool any_digit = false;
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '.' && !seen_point) {
      seen_point = true;
      continue;
    }
    if (!IsDigit(c)) break;
    any_digit = true;
    // Leading zeros do not count towards the precision limit.
    if (mantissa == 0 && c == '0' && !seen_point) continue;
    if (++digits > 18) return bad("too many digits");
    mantissa = mantissa * 10 + static_cast<uint64_t>(c - '0');
    if (seen_point) scale *= 10;
  }
  if (!any_digit) return bad("");
  const std::string_view suffix = StripSpaces(text.substr(i));
  for (const Unit& unit : units) {
    if (unit.suffix != suffix) continue;
    if (mantissa > std::numeric_limits<uint64_t>::max() / unit.multiplier) return bad("too large");
    const uint64_t scaled = mantissa * unit.multiplier;
    if (scaled % scale != 0) return bad(Cat("not a whole number of ", unit_name));
    return scaled / scale;
  }
  return bad(Cat("unknown unit \"", suffix, "\""));
}

}  // namespace

absl::StatusOr<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  absl::StatusOr<uint64_t> ms = ParseScaled(
      text, kDurationUnits, "a duration such as 30s, 250ms, 2m, 1h or 5", "milliseconds");
  if (!ms.ok()) return ms.status();
  if (*ms > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return absl::InvalidArgumentError(Cat("duration \"", text, "\" is too large"));
  }
  return std::chrono::milliseconds(static_cast<int64_t>(*ms));
}

absl::StatusOr<uint64_t> ParseSize(std::string_view text) {
  return ParseScaled(text, kSizeUnits, "a size such as 16MiB, 1GB, 512kB or 1048576", "bytes");
}

absl::StatusOr<int64_t> ParseInt(std::string_view text) {
  const std::string_view t = StripSpaces(text);
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), value);
  if (t.empty() || ec != std::errc() || end != t.data() + t.size()) {
    return absl::InvalidArgumentError(Cat("expected an integer, got \"", text, "\""));
  }
  return value;
}

absl::StatusOr<uint16_t> ParsePort(std::string_view text) {
  absl::StatusOr<int64_t> n = ParseInt(text);
  if (!n.ok() || *n < 1 || *n > 65535) {
    return absl::InvalidArgumentError(Cat("expected a port number 1..65535, got \"", text, "\""));
  }
  return static_cast<uint16_t>(*n);
}

absl::StatusOr<bool> ParseBool(std::string_view text) {
  std::string t(StripSpaces(text));
  for (char& c : t) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (t == "true" || t == "yes" || t == "on") return true;
  if (t == "false" || t == "no" || t == "off") return false;
  return absl::InvalidArgumentError(Cat("expected true or false, got \"", text, "\""));
}

absl::StatusOr<Endpoint> ParseEndpoint(std::string_view text) {
  const std::string_view t = StripSpaces(text);
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        Cat("expected host:port or [ipv6]:port, got \"", text, "\" (", why, ")"));
  };
  std::string_view host;
  std::string_view rest;
  if (!t.empty() && t.front() == '[') {
    const size_t close = t.find(']');
    if (close == std::string_view::npos) return bad("missing ']'");
    host = t.substr(1, close - 1);
    rest = t.substr(close + 1);
    if (rest.empty() || rest.front() != ':') return bad("missing :port after ']'");
    rest.remove_prefix(1);
  } else {
    const size_t colon = t.rfind(':');
    if (colon == std::string_view::npos) return bad("missing :port");
    host = t.substr(0, colon);
    rest = t.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return bad("put IPv6 addresses in brackets");
  }
  if (host.empty()) return bad("empty host");
  absl::StatusOr<uint16_t> port = ParsePort(rest);
  if (!port.ok()) return bad("port must be 1..65535");
  return Endpoint{std::string(host), *port};
}

std::string FormatDuration(std::chrono::milliseconds d) {
  const int64_t ms = d.count();
  if (ms != 0 && ms % (60 * 60 * 1000) == 0) return Cat(ms / (60 * 60 * 1000), "h");
  if (ms != 0 && ms % (60 * 1000) == 0) return Cat(ms / (60 * 1000), "m");
  if (ms % 1000 == 0) return Cat(ms / 1000, "s");
  return Cat(ms, "ms");
}

std::string FormatSize(uint64_t bytes) {
  static constexpr std::array<std::pair<std::string_view, uint64_t>, 3> kBinary{
      {{"GiB", kKi * kKi * kKi}, {"MiB", kKi * kKi}, {"KiB", kKi}}};
  for (const auto& [suffix, unit] : kBinary) {
    if (bytes != 0 && bytes % unit == 0) return Cat(bytes / unit, suffix);
  }
  return Cat(bytes);
}

}  // namespace internal
}  // namespace nerava::config
