// ${VAR} / ${VAR:-default} interpolation of config scalars (DESIGN §8).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nerava/config/config.h"

namespace nerava::config::internal {

// Replaces every ${VAR} with the variable's value and every ${VAR:-default} with the value, or
// with `default` (itself interpolated) when VAR is unset or empty. "$$" is a literal '$'; a '$'
// not followed by '{' or '$' is kept as is, so passwords like "pa$word" survive. Errors are
// InvalidArgument carrying only the problem, e.g. "environment variable PGPASSWORD is not set".
absl::StatusOr<std::string> Interpolate(std::string_view text, const EnvLookup& env);

}  // namespace nerava::config::internal
