#include "config/interpolate.h"

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "config/text.h"

namespace nerava::config::internal {
namespace {

bool IsNameStart(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
bool IsNameChar(char c) { return IsNameStart(c) || (c >= '0' && c <= '9'); }

// Defaults nest (${A:-${B:-x}}), so the closing brace is found by counting "${" openings.
size_t FindClosingBrace(std::string_view text, size_t from) {
  int depth = 1;
  for (size_t i = from; i < text.size(); ++i) {
    if (text[i] == '$' && i + 1 < text.size() && (text[i + 1] == '$' || text[i + 1] == '{')) {
      if (text[i + 1] == '{') ++depth;
      ++i;
      continue;
    }
    if (text[i] == '}' && --depth == 0) return i;
  }
  return std::string_view::npos;
}

absl::StatusOr<std::string> InterpolateImpl(std::string_view text, const EnvLookup& env,
                                            int depth) {
  // Bounded so that a pathological default cannot recurse without limit.
  if (depth > 16) return absl::InvalidArgumentError("${...} defaults nested too deeply");
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c != '$' || i + 1 == text.size() || (text[i + 1] != '$' && text[i + 1] != '{')) {
      out.push_back(c);
      ++i;
      continue;
    }
    if (text[i + 1] == '$') {
      out.push_back('$');
      i += 2;
      continue;
    }
    const size_t name_begin = i + 2;
    size_t name_end = name_begin;
    while (name_end < text.size() && IsNameChar(text[name_end])) ++name_end;
    const std::string_view name = text.substr(name_begin, name_end - name_begin);
    const std::string_view rest = text.substr(name_end);
    if (rest.empty() || (rest.front() != '}' && !rest.starts_with(":-"))) {
      if (FindClosingBrace(text, name_begin) == std::string_view::npos) {
        return absl::InvalidArgumentError(
            Cat("unterminated \"${\" in \"", text, "\" (use $$ for a literal $)"));
      }
      return absl::InvalidArgumentError(
          Cat("bad interpolation in \"", text, "\": expected ${NAME} or ${NAME:-default}"));
    }
    if (name.empty() || !IsNameStart(name.front())) {
      return absl::InvalidArgumentError(Cat("bad variable name \"", name, "\" in \"", text, "\""));
    }
    const std::optional<std::string> value = env(name);
    if (rest.front() == '}') {
      if (!value.has_value()) {
        return absl::InvalidArgumentError(Cat("environment variable ", name, " is not set"));
      }
      out += *value;
      i = name_end + 1;
      continue;
    }
    const size_t default_begin = name_end + 2;
    const size_t close = FindClosingBrace(text, default_begin);
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError(
          Cat("unterminated \"${\" in \"", text, "\" (use $$ for a literal $)"));
    }
    if (value.has_value() && !value->empty()) {
      out += *value;
    } else {
      // Evaluated only when used, like the shell: a set variable never needs its default.
      absl::StatusOr<std::string> fallback =
          InterpolateImpl(text.substr(default_begin, close - default_begin), env, depth + 1);
      if (!fallback.ok()) return fallback.status();
      out += *fallback;
    }
    i = close + 1;
  }
  return out;
}

}  // namespace

absl::StatusOr<std::string> Interpolate(std::string_view text, const EnvLookup& env) {
  return InterpolateImpl(text, env, 0);
}

}  // namespace nerava::config::internal
