// Small string helpers for messages. Debian's abseil is built with its own absl::string_view
// (not std::string_view), so absl::StrCat and friends do not accept std::string_view here.
#pragma once

#include <concepts>
#include <string>
#include <string_view>

#include "absl/base/config.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace nerava::config::internal {

inline void AppendPiece(std::string& out, std::string_view s) { out.append(s); }
inline void AppendPiece(std::string& out, const char* s) { out.append(s); }
inline void AppendPiece(std::string& out, const std::string& s) { out.append(s); }
#ifndef ABSL_USES_STD_STRING_VIEW
inline void AppendPiece(std::string& out, absl::string_view s) { out.append(s.data(), s.size()); }
#endif
template <typename T>
requires std::integral<T> &&
    (!std::same_as<T, char>)&&(!std::same_as<T, bool>)void AppendPiece(std::string& out, T value) {
  out += std::to_string(value);
}

template <typename... Pieces>
std::string Cat(const Pieces&... pieces) {
  std::string out;
  (AppendPiece(out, pieces), ...);
  return out;
}

template <typename Range>
std::string JoinStrings(const Range& items, std::string_view separator) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out.append(separator);
    AppendPiece(out, item);
  }
  return out;
}

inline std::string_view StripSpaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

inline std::string MessageOf(const absl::Status& status) {
  return std::string(status.message().data(), status.message().size());
}

}  // namespace nerava::config::internal
