// Cross-field rules and derived defaults, run after every key has been read and typed.
#pragma once

#include "config/errors.h"
#include "nerava/config/config.h"

namespace nerava::config::internal {

// Where region / primary_region came from, so that messages point at the right place.
struct Origins {
  bool region_from_env = false;
  bool primary_region_from_env = false;
};

// Fills derived defaults (monitor.timeout) and reports every rule that does not hold.
void ValidateConfig(Config& config, const Origins& origins, ErrorList& errors);

}  // namespace nerava::config::internal
