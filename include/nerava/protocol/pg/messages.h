// Parsers for the message bodies the proxy inspects, and writers for the messages it composes.
//
// Parsers take the body (the bytes after the 5-byte header) and return views into it; every
// length and terminator is checked, and a malformed body is InvalidArgument. Writers append a
// complete message (header included) to `out`.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace nerava::pg {

// Message type bytes used by the proxy.
namespace msg {
// Backend
inline constexpr char kAuthentication = 'R';
inline constexpr char kBackendKeyData = 'K';
inline constexpr char kParameterStatus = 'S';
inline constexpr char kReadyForQuery = 'Z';
inline constexpr char kErrorResponse = 'E';
inline constexpr char kNoticeResponse = 'N';
inline constexpr char kNotificationResponse = 'A';
inline constexpr char kNegotiateProtocolVersion = 'v';
inline constexpr char kCommandComplete = 'C';
inline constexpr char kDataRow = 'D';
inline constexpr char kRowDescription = 'T';
inline constexpr char kParseComplete = '1';
inline constexpr char kBindComplete = '2';
inline constexpr char kCloseComplete = '3';
inline constexpr char kCopyInResponse = 'G';
inline constexpr char kCopyOutResponse = 'H';
inline constexpr char kCopyBothResponse = 'W';
inline constexpr char kEmptyQueryResponse = 'I';
inline constexpr char kPortalSuspended = 's';
inline constexpr char kNoData = 'n';
inline constexpr char kParameterDescription = 't';
// Frontend
inline constexpr char kQuery = 'Q';
inline constexpr char kParse = 'P';
inline constexpr char kBind = 'B';
inline constexpr char kDescribe = 'D';
inline constexpr char kExecute = 'E';
inline constexpr char kSync = 'S';
inline constexpr char kFlush = 'H';
inline constexpr char kClose = 'C';
inline constexpr char kTerminate = 'X';
inline constexpr char kPassword = 'p';  // also SASLInitialResponse / SASLResponse
inline constexpr char kFunctionCall = 'F';
// Both directions
inline constexpr char kCopyData = 'd';
inline constexpr char kCopyDone = 'c';
inline constexpr char kCopyFail = 'f';
}  // namespace msg

// Authentication request codes ('R').
enum class AuthCode : int32_t {
  kOk = 0,
  kCleartextPassword = 3,
  kMd5Password = 5,
  kSasl = 10,
  kSaslContinue = 11,
  kSaslFinal = 12,
};

struct AuthRequest {
  int32_t code = 0;       // AuthCode value; other values are passed through as numbers
  std::string_view data;  // bytes after the code (MD5 salt, SASL mechanism list or payload)
};

struct BackendKeyData {
  int32_t process_id = 0;
  int32_t secret_key = 0;
};

struct ParameterStatus {
  std::string_view name;
  std::string_view value;
};

// Fields of an ErrorResponse or NoticeResponse.
struct ErrorFields {
  std::string_view severity;  // 'S' (localized) or 'V'
  std::string_view code;      // 'C' SQLSTATE
  std::string_view message;   // 'M'
  std::string_view detail;    // 'D'
  std::string_view hint;      // 'H'
};

// What the proxy composes for a client: always a complete, valid ErrorResponse.
struct Error {
  std::string severity = "ERROR";  // ERROR, FATAL
  std::string code;                // SQLSTATE, e.g. "08P01"
  std::string message;
  std::string detail;  // optional
  std::string hint;    // optional
};

// Extended-protocol frontend messages, as far as the proxy needs them.
struct ParseMessage {
  std::string_view statement;  // "" is the unnamed statement
  std::string_view query;
};
struct BindMessage {
  std::string_view portal;
  std::string_view statement;
};
struct CloseOrDescribe {
  char kind = 0;  // 'S' statement or 'P' portal
  std::string_view name;
};
struct SaslInitialResponse {
  std::string_view mechanism;
  std::string_view data;  // empty when the client sent length -1
};

// ---- Parsers (body only) --------------------------------------------------------------------
absl::StatusOr<AuthRequest> ParseAuthRequest(std::string_view body);
absl::StatusOr<BackendKeyData> ParseBackendKeyData(std::string_view body);
absl::StatusOr<ParameterStatus> ParseParameterStatus(std::string_view body);
// Returns the transaction status byte: 'I' idle, 'T' in transaction, 'E' failed transaction.
absl::StatusOr<char> ParseReadyForQuery(std::string_view body);
absl::StatusOr<ErrorFields> ParseErrorFields(std::string_view body);  // 'E' and 'N'
absl::StatusOr<std::string_view> ParseQuery(std::string_view body);   // 'Q'
absl::StatusOr<ParseMessage> ParseParse(std::string_view body);       // 'P'
absl::StatusOr<BindMessage> ParseBind(std::string_view body);         // 'B' (names only)
absl::StatusOr<CloseOrDescribe> ParseCloseOrDescribe(std::string_view body);  // 'C' / 'D'
absl::StatusOr<std::string_view> ParsePasswordMessage(std::string_view body);  // 'p'
absl::StatusOr<SaslInitialResponse> ParseSaslInitialResponse(std::string_view body);  // 'p'
// SASL mechanisms offered in an AuthenticationSASL request's data.
absl::StatusOr<std::vector<std::string_view>> ParseSaslMechanisms(std::string_view data);

// ---- Writers: backend messages (proxy -> client) ---------------------------------------------
void AppendErrorResponse(std::string& out, const Error& error);
void AppendNoticeResponse(std::string& out, const Error& notice);
void AppendAuthenticationOk(std::string& out);
void AppendAuthenticationCleartext(std::string& out);
void AppendAuthenticationMd5(std::string& out, std::string_view salt4);
void AppendAuthenticationSasl(std::string& out, const std::vector<std::string_view>& mechanisms);
void AppendAuthenticationSaslContinue(std::string& out, std::string_view data);
void AppendAuthenticationSaslFinal(std::string& out, std::string_view data);
void AppendParameterStatus(std::string& out, std::string_view name, std::string_view value);
void AppendBackendKeyData(std::string& out, BackendKeyData key);
void AppendReadyForQuery(std::string& out, char status);
void AppendNegotiateProtocolVersion(std::string& out, int32_t newest_minor,
                                    const std::vector<std::string>& unrecognized_options);
void AppendCommandComplete(std::string& out, std::string_view tag);
void AppendEmptyQueryResponse(std::string& out);

// ---- Writers: frontend messages (proxy -> server) --------------------------------------------
// StartupMessage for protocol 3.0 with parameters in the given order.
void AppendStartupMessage(std::string& out,
                          const std::vector<std::pair<std::string, std::string>>& parameters);
void AppendSslRequest(std::string& out);
void AppendCancelRequest(std::string& out, BackendKeyData key);
void AppendPasswordMessage(std::string& out, std::string_view password);
void AppendSaslInitialResponse(std::string& out, std::string_view mechanism,
                               std::string_view data);
void AppendSaslResponse(std::string& out, std::string_view data);
void AppendQuery(std::string& out, std::string_view sql);
void AppendSync(std::string& out);
void AppendTerminate(std::string& out);

}  // namespace nerava::pg
