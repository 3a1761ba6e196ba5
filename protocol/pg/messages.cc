#include "nerava/protocol/pg/messages.h"

#include "absl/status/status.h"
#include "concat.h"
#include "nerava/protocol/pg/startup.h"

namespace nerava::pg {
namespace {

using internal::Cat;

// Bounds-checked cursor over a message body. Every read fails instead of running past the end.
class Reader {
 public:
  explicit Reader(std::string_view body) : rest_(body) {}

  bool empty() const { return rest_.empty(); }
  size_t size() const { return rest_.size(); }
  std::string_view rest() const { return rest_; }

  bool Byte(char& out) {
    if (rest_.empty()) return false;
    out = rest_[0];
    rest_.remove_prefix(1);
    return true;
  }
  bool Int16(int16_t& out) {
    if (rest_.size() < 2) return false;
    const uint16_t v = static_cast<uint16_t>((static_cast<uint8_t>(rest_[0]) << 8) |
                                             static_cast<uint8_t>(rest_[1]));
    out = static_cast<int16_t>(v);
    rest_.remove_prefix(2);
    return true;
  }
  bool Int32(int32_t& out) {
    if (rest_.size() < 4) return false;
    const uint32_t v = (uint32_t{static_cast<uint8_t>(rest_[0])} << 24) |
                       (uint32_t{static_cast<uint8_t>(rest_[1])} << 16) |
                       (uint32_t{static_cast<uint8_t>(rest_[2])} << 8) |
                       uint32_t{static_cast<uint8_t>(rest_[3])};
    out = static_cast<int32_t>(v);
    rest_.remove_prefix(4);
    return true;
  }
  // A NUL-terminated string; the view excludes the terminator.
  bool CString(std::string_view& out) {
    const size_t nul = rest_.find('\0');
    if (nul == std::string_view::npos) return false;
    out = rest_.substr(0, nul);
    rest_.remove_prefix(nul + 1);
    return true;
  }
  bool Skip(size_t n) {
    if (rest_.size() < n) return false;
    rest_.remove_prefix(n);
    return true;
  }

 private:
  std::string_view rest_;
};

absl::Status Malformed(std::string_view what) {
  return absl::InvalidArgumentError(Cat("malformed ", what, " message"));
}

// Checks that nothing follows the last field of a fixed layout.
absl::Status ExpectEnd(const Reader& r, std::string_view what) {
  if (!r.empty()) {
    return absl::InvalidArgumentError(
        Cat("malformed ", what, " message: ", r.size(), " trailing bytes"));
  }
  return absl::OkStatus();
}

void PutInt32(std::string& out, int32_t value) {
  const auto v = static_cast<uint32_t>(value);
  const char bytes[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                         static_cast<char>(v >> 8), static_cast<char>(v)};
  out.append(bytes, 4);
}

void PutCString(std::string& out, std::string_view s) {
  out.append(s);
  out.push_back('\0');
}

// Writes the type byte and a length placeholder; returns where the length goes.
size_t BeginMessage(std::string& out, char type) {
  out.push_back(type);
  const size_t at = out.size();
  PutInt32(out, 0);
  return at;
}

// Patches the length (which counts itself but not the type byte).
void EndMessage(std::string& out, size_t length_at) {
  const auto length = static_cast<uint32_t>(out.size() - length_at);
  for (int i = 0; i < 4; ++i) {
    out[length_at + static_cast<size_t>(i)] = static_cast<char>(length >> (24 - 8 * i));
  }
}

void AppendErrorOrNotice(std::string& out, char type, const Error& e) {
  const size_t at = BeginMessage(out, type);
  out.push_back('S');
  PutCString(out, e.severity);
  out.push_back('V');  // non-localized severity, what clients since 9.6 prefer
  PutCString(out, e.severity);
  out.push_back('C');
  PutCString(out, e.code);
  out.push_back('M');
  PutCString(out, e.message);
  if (!e.detail.empty()) {
    out.push_back('D');
    PutCString(out, e.detail);
  }
  if (!e.hint.empty()) {
    out.push_back('H');
    PutCString(out, e.hint);
  }
  out.push_back('\0');
  EndMessage(out, at);
}

void AppendAuth(std::string& out, AuthCode code, std::string_view data) {
  const size_t at = BeginMessage(out, msg::kAuthentication);
  PutInt32(out, static_cast<int32_t>(code));
  out.append(data);
  EndMessage(out, at);
}

void AppendEmpty(std::string& out, char type) {
  const size_t at = BeginMessage(out, type);
  EndMessage(out, at);
}

}  // namespace

// ---- Parsers ---------------------------------------------------------------------------------

absl::StatusOr<AuthRequest> ParseAuthRequest(std::string_view body) {
  Reader r(body);
  AuthRequest req;
  if (!r.Int32(req.code)) return Malformed("Authentication");
  req.data = r.rest();
  // The codes whose layout is fixed are checked; others (GSS, SSPI, SASL) carry free data.
  switch (static_cast<AuthCode>(req.code)) {
    case AuthCode::kOk:
    case AuthCode::kCleartextPassword:
      if (!req.data.empty()) return Malformed("Authentication");
      break;
    case AuthCode::kMd5Password:
      if (req.data.size() != 4) return Malformed("AuthenticationMD5Password");
      break;
    default:
      break;
  }
  return req;
}

absl::StatusOr<BackendKeyData> ParseBackendKeyData(std::string_view body) {
  Reader r(body);
  BackendKeyData key;
  if (!r.Int32(key.process_id) || !r.Int32(key.secret_key)) return Malformed("BackendKeyData");
  if (auto s = ExpectEnd(r, "BackendKeyData"); !s.ok()) return s;
  return key;
}

absl::StatusOr<ParameterStatus> ParseParameterStatus(std::string_view body) {
  Reader r(body);
  ParameterStatus ps;
  if (!r.CString(ps.name) || !r.CString(ps.value)) return Malformed("ParameterStatus");
  if (auto s = ExpectEnd(r, "ParameterStatus"); !s.ok()) return s;
  return ps;
}

absl::StatusOr<char> ParseReadyForQuery(std::string_view body) {
  if (body.size() != 1) return Malformed("ReadyForQuery");
  const char status = body[0];
  if (status != 'I' && status != 'T' && status != 'E') {
    return absl::InvalidArgumentError(
        Cat("invalid ReadyForQuery status byte ", static_cast<int>(static_cast<uint8_t>(status))));
  }
  return status;
}

absl::StatusOr<ErrorFields> ParseErrorFields(std::string_view body) {
  Reader r(body);
  ErrorFields fields;
  std::string_view localized_severity;
  bool have_v = false;
  while (true) {
    char code = 0;
    if (!r.Byte(code)) return Malformed("ErrorResponse/NoticeResponse");
    if (code == '\0') break;
    std::string_view value;
    if (!r.CString(value)) return Malformed("ErrorResponse/NoticeResponse");
    switch (code) {
      case 'S':
        localized_severity = value;
        break;
      case 'V':
        fields.severity = value;
        have_v = true;
        break;
      case 'C':
        fields.code = value;
        break;
      case 'M':
        fields.message = value;
        break;
      case 'D':
        fields.detail = value;
        break;
      case 'H':
        fields.hint = value;
        break;
      default:
        break;  // other fields (position, file, line ...) are not needed; unknown ones are legal
    }
  }
  if (!have_v) fields.severity = localized_severity;
  if (auto s = ExpectEnd(r, "ErrorResponse/NoticeResponse"); !s.ok()) return s;
  return fields;
}

absl::StatusOr<std::string_view> ParseQuery(std::string_view body) {
  Reader r(body);
  std::string_view sql;
  if (!r.CString(sql)) return Malformed("Query");
  if (auto s = ExpectEnd(r, "Query"); !s.ok()) return s;
  return sql;
}

absl::StatusOr<ParseMessage> ParseParse(std::string_view body) {
  Reader r(body);
  ParseMessage m;
  int16_t count = 0;
  if (!r.CString(m.statement) || !r.CString(m.query) || !r.Int16(count)) return Malformed("Parse");
  // PostgreSQL reads the count as unsigned 16 bits; each parameter type is an int32 OID.
  const size_t types = static_cast<uint16_t>(count);
  if (r.size() != types * 4) return Malformed("Parse");
  return m;
}

absl::StatusOr<BindMessage> ParseBind(std::string_view body) {
  Reader r(body);
  BindMessage m;
  if (!r.CString(m.portal) || !r.CString(m.statement)) return Malformed("Bind");
  // The rest is walked only to check its layout; the proxy forwards it unchanged.
  int16_t formats = 0;
  if (!r.Int16(formats) || formats < 0 || !r.Skip(size_t{2} * static_cast<size_t>(formats))) {
    return Malformed("Bind");
  }
  int16_t params = 0;
  if (!r.Int16(params) || params < 0) return Malformed("Bind");
  for (int i = 0; i < params; ++i) {
    int32_t len = 0;
    if (!r.Int32(len) || len < -1) return Malformed("Bind");
    if (len > 0 && !r.Skip(static_cast<size_t>(len))) return Malformed("Bind");
  }
  int16_t results = 0;
  if (!r.Int16(results) || results < 0 || !r.Skip(size_t{2} * static_cast<size_t>(results))) {
    return Malformed("Bind");
  }
  if (auto s = ExpectEnd(r, "Bind"); !s.ok()) return s;
  return m;
}

absl::StatusOr<CloseOrDescribe> ParseCloseOrDescribe(std::string_view body) {
  Reader r(body);
  CloseOrDescribe m;
  if (!r.Byte(m.kind) || !r.CString(m.name)) return Malformed("Close/Describe");
  if (m.kind != 'S' && m.kind != 'P') return Malformed("Close/Describe");
  if (auto s = ExpectEnd(r, "Close/Describe"); !s.ok()) return s;
  return m;
}

absl::StatusOr<std::string_view> ParsePasswordMessage(std::string_view body) {
  Reader r(body);
  std::string_view password;
  if (!r.CString(password)) return Malformed("PasswordMessage");
  if (auto s = ExpectEnd(r, "PasswordMessage"); !s.ok()) return s;
  return password;
}

absl::StatusOr<SaslInitialResponse> ParseSaslInitialResponse(std::string_view body) {
  Reader r(body);
  SaslInitialResponse m;
  int32_t len = 0;
  if (!r.CString(m.mechanism) || !r.Int32(len) || len < -1) return Malformed("SASLInitialResponse");
  if (len == -1) {
    if (auto s = ExpectEnd(r, "SASLInitialResponse"); !s.ok()) return s;
    return m;
  }
  if (r.size() != static_cast<size_t>(len)) return Malformed("SASLInitialResponse");
  m.data = r.rest();
  return m;
}

absl::StatusOr<std::vector<std::string_view>> ParseSaslMechanisms(std::string_view data) {
  Reader r(data);
  std::vector<std::string_view> mechanisms;
  while (true) {
    std::string_view name;
    if (!r.CString(name)) return Malformed("AuthenticationSASL");
    if (name.empty()) break;
    mechanisms.push_back(name);
  }
  if (auto s = ExpectEnd(r, "AuthenticationSASL"); !s.ok()) return s;
  return mechanisms;
}

// ---- Writers: backend ------------------------------------------------------------------------

void AppendErrorResponse(std::string& out, const Error& error) {
  AppendErrorOrNotice(out, msg::kErrorResponse, error);
}

void AppendNoticeResponse(std::string& out, const Error& notice) {
  AppendErrorOrNotice(out, msg::kNoticeResponse, notice);
}

void AppendAuthenticationOk(std::string& out) { AppendAuth(out, AuthCode::kOk, {}); }

void AppendAuthenticationCleartext(std::string& out) {
  AppendAuth(out, AuthCode::kCleartextPassword, {});
}

void AppendAuthenticationMd5(std::string& out, std::string_view salt4) {
  AppendAuth(out, AuthCode::kMd5Password, salt4);
}

void AppendAuthenticationSasl(std::string& out, const std::vector<std::string_view>& mechanisms) {
  const size_t at = BeginMessage(out, msg::kAuthentication);
  PutInt32(out, static_cast<int32_t>(AuthCode::kSasl));
  for (std::string_view m : mechanisms) PutCString(out, m);
  out.push_back('\0');
  EndMessage(out, at);
}

void AppendAuthenticationSaslContinue(std::string& out, std::string_view data) {
  AppendAuth(out, AuthCode::kSaslContinue, data);
}

void AppendAuthenticationSaslFinal(std::string& out, std::string_view data) {
  AppendAuth(out, AuthCode::kSaslFinal, data);
}

void AppendParameterStatus(std::string& out, std::string_view name, std::string_view value) {
  const size_t at = BeginMessage(out, msg::kParameterStatus);
  PutCString(out, name);
  PutCString(out, value);
  EndMessage(out, at);
}

void AppendBackendKeyData(std::string& out, BackendKeyData key) {
  const size_t at = BeginMessage(out, msg::kBackendKeyData);
  PutInt32(out, key.process_id);
  PutInt32(out, key.secret_key);
  EndMessage(out, at);
}

void AppendReadyForQuery(std::string& out, char status) {
  const size_t at = BeginMessage(out, msg::kReadyForQuery);
  out.push_back(status);
  EndMessage(out, at);
}

void AppendNegotiateProtocolVersion(std::string& out, int32_t newest_minor,
                                    const std::vector<std::string>& unrecognized_options) {
  const size_t at = BeginMessage(out, msg::kNegotiateProtocolVersion);
  PutInt32(out, newest_minor);
  PutInt32(out, static_cast<int32_t>(unrecognized_options.size()));
  for (const std::string& name : unrecognized_options) PutCString(out, name);
  EndMessage(out, at);
}

void AppendCommandComplete(std::string& out, std::string_view tag) {
  const size_t at = BeginMessage(out, msg::kCommandComplete);
  PutCString(out, tag);
  EndMessage(out, at);
}

void AppendEmptyQueryResponse(std::string& out) { AppendEmpty(out, msg::kEmptyQueryResponse); }

// ---- Writers: frontend -----------------------------------------------------------------------

void AppendStartupMessage(std::string& out,
                          const std::vector<std::pair<std::string, std::string>>& parameters) {
  // Untyped: the length starts the packet.
  const size_t at = out.size();
  PutInt32(out, 0);
  PutInt32(out, kProtocolV3);
  for (const auto& [name, value] : parameters) {
    PutCString(out, name);
    PutCString(out, value);
  }
  out.push_back('\0');
  EndMessage(out, at);
}

void AppendSslRequest(std::string& out) {
  PutInt32(out, 8);
  PutInt32(out, kSslRequestCode);
}

void AppendCancelRequest(std::string& out, BackendKeyData key) {
  PutInt32(out, 16);
  PutInt32(out, kCancelRequestCode);
  PutInt32(out, key.process_id);
  PutInt32(out, key.secret_key);
}

void AppendPasswordMessage(std::string& out, std::string_view password) {
  const size_t at = BeginMessage(out, msg::kPassword);
  PutCString(out, password);
  EndMessage(out, at);
}

void AppendSaslInitialResponse(std::string& out, std::string_view mechanism,
                               std::string_view data) {
  const size_t at = BeginMessage(out, msg::kPassword);
  PutCString(out, mechanism);
  PutInt32(out, static_cast<int32_t>(data.size()));
  out.append(data);
  EndMessage(out, at);
}

void AppendSaslResponse(std::string& out, std::string_view data) {
  const size_t at = BeginMessage(out, msg::kPassword);
  out.append(data);
  EndMessage(out, at);
}

void AppendQuery(std::string& out, std::string_view sql) {
  const size_t at = BeginMessage(out, msg::kQuery);
  PutCString(out, sql);
  EndMessage(out, at);
}

void AppendSync(std::string& out) { AppendEmpty(out, msg::kSync); }

void AppendTerminate(std::string& out) { AppendEmpty(out, msg::kTerminate); }

}  // namespace nerava::pg
