// Writers for the RESP replies and requests the proxy composes itself (errors, OK, replayed
// AUTH/SELECT/HELLO commands). Each appends one complete value to `out`.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nerava::redis {

void AppendSimpleString(std::string& out, std::string_view s);  // +OK
// `message` starts with the error code: "ERR Protocol error: ...", "READONLY ...", "TRYAGAIN ..."
void AppendError(std::string& out, std::string_view message);
void AppendInteger(std::string& out, int64_t n);
void AppendBulkString(std::string& out, std::string_view s);
void AppendNullBulk(std::string& out, int resp_version);  // $-1 (RESP2) or _ (RESP3)
void AppendArrayHeader(std::string& out, int64_t n);
// A request as a RESP array of bulk strings, e.g. {"SELECT", "3"}.
void AppendCommand(std::string& out, const std::vector<std::string>& args);

}  // namespace nerava::redis
