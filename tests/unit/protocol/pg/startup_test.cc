#include "nerava/protocol/pg/startup.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "pg_test_util.h"

namespace nerava::pg {
namespace {

using namespace std::string_literals;
using testing::Cat;
using testing::Cstr;
using testing::Int32;

using Kind = StartupPacket::Kind;

std::string Packet(std::string_view after_length) {
  return Int32(static_cast<int32_t>(after_length.size() + 4)) + std::string(after_length);
}

// Renders a parse result (or its status code) so that every prefix can be compared.
std::string Render(const absl::StatusOr<std::optional<ParsedStartup>>& r) {
  if (!r.ok()) return Cat("error ", absl::StatusCodeToString(r.status().code()));
  if (!r->has_value()) return "need more";
  const ParsedStartup& p = **r;
  std::string s = Cat("kind ", static_cast<int>(p.packet.kind), " v", p.packet.major, ".",
                      p.packet.minor, " consumed ", p.consumed);
  for (const auto& [name, value] : p.packet.parameters) s += Cat(" ", name, "=", value);
  if (p.packet.kind == Kind::kCancelRequest) {
    s += Cat(" key ", p.packet.cancel_key.process_id, "/", p.packet.cancel_key.secret_key);
  }
  return s;
}

struct StartupCase {
  const char* name;
  std::string bytes;
  std::string expected;  // Render() of the result once all bytes are there
  Limits limits = {};
};

Limits Small() {
  Limits l;
  l.max_startup_packet = 40;
  return l;
}

std::vector<StartupCase> Cases() {
  const std::string v3 = Int32(kProtocolV3);
  const std::string user_db = Cstr("user") + Cstr("alice") + Cstr("database") + Cstr("app");
  return {
      {"StartupMessage", Packet(v3 + user_db + '\0'),
       "kind 0 v3.0 consumed 33 user=alice database=app"},
      {"StartupMessage with trailing bytes after it",
       Packet(v3 + Cstr("user") + Cstr("a") + '\0') + "Q", "kind 0 v3.0 consumed 16 user=a"},
      {"StartupMessage 3.2 with _pq_ option",
       Packet(Int32(0x00030002) + Cstr("user") + Cstr("a") + Cstr("_pq_.x") + Cstr("1") + '\0'),
       "kind 0 v3.2 consumed 25 user=a _pq_.x=1"},
      {"StartupMessage empty value",
       Packet(v3 + Cstr("user") + Cstr("a") + Cstr("options") + Cstr("") + '\0'),
       "kind 0 v3.0 consumed 25 user=a options="},
      {"protocol 2.0 framed only", Packet(Int32(0x00020000) + "anything"),
       "kind 0 v2.0 consumed 16"},
      {"unknown 1234.5681 code framed only", Packet(Int32(80877105)),
       "kind 0 v1234.5681 consumed 8"},
      {"SSLRequest", Packet(Int32(kSslRequestCode)), "kind 1 v0.0 consumed 8"},
      {"SSLRequest followed by bytes (caller must refuse them)",
       Packet(Int32(kSslRequestCode)) + "\x16\x03", "kind 1 v0.0 consumed 8"},
      {"GSSENCRequest", Packet(Int32(kGssEncRequestCode)), "kind 2 v0.0 consumed 8"},
      {"CancelRequest", Packet(Int32(kCancelRequestCode) + Int32(4242) + Int32(-99)),
       "kind 3 v0.0 consumed 16 key 4242/-99"},
      {"exactly at the limit", Packet(v3 + Cstr("user") + Cstr(std::string(25, 'u')) + '\0'),
       "kind 0 v3.0 consumed 40 user=" + std::string(25, 'u'), Small()},

      // Negative rows.
      {"length 7", Int32(7) + "abcd", "error INVALID_ARGUMENT"},
      {"length 0", Int32(0), "error INVALID_ARGUMENT"},
      {"negative length", Int32(-8), "error RESOURCE_EXHAUSTED"},
      {"default limit 10000", Int32(10001), "error RESOURCE_EXHAUSTED"},
      {"above configured limit", Packet(v3 + Cstr("user") + Cstr(std::string(26, 'u')) + '\0'),
       "error RESOURCE_EXHAUSTED", Small()},
      {"no user", Packet(v3 + Cstr("database") + Cstr("app") + '\0'), "error INVALID_ARGUMENT"},
      {"empty user", Packet(v3 + Cstr("user") + Cstr("") + '\0'), "error INVALID_ARGUMENT"},
      {"no parameters at all", Packet(v3 + '\0'), "error INVALID_ARGUMENT"},
      {"missing final NUL", Packet(v3 + user_db), "error INVALID_ARGUMENT"},
      {"no body after version", Packet(v3), "error INVALID_ARGUMENT"},
      {"name without value", Packet(v3 + Cstr("user") + Cstr("a") + Cstr("database") + '\0'),
       "error INVALID_ARGUMENT"},
      {"value unterminated", Packet(v3 + Cstr("user") + "alice"), "error INVALID_ARGUMENT"},
      {"bytes after final NUL", Packet(v3 + Cstr("user") + Cstr("a") + '\0' + "x"),
       "error INVALID_ARGUMENT"},
      {"SSLRequest too long", Packet(Int32(kSslRequestCode) + "x"), "error INVALID_ARGUMENT"},
      {"GSSENCRequest too long", Packet(Int32(kGssEncRequestCode) + Int32(0)),
       "error INVALID_ARGUMENT"},
      {"CancelRequest too short", Packet(Int32(kCancelRequestCode) + Int32(1)),
       "error INVALID_ARGUMENT"},
      {"CancelRequest too long", Packet(Int32(kCancelRequestCode) + Int32(1) + Int32(2) + "x"),
       "error INVALID_ARGUMENT"},
  };
}

TEST(StartupTest, FixturesAtEveryPrefix) {
  for (const StartupCase& c : Cases()) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(Render(ParseStartupPacket(c.bytes, c.limits)), c.expected);
    // Shorter prefixes need more, except that a bad declared length is refused as soon as the
    // 4 length bytes are there.
    uint32_t declared = 0;
    for (size_t i = 0; i < 4 && i < c.bytes.size(); ++i) {
      declared = (declared << 8) | static_cast<uint8_t>(c.bytes[i]);
    }
    const bool length_error = declared < 8 || declared > c.limits.max_startup_packet;
    for (size_t n = 0; n < c.bytes.size(); ++n) {
      const std::string got =
          Render(ParseStartupPacket(std::string_view(c.bytes).substr(0, n), c.limits));
      if (n < 4) {
        EXPECT_EQ(got, "need more") << n;
      } else if (length_error || n >= declared) {
        EXPECT_EQ(got, c.expected) << n;
      } else {
        EXPECT_EQ(got, "need more") << n;
      }
    }
  }
}

TEST(StartupTest, ParametersAreCopied) {
  std::string bytes = Packet(Int32(kProtocolV3) + Cstr("user") + Cstr("bob") + '\0');
  absl::StatusOr<std::optional<ParsedStartup>> r = ParseStartupPacket(bytes, Limits{});
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(r->has_value());
  bytes.assign(bytes.size(), 'X');  // the read buffer is reused
  EXPECT_EQ((*r)->packet.Get("user"), "bob");
  EXPECT_EQ((*r)->packet.Get("database"), "");
}

TEST(StartupTest, LaterParameterWins) {
  const std::string bytes =
      Packet(Int32(kProtocolV3) + Cstr("user") + Cstr("a") + Cstr("user") + Cstr("b") + '\0');
  absl::StatusOr<std::optional<ParsedStartup>> r = ParseStartupPacket(bytes, Limits{});
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->packet.Get("user"), "b");
  EXPECT_EQ((*r)->packet.parameters.size(), 2u);
}

TEST(StartupTest, WriterOutputParses) {
  std::string out;
  AppendStartupMessage(out, {{"user", "nerava"}, {"database", "db"}, {"application_name", "x"}});
  absl::StatusOr<std::optional<ParsedStartup>> r = ParseStartupPacket(out, Limits{});
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->consumed, out.size());
  EXPECT_EQ((*r)->packet.major, 3);
  EXPECT_EQ((*r)->packet.minor, 0);
  EXPECT_EQ((*r)->packet.Get("application_name"), "x");

  out.clear();
  AppendCancelRequest(out, {5, 6});
  r = ParseStartupPacket(out, Limits{});
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->packet.kind, Kind::kCancelRequest);
  EXPECT_EQ((*r)->packet.cancel_key.process_id, 5);
  EXPECT_EQ((*r)->packet.cancel_key.secret_key, 6);

  out.clear();
  AppendSslRequest(out);
  r = ParseStartupPacket(out, Limits{});
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->packet.kind, Kind::kSslRequest);
}

TEST(StartupTest, NoUserMessage) {
  const std::string bytes = Packet(Int32(kProtocolV3) + Cstr("database") + Cstr("d") + '\0');
  absl::StatusOr<std::optional<ParsedStartup>> r = ParseStartupPacket(bytes, Limits{});
  EXPECT_EQ(r.status().message(), "no PostgreSQL user name specified in startup packet");
}

}  // namespace
}  // namespace nerava::pg
