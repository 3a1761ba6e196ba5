#include "nerava/protocol/pg/messages.h"

#include <functional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nerava/protocol/pg/framer.h"
#include "pg_test_util.h"

namespace nerava::pg {
namespace {

using namespace std::string_literals;
using testing::AllSplits;
using testing::Cat;
using testing::Cstr;
using testing::Feed;
using testing::FeedResult;
using testing::Int16;
using testing::Int32;
using testing::Msg;

// Each parser's result rendered as text so one table can hold every message type.
using Render = std::function<absl::StatusOr<std::string>(std::string_view body)>;

template <typename T, typename F>
Render Via(absl::StatusOr<T> (*parse)(std::string_view), F format) {
  return [parse, format](std::string_view body) -> absl::StatusOr<std::string> {
    absl::StatusOr<T> r = parse(body);
    if (!r.ok()) return r.status();
    return format(*r);
  };
}

const Render kAuth =
    Via(&ParseAuthRequest, [](const AuthRequest& r) { return Cat(r.code, "|", r.data); });
const Render kKey = Via(&ParseBackendKeyData, [](const BackendKeyData& k) {
  return Cat(k.process_id, "|", k.secret_key);
});
const Render kParam =
    Via(&ParseParameterStatus, [](const ParameterStatus& p) { return Cat(p.name, "=", p.value); });
const Render kRfq = Via(&ParseReadyForQuery, [](char c) { return std::string(1, c); });
const Render kErr = Via(&ParseErrorFields, [](const ErrorFields& e) {
  return Cat(e.severity, "|", e.code, "|", e.message, "|", e.detail, "|", e.hint);
});
const Render kQuery = Via(&ParseQuery, [](std::string_view q) { return std::string(q); });
const Render kParse =
    Via(&ParseParse, [](const ParseMessage& m) { return Cat(m.statement, "|", m.query); });
const Render kBind =
    Via(&ParseBind, [](const BindMessage& m) { return Cat(m.portal, "|", m.statement); });
const Render kCloseDescribe = Via(&ParseCloseOrDescribe, [](const CloseOrDescribe& m) {
  return Cat(std::string(1, m.kind), "|", m.name);
});
const Render kPassword =
    Via(&ParsePasswordMessage, [](std::string_view p) { return std::string(p); });
const Render kSaslInitial = Via(&ParseSaslInitialResponse, [](const SaslInitialResponse& m) {
  return Cat(m.mechanism, "|", m.data);
});
const Render kMechanisms = Via(&ParseSaslMechanisms, [](const std::vector<std::string_view>& v) {
  std::string joined;
  for (std::string_view m : v) joined += Cat(joined.empty() ? "" : ",", m);
  return joined;
});
// AuthenticationSASL: the mechanism list follows the code.
const Render kSaslRequest = [](std::string_view body) -> absl::StatusOr<std::string> {
  absl::StatusOr<AuthRequest> r = ParseAuthRequest(body);
  if (!r.ok()) return r.status();
  if (r->code != static_cast<int32_t>(AuthCode::kSasl)) return absl::InternalError("not SASL");
  return kMechanisms(r->data);
};

constexpr absl::StatusCode kOk = absl::StatusCode::kOk;
constexpr absl::StatusCode kBad = absl::StatusCode::kInvalidArgument;

struct ParserCase {
  const char* name;
  Direction direction;
  char type;
  std::string body;
  Render render;
  std::string expected;  // when code is kOk
  absl::StatusCode code = kOk;
};

// A Bind body: portal, statement, formats, params, result formats.
std::string BindBody(std::string_view portal, std::string_view stmt) {
  return Cstr(portal) + Cstr(stmt) + Int16(1) + Int16(0) + Int16(2) + Int32(3) + "abc" + Int32(-1) +
         Int16(1) + Int16(1);
}

std::vector<ParserCase> Cases() {
  const Direction be = Direction::kBackend;
  const Direction fe = Direction::kFrontend;
  return {
      // Backend messages.
      {"AuthenticationOk", be, 'R', Int32(0), kAuth, "0|"},
      {"AuthenticationCleartextPassword", be, 'R', Int32(3), kAuth, "3|"},
      {"AuthenticationMD5Password", be, 'R', Int32(5) + "salt", kAuth, "5|salt"},
      {"AuthenticationSASL", be, 'R',
       Int32(10) + Cstr("SCRAM-SHA-256-PLUS") + Cstr("SCRAM-SHA-256") + '\0', kSaslRequest,
       "SCRAM-SHA-256-PLUS,SCRAM-SHA-256"},
      {"AuthenticationSASLContinue", be, 'R', Int32(11) + "r=abc,s=xyz,i=4096", kAuth,
       "11|r=abc,s=xyz,i=4096"},
      {"AuthenticationSASLFinal", be, 'R', Int32(12) + "v=sig", kAuth, "12|v=sig"},
      {"unknown auth code passes through", be, 'R', Int32(8) + "gss", kAuth, "8|gss"},
      {"BackendKeyData", be, 'K', Int32(1234) + Int32(-5), kKey, "1234|-5"},
      {"ParameterStatus", be, 'S', Cstr("server_version") + Cstr("15.4"), kParam,
       "server_version=15.4"},
      {"ParameterStatus empty value", be, 'S', Cstr("application_name") + Cstr(""), kParam,
       "application_name="},
      {"ReadyForQuery I", be, 'Z', "I", kRfq, "I"},
      {"ReadyForQuery T", be, 'Z', "T", kRfq, "T"},
      {"ReadyForQuery E", be, 'Z', "E", kRfq, "E"},
      {"ErrorResponse V preferred over S", be, 'E',
       "SFEHLER\0VFATAL\0C28P01\0Mpassword failed\0Dmore\0Hhint\0Ffile.c\0L12\0\0"s, kErr,
       "FATAL|28P01|password failed|more|hint"},
      {"ErrorResponse V before S", be, 'E', "VERROR\0SFEHLER\0C42601\0Msyntax\0\0"s, kErr,
       "ERROR|42601|syntax||"},
      {"ErrorResponse S only", be, 'E', "SERROR\0C42601\0Msyntax\0\0"s, kErr,
       "ERROR|42601|syntax||"},
      {"NoticeResponse no fields", be, 'N', "\0"s, kErr, "||||"},
      // Frontend messages.
      {"Query", fe, 'Q', Cstr("SELECT 1"), kQuery, "SELECT 1"},
      {"Query empty", fe, 'Q', Cstr(""), kQuery, ""},
      {"Parse unnamed no types", fe, 'P', Cstr("") + Cstr("SELECT 1") + Int16(0), kParse,
       "|SELECT 1"},
      {"Parse named with types", fe, 'P',
       Cstr("s1") + Cstr("SELECT $1, $2") + Int16(2) + Int32(23) + Int32(25), kParse,
       "s1|SELECT $1, $2"},
      {"Bind", fe, 'B', BindBody("p1", "s1"), kBind, "p1|s1"},
      {"Bind unnamed minimal", fe, 'B', Cstr("") + Cstr("") + Int16(0) + Int16(0) + Int16(0), kBind,
       "|"},
      {"Close statement", fe, 'C', "S" + Cstr("s1"), kCloseDescribe, "S|s1"},
      {"Describe portal", fe, 'D', "P" + Cstr(""), kCloseDescribe, "P|"},
      {"PasswordMessage", fe, 'p', Cstr("md5abc"), kPassword, "md5abc"},
      {"SASLInitialResponse", fe, 'p', Cstr("SCRAM-SHA-256") + Int32(4) + "n,,x", kSaslInitial,
       "SCRAM-SHA-256|n,,x"},
      {"SASLInitialResponse length -1", fe, 'p', Cstr("SCRAM-SHA-256") + Int32(-1), kSaslInitial,
       "SCRAM-SHA-256|"},
      {"SASLInitialResponse length 0", fe, 'p', Cstr("SCRAM-SHA-256") + Int32(0), kSaslInitial,
       "SCRAM-SHA-256|"},

      // Malformations: one row per length, terminator and layout rule.
      {"Authentication empty", be, 'R', "", kAuth, "", kBad},
      {"Authentication short code", be, 'R', "\0\0\0"s, kAuth, "", kBad},
      {"AuthenticationOk with data", be, 'R', Int32(0) + "x", kAuth, "", kBad},
      {"AuthenticationMD5 short salt", be, 'R', Int32(5) + "abc", kAuth, "", kBad},
      {"AuthenticationMD5 long salt", be, 'R', Int32(5) + "abcde", kAuth, "", kBad},
      {"AuthenticationSASL unterminated list", be, 'R', Int32(10) + Cstr("SCRAM-SHA-256"),
       kSaslRequest, "", kBad},
      {"AuthenticationSASL no NUL at all", be, 'R', Int32(10) + "SCRAM", kSaslRequest, "", kBad},
      {"AuthenticationSASL trailing bytes", be, 'R', Int32(10) + Cstr("A") + '\0' + "x",
       kSaslRequest, "", kBad},
      {"BackendKeyData 7 bytes", be, 'K', Int32(1) + "abc", kKey, "", kBad},
      {"BackendKeyData 9 bytes", be, 'K', Int32(1) + Int32(2) + "x", kKey, "", kBad},
      {"ParameterStatus missing value", be, 'S', Cstr("name"), kParam, "", kBad},
      {"ParameterStatus value unterminated", be, 'S', Cstr("name") + "value", kParam, "", kBad},
      {"ParameterStatus trailing", be, 'S', Cstr("a") + Cstr("b") + "c", kParam, "", kBad},
      {"ReadyForQuery empty", be, 'Z', "", kRfq, "", kBad},
      {"ReadyForQuery 2 bytes", be, 'Z', "II", kRfq, "", kBad},
      {"ReadyForQuery bad status", be, 'Z', "X", kRfq, "", kBad},
      {"ErrorResponse empty body", be, 'E', "", kErr, "", kBad},
      {"ErrorResponse unterminated field", be, 'E', "SERROR", kErr, "", kBad},
      {"ErrorResponse missing final NUL", be, 'E', "SERROR\0"s, kErr, "", kBad},
      {"ErrorResponse trailing after final NUL", be, 'E', "SERROR\0\0x"s, kErr, "", kBad},
      {"Query unterminated", fe, 'Q', "SELECT 1", kQuery, "", kBad},
      {"Query trailing", fe, 'Q', Cstr("SELECT 1") + "x", kQuery, "", kBad},
      {"Query empty body", fe, 'Q', "", kQuery, "", kBad},
      {"Parse missing count", fe, 'P', Cstr("") + Cstr("SELECT 1"), kParse, "", kBad},
      {"Parse count beyond body", fe, 'P', Cstr("") + Cstr("SELECT 1") + Int16(2) + Int32(23),
       kParse, "", kBad},
      {"Parse trailing", fe, 'P', Cstr("") + Cstr("q") + Int16(0) + "x", kParse, "", kBad},
      {"Parse unterminated query", fe, 'P', Cstr("") + "SELECT", kParse, "", kBad},
      {"Bind truncated parameter", fe, 'B',
       Cstr("") + Cstr("") + Int16(0) + Int16(1) + Int32(5) + "abc", kBind, "", kBad},
      {"Bind negative parameter length", fe, 'B',
       Cstr("") + Cstr("") + Int16(0) + Int16(1) + Int32(-2) + Int16(0), kBind, "", kBad},
      {"Bind negative format count", fe, 'B', Cstr("") + Cstr("") + Int16(-1) + Int16(0) + Int16(0),
       kBind, "", kBad},
      {"Bind missing result formats", fe, 'B', Cstr("") + Cstr("") + Int16(0) + Int16(0), kBind, "",
       kBad},
      {"Bind trailing", fe, 'B', BindBody("", "") + "x", kBind, "", kBad},
      {"Bind unterminated statement", fe, 'B', Cstr("") + "s1", kBind, "", kBad},
      {"Close bad kind", fe, 'C', "X" + Cstr("s1"), kCloseDescribe, "", kBad},
      {"Close empty", fe, 'C', "", kCloseDescribe, "", kBad},
      {"Describe unterminated", fe, 'D', "Sname", kCloseDescribe, "", kBad},
      {"Describe trailing", fe, 'D', "S" + Cstr("n") + "x", kCloseDescribe, "", kBad},
      {"PasswordMessage unterminated", fe, 'p', "secret", kPassword, "", kBad},
      {"PasswordMessage trailing", fe, 'p', Cstr("secret") + "x", kPassword, "", kBad},
      {"SASLInitialResponse short data", fe, 'p', Cstr("SCRAM-SHA-256") + Int32(5) + "n,,x",
       kSaslInitial, "", kBad},
      {"SASLInitialResponse long data", fe, 'p', Cstr("SCRAM-SHA-256") + Int32(3) + "n,,x",
       kSaslInitial, "", kBad},
      {"SASLInitialResponse length -2", fe, 'p', Cstr("SCRAM-SHA-256") + Int32(-2), kSaslInitial,
       "", kBad},
      {"SASLInitialResponse -1 with data", fe, 'p', Cstr("SCRAM-SHA-256") + Int32(-1) + "x",
       kSaslInitial, "", kBad},
      {"SASLInitialResponse missing length", fe, 'p', Cstr("SCRAM-SHA-256") + "\0\0"s, kSaslInitial,
       "", kBad},
      {"SASLInitialResponse unterminated mechanism", fe, 'p', "SCRAM", kSaslInitial, "", kBad},
  };
}

TEST(MessagesTest, ParsersOnFramedFixtures) {
  for (const ParserCase& c : Cases()) {
    SCOPED_TRACE(c.name);
    // Direct parse of the body.
    absl::StatusOr<std::string> direct = c.render(c.body);
    ASSERT_EQ(direct.status().code(), c.code) << direct.status();
    if (c.code == kOk) {
      EXPECT_EQ(*direct, c.expected);
    }

    // Through the framer, fed whole, byte by byte and split at every offset: same result.
    const std::string wire = Msg(c.type, c.body) + Msg('Z', "I");
    for (const auto& chunks : AllSplits(wire)) {
      FeedResult fed = Feed(c.direction, Limits{}, chunks);
      ASSERT_EQ(fed.error, absl::StatusCode::kOk);
      ASSERT_EQ(fed.messages.size(), 2u);
      ASSERT_EQ(fed.messages[0].type, c.type);
      // Parse from an exactly sized copy so a read past the body would be caught by ASan.
      const std::string body = fed.messages[0].bytes.substr(5);
      absl::StatusOr<std::string> framed = c.render(body);
      ASSERT_EQ(framed.status().code(), c.code);
      if (c.code == kOk) {
        ASSERT_EQ(*framed, c.expected);
      }
    }
  }
}

TEST(MessagesTest, SaslMechanismsEmptyList) {
  absl::StatusOr<std::vector<std::string_view>> m = ParseSaslMechanisms("\0"s);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->empty());
  EXPECT_EQ(ParseSaslMechanisms("").status().code(), kBad);
}

// ---- Writers -------------------------------------------------------------------------------

struct WriterCase {
  const char* name;
  std::function<void(std::string&)> write;
  std::string expected;
};

std::vector<WriterCase> WriterCases() {
  return {
      {"ErrorResponse minimal",
       [](std::string& o) {
         AppendErrorResponse(o, {"FATAL", "08P01", "bad", "", ""});
       },
       Msg('E', "SFATAL\0VFATAL\0C08P01\0Mbad\0\0"s)},
      {"ErrorResponse with detail and hint",
       [](std::string& o) {
         AppendErrorResponse(o, {"ERROR", "25006", "ro", "d", "h"});
       },
       Msg('E', "SERROR\0VERROR\0C25006\0Mro\0Dd\0Hh\0\0"s)},
      {"ErrorResponse hint only",
       [](std::string& o) {
         AppendErrorResponse(o, {"ERROR", "XX000", "m", "", "h"});
       },
       Msg('E', "SERROR\0VERROR\0CXX000\0Mm\0Hh\0\0"s)},
      {"NoticeResponse",
       [](std::string& o) {
         AppendNoticeResponse(o, {"NOTICE", "00000", "hi", "", ""});
       },
       Msg('N', "SNOTICE\0VNOTICE\0C00000\0Mhi\0\0"s)},
      {"AuthenticationOk", [](std::string& o) { AppendAuthenticationOk(o); }, Msg('R', Int32(0))},
      {"AuthenticationCleartext", [](std::string& o) { AppendAuthenticationCleartext(o); },
       Msg('R', Int32(3))},
      {"AuthenticationMD5", [](std::string& o) { AppendAuthenticationMd5(o, "\1\2\3\4"); },
       Msg('R', Int32(5) + "\1\2\3\4")},
      {"AuthenticationSASL", [](std::string& o) { AppendAuthenticationSasl(o, {"SCRAM-SHA-256"}); },
       Msg('R', Int32(10) + Cstr("SCRAM-SHA-256") + '\0')},
      {"AuthenticationSASLContinue",
       [](std::string& o) { AppendAuthenticationSaslContinue(o, "r=a,s=b,i=1"); },
       Msg('R', Int32(11) + "r=a,s=b,i=1")},
      {"AuthenticationSASLFinal", [](std::string& o) { AppendAuthenticationSaslFinal(o, "v=x"); },
       Msg('R', Int32(12) + "v=x")},
      {"ParameterStatus", [](std::string& o) { AppendParameterStatus(o, "TimeZone", "UTC"); },
       Msg('S', Cstr("TimeZone") + Cstr("UTC"))},
      {"BackendKeyData",
       [](std::string& o) {
         AppendBackendKeyData(o, {7, -1});
       },
       Msg('K', Int32(7) + Int32(-1))},
      {"ReadyForQuery", [](std::string& o) { AppendReadyForQuery(o, 'T'); }, Msg('Z', "T")},
      {"NegotiateProtocolVersion",
       [](std::string& o) {
         AppendNegotiateProtocolVersion(o, 0, {"_pq_.a", "_pq_.b"});
       },
       Msg('v', Int32(0) + Int32(2) + Cstr("_pq_.a") + Cstr("_pq_.b"))},
      {"NegotiateProtocolVersion no options",
       [](std::string& o) { AppendNegotiateProtocolVersion(o, 0, {}); },
       Msg('v', Int32(0) + Int32(0))},
      {"CommandComplete", [](std::string& o) { AppendCommandComplete(o, "SELECT 1"); },
       Msg('C', Cstr("SELECT 1"))},
      {"EmptyQueryResponse", [](std::string& o) { AppendEmptyQueryResponse(o); }, Msg('I', "")},
      {"StartupMessage",
       [](std::string& o) {
         AppendStartupMessage(o, {{"user", "u"}, {"database", "d"}});
       },
       Int32(27) + Int32(196608) + Cstr("user") + Cstr("u") + Cstr("database") + Cstr("d") + '\0'},
      {"StartupMessage no parameters", [](std::string& o) { AppendStartupMessage(o, {}); },
       Int32(9) + Int32(196608) + '\0'},
      {"SSLRequest", [](std::string& o) { AppendSslRequest(o); }, Int32(8) + Int32(80877103)},
      {"CancelRequest",
       [](std::string& o) {
         AppendCancelRequest(o, {42, 0x12345678});
       },
       Int32(16) + Int32(80877102) + Int32(42) + Int32(0x12345678)},
      {"PasswordMessage", [](std::string& o) { AppendPasswordMessage(o, "pw"); },
       Msg('p', Cstr("pw"))},
      {"SASLInitialResponse",
       [](std::string& o) { AppendSaslInitialResponse(o, "SCRAM-SHA-256", "n,,n=,r=abc"); },
       Msg('p', Cstr("SCRAM-SHA-256") + Int32(11) + "n,,n=,r=abc")},
      {"SASLResponse", [](std::string& o) { AppendSaslResponse(o, "c=biws"); }, Msg('p', "c=biws")},
      {"Query", [](std::string& o) { AppendQuery(o, "SELECT 1"); }, Msg('Q', Cstr("SELECT 1"))},
      {"Sync", [](std::string& o) { AppendSync(o); }, Msg('S', "")},
      {"Terminate", [](std::string& o) { AppendTerminate(o); }, Msg('X', "")},
  };
}

TEST(MessagesTest, WritersProduceExactBytes) {
  for (const WriterCase& c : WriterCases()) {
    SCOPED_TRACE(c.name);
    std::string out = "prefix";  // writers append, never overwrite
    c.write(out);
    EXPECT_EQ(out, "prefix" + c.expected);
  }
}

TEST(MessagesTest, LongLengthIsBigEndian) {
  std::string out;
  AppendQuery(out, std::string(0x10203, 'a'));
  ASSERT_GE(out.size(), 5u);
  EXPECT_EQ(out.substr(0, 5), "Q"s + Int32(0x10203 + 5));
}

TEST(MessagesTest, WritersRoundTripThroughParsers) {
  std::string out;
  AppendErrorResponse(out, {"FATAL", "57P01", "shutdown", "detail", "hint"});
  absl::StatusOr<ErrorFields> e = ParseErrorFields(std::string_view(out).substr(5));
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->severity, "FATAL");
  EXPECT_EQ(e->code, "57P01");
  EXPECT_EQ(e->message, "shutdown");
  EXPECT_EQ(e->detail, "detail");
  EXPECT_EQ(e->hint, "hint");

  out.clear();
  AppendSaslInitialResponse(out, "SCRAM-SHA-256", "payload");
  absl::StatusOr<SaslInitialResponse> s = ParseSaslInitialResponse(std::string_view(out).substr(5));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->mechanism, "SCRAM-SHA-256");
  EXPECT_EQ(s->data, "payload");

  out.clear();
  AppendBackendKeyData(out, {-7, 99});
  absl::StatusOr<BackendKeyData> k = ParseBackendKeyData(std::string_view(out).substr(5));
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->process_id, -7);
  EXPECT_EQ(k->secret_key, 99);
}

}  // namespace
}  // namespace nerava::pg
