#include "nerava/protocol/redis/encoder.h"

#include <charconv>

namespace nerava::redis {
namespace {

void AppendDecimal(std::string& out, int64_t n) {
  char buf[24];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), n);
  static_cast<void>(ec);  // 24 bytes always hold an int64
  out.append(buf, end);
}

// A line-type value cannot carry CR or LF; Redis' addReplyError replaces them with spaces too,
// so an upstream or config text can never desynchronise the client's parser.
void AppendLine(std::string& out, char marker, std::string_view s) {
  out.push_back(marker);
  const size_t start = out.size();
  out.append(s);
  for (size_t i = start; i < out.size(); ++i) {
    if (out[i] == '\r' || out[i] == '\n') out[i] = ' ';
  }
  out.append("\r\n");
}

}  // namespace

void AppendSimpleString(std::string& out, std::string_view s) { AppendLine(out, '+', s); }

void AppendError(std::string& out, std::string_view message) { AppendLine(out, '-', message); }

void AppendInteger(std::string& out, int64_t n) {
  out.push_back(':');
  AppendDecimal(out, n);
  out.append("\r\n");
}

void AppendBulkString(std::string& out, std::string_view s) {
  out.push_back('$');
  AppendDecimal(out, static_cast<int64_t>(s.size()));
  out.append("\r\n");
  out.append(s);
  out.append("\r\n");
}

void AppendNullBulk(std::string& out, int resp_version) {
  out.append(resp_version >= 3 ? "_\r\n" : "$-1\r\n");
}

void AppendArrayHeader(std::string& out, int64_t n) {
  out.push_back('*');
  AppendDecimal(out, n);
  out.append("\r\n");
}

void AppendCommand(std::string& out, const std::vector<std::string>& args) {
  AppendArrayHeader(out, static_cast<int64_t>(args.size()));
  for (const std::string& arg : args) AppendBulkString(out, arg);
}

}  // namespace nerava::redis
