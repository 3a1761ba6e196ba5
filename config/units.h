// Typed scalars of the config file: durations, sizes, integers, ports, booleans, endpoints.
// Every parser takes the already-interpolated text and returns InvalidArgument whose message is
// only the problem ("expected a duration ..."); the loader prefixes FILE and KEY.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nerava/config/config.h"

namespace nerava::config::internal {

// A plain number is seconds; suffixes ms, s, m, h. Fractions allowed ("1.5s") when the result
// is a whole number of milliseconds.
absl::StatusOr<std::chrono::milliseconds> ParseDuration(std::string_view text);

// A plain number is bytes; suffixes B, kB/KB, MB, GB (powers of 1000) and KiB, MiB, GiB
// (powers of 1024). Fractions allowed ("1.5MiB") when the result is a whole number of bytes.
absl::StatusOr<uint64_t> ParseSize(std::string_view text);

// Decimal integer, optional leading '-', no other decoration.
absl::StatusOr<int64_t> ParseInt(std::string_view text);

// 1..65535.
absl::StatusOr<uint16_t> ParsePort(std::string_view text);

// true/false (also yes/no, on/off, as YAML 1.1 readers expect).
absl::StatusOr<bool> ParseBool(std::string_view text);

// "host:port" or "[v6]:port". An unbracketed IPv6 address is refused: its last group would be
// taken for the port.
absl::StatusOr<Endpoint> ParseEndpoint(std::string_view text);

// Shortest exact spelling the parsers above read back: "250ms", "30s", "2m", "16MiB", "1000".
std::string FormatDuration(std::chrono::milliseconds d);
std::string FormatSize(uint64_t bytes);

}  // namespace nerava::config::internal
