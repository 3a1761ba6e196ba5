#include "routing/literal_shape.h"

namespace nerava::routing {
namespace {

bool IsIdentChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '$' || static_cast<unsigned char>(c) >= 0x80;
}
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

std::optional<std::string> LiteralShape(std::string_view sql) {
  std::string shape;
  shape.reserve(sql.size());
  bool replaced = false;
  size_t i = 0;
  const size_t n = sql.size();
  while (i < n) {
    const char c = sql[i];
    if (c == '-' && i + 1 < n && sql[i + 1] == '-') {  // line comment: kept
      const size_t end = sql.find('\n', i);
      const size_t stop = end == std::string_view::npos ? n : end;
      shape.append(sql.substr(i, stop - i));
      i = stop;
    } else if (c == '/' && i + 1 < n && sql[i + 1] == '*') {  // block comment: kept
      const size_t end = sql.find("*/", i + 2);
      if (end == std::string_view::npos) return std::nullopt;
      shape.append(sql.substr(i, end + 2 - i));
      i = end + 2;
    } else if (c == '"') {  // quoted identifier: kept
      const size_t end = sql.find('"', i + 1);
      if (end == std::string_view::npos) return std::nullopt;
      shape.append(sql.substr(i, end + 1 - i));
      i = end + 1;
    } else if (c == '$') {
      // $1 parameters are kept; dollar quoting is not normalized.
      if (i + 1 < n && IsDigit(sql[i + 1])) {
        shape.push_back(c);
        ++i;
        while (i < n && IsDigit(sql[i])) shape.push_back(sql[i++]);
      } else {
        return std::nullopt;
      }
    } else if (c == '\'') {
      // A standard string; a prefix letter (E'', B'', X'', U&'') was copied as an identifier
      // character: E'' has backslash escapes, so give up on it.
      if (!shape.empty() && (shape.back() == 'E' || shape.back() == 'e')) return std::nullopt;
      size_t j = i + 1;
      for (;;) {
        if (j >= n) return std::nullopt;
        if (sql[j] == '\'') {
          if (j + 1 < n && sql[j + 1] == '\'') {
            j += 2;
            continue;
          }
          break;
        }
        ++j;
      }
      shape.push_back('?');
      replaced = true;
      i = j + 1;
    } else if (IsDigit(c) && (shape.empty() || !IsIdentChar(shape.back()))) {
      while (i < n && (IsDigit(sql[i]) || sql[i] == '.')) ++i;
      if (i < n && (sql[i] == 'e' || sql[i] == 'E')) {
        size_t j = i + 1;
        if (j < n && (sql[j] == '+' || sql[j] == '-')) ++j;
        if (j < n && IsDigit(sql[j])) {
          i = j;
          while (i < n && IsDigit(sql[i])) ++i;
        }
      }
      shape.push_back('?');
      replaced = true;
    } else {
      shape.push_back(c);
      ++i;
    }
  }
  if (!replaced) return std::nullopt;
  return shape;
}

}  // namespace nerava::routing
