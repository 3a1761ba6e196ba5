// The shape of a statement: its text with numeric and string literals replaced by '?', so that
// statements differing only in values (pgbench -S sends a new literal each time) share one
// cache entry. Comments (route hints live there), identifiers and keywords are kept as they are.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace nerava::routing {

// nullopt when the text holds nothing to replace, or a construct the scanner does not
// normalize (dollar quoting, escape strings): then only the exact text is a key.
std::optional<std::string> LiteralShape(std::string_view sql);

}  // namespace nerava::routing
