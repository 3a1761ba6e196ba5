// A fake environment for config tests: only the variables a test names exist.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "nerava/config/config.h"

namespace nerava::config::testing {

inline EnvLookup FakeEnv(std::map<std::string, std::string, std::less<>> vars) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

}  // namespace nerava::config::testing
