// Private to the PostgreSQL codec: string concatenation for error texts and SCRAM messages.
// absl::StrCat is not used because Debian's abseil has its own absl::string_view, which does
// not accept std::string_view.
#pragma once

#include <string>
#include <string_view>
#include <type_traits>

namespace nerava::pg::internal {

inline void AppendPiece(std::string& out, std::string_view s) { out.append(s); }
inline void AppendPiece(std::string& out, const char* s) { out.append(s); }
inline void AppendPiece(std::string& out, char c) { out.push_back(c); }
template <typename T>
requires(std::is_integral_v<T> && !std::is_same_v<T, char> &&
         !std::is_same_v<T, bool>) void AppendPiece(std::string& out, T value) {
  out.append(std::to_string(value));
}

template <typename... Pieces>
std::string Cat(const Pieces&... pieces) {
  std::string out;
  (AppendPiece(out, pieces), ...);
  return out;
}

}  // namespace nerava::pg::internal
