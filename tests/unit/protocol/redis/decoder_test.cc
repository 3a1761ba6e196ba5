#include "nerava/protocol/redis/decoder.h"

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nerava::redis {
namespace {

using ::testing::ElementsAre;

constexpr size_t kCaptureArgs = 3;
constexpr size_t kCaptureBytes = 8;

// What one completed top-level value looked like to the caller.
struct Value {
  size_t end = 0;  // offset in the whole input just past the value
  Type type = Type::kNull;
  int64_t arg_count = 0;
  std::vector<std::string> args;
  bool truncated = false;
  std::string scalar;

  bool operator==(const Value&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Value& v) {
  os << "{end=" << v.end << " type=" << static_cast<int>(v.type) << " count=" << v.arg_count
     << " args=[";
  for (const std::string& a : v.args) os << '"' << a << "\" ";
  return os << "] truncated=" << v.truncated << " scalar=\"" << v.scalar << "\"}";
}

struct FeedResult {
  std::vector<Value> values;
  absl::Status status;
};

// Feeds `in` in the given chunks, calling Feed() again on the rest after each completed value,
// the way a session does. Also checks the Progress contract on every call.
FeedResult FeedChunks(Decoder& d, std::string_view in, const std::vector<size_t>& cuts) {
  FeedResult run;
  size_t chunk_start = 0;
  std::vector<size_t> bounds = cuts;
  bounds.push_back(in.size());
  for (size_t bound : bounds) {
    std::string_view chunk = in.substr(chunk_start, bound - chunk_start);
    size_t base = chunk_start;
    chunk_start = bound;
    while (!chunk.empty()) {
      absl::StatusOr<Progress> p = d.Feed(chunk);
      if (!p.ok()) {
        run.status = p.status();
        return run;
      }
      EXPECT_LE(p->consumed, chunk.size());
      if (!p->complete) {
        EXPECT_EQ(p->consumed, chunk.size()) << "an incomplete value must take all the input";
        break;
      }
      EXPECT_GT(p->consumed, 0u);
      base += p->consumed;
      chunk.remove_prefix(p->consumed);
      run.values.push_back(
          Value{base, p->type, d.arg_count(), d.args(), d.args_truncated(), d.scalar()});
    }
  }
  return run;
}

FeedResult FeedWhole(std::string_view in, Limits limits = {}) {
  Decoder d(limits, kCaptureArgs, kCaptureBytes);
  return FeedChunks(d, in, {});
}

// Checks that every way of cutting `in` gives `want` (whole, byte by byte, split at each offset).
template <typename Check>
void ForEverySplit(std::string_view in, Limits limits, Check check) {
  {
    SCOPED_TRACE("whole");
    check(FeedWhole(in, limits));
  }
  {
    SCOPED_TRACE("one byte at a time");
    Decoder d(limits, kCaptureArgs, kCaptureBytes);
    std::vector<size_t> cuts;
    for (size_t i = 1; i < in.size(); ++i) cuts.push_back(i);
    check(FeedChunks(d, in, cuts));
  }
  for (size_t i = 1; i < in.size(); ++i) {
    SCOPED_TRACE("split at " + std::to_string(i));
    Decoder d(limits, kCaptureArgs, kCaptureBytes);
    check(FeedChunks(d, in, {i}));
  }
}

struct Fixture {
  std::string name;
  std::string wire;
  Type type;
  int64_t arg_count = 0;
  std::vector<std::string> args = {};
  std::string scalar = {};
  bool truncated = false;
};

// One value per line. Captures: 3 args of at most 8 bytes.
const std::vector<Fixture>& Fixtures() {
  static const auto* const kFixtures = new std::vector<Fixture>{
      // Requests.
      {"get", "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n", Type::kArray, 2, {"GET", "key"}},
      {"set",
       "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n",
       Type::kArray,
       3,
       {"SET", "k", "value"}},
      {"four_args",
       "*4\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n",
       Type::kArray,
       4,
       {"MSET", "a", "1"}},
      {"truncated_arg",
       "*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\n",
       Type::kArray,
       2,
       {"GET", "01234567"},
       "",
       true},
      {"empty_bulk_arg", "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", Type::kArray, 2, {"ECHO", ""}},
      {"binary_arg",
       std::string("*2\r\n$4\r\nECHO\r\n$4\r\n\r\n\0x\r\n", 24),
       Type::kArray,
       2,
       {"ECHO", std::string("\r\n\0x", 4)}},
      {"simple_string_args", "*2\r\n+PING\r\n+x\r\n", Type::kArray, 2, {"PING", "x"}},
      {"int_arg_not_captured", "*2\r\n:1\r\n$1\r\nx\r\n", Type::kArray, 2, {"x"}},
      {"inline_ping", "PING\r\n", Type::kInline, 1, {"PING"}},
      {"inline_lf_only", "PING\n", Type::kInline, 1, {"PING"}},
      {"inline_words", "SET  k\tv extra\r\n", Type::kInline, 4, {"SET", "k", "v"}},
      {"inline_double_quotes",
       "SET \"a b\" \"x\\n\\x41\\\"\"\r\n",
       Type::kInline,
       3,
       {"SET", "a b", "x\nA\""}},
      {"inline_single_quotes",
       "SET 'it\\'s' 'a\\nb'\r\n",
       Type::kInline,
       3,
       {"SET", "it's", "a\\nb"}},
      {"inline_quote_mid_word", "GET ab\"c d\"\r\n", Type::kInline, 2, {"GET", "abc d"}},
      {"inline_empty_quotes", "ECHO \"\"\r\n", Type::kInline, 2, {"ECHO", ""}},
      {"inline_long_word", "GET abcdefghijk\r\n", Type::kInline, 2, {"GET", "abcdefgh"}, "", true},
      {"inline_empty", "\r\n", Type::kInline, 0},
      {"inline_blank", "   \n", Type::kInline, 0},
      // RESP2 replies.
      {"ok", "+OK\r\n", Type::kSimpleString, 0, {}, "OK"},
      {"empty_simple", "+\r\n", Type::kSimpleString, 0, {}, ""},
      {"error", "-ERR unknown command\r\n", Type::kError, 0, {}, "ERR unknown command"},
      {"integer", ":42\r\n", Type::kInteger, 0, {}, "42"},
      {"negative_integer", ":-7\r\n", Type::kInteger, 0, {}, "-7"},
      {"bulk", "$5\r\nhello\r\n", Type::kBulkString},
      {"empty_bulk", "$0\r\n\r\n", Type::kBulkString},
      {"null_bulk", "$-1\r\n", Type::kNull},
      {"null_array", "*-1\r\n", Type::kNull},
      {"empty_array", "*0\r\n", Type::kArray},
      {"nested_array", "*3\r\n*2\r\n:1\r\n$1\r\na\r\n*0\r\n*1\r\n*1\r\n$-1\r\n", Type::kArray, 3},
      {"array_with_null", "*3\r\n$1\r\na\r\n$-1\r\n$1\r\nb\r\n", Type::kArray, 3, {"a", "b"}},
      // RESP3.
      {"null", "_\r\n", Type::kNull},
      {"double", ",3.14\r\n", Type::kDouble, 0, {}, "3.14"},
      {"double_exp", ",-1.5e-3\r\n", Type::kDouble, 0, {}, "-1.5e-3"},
      {"double_inf", ",-inf\r\n", Type::kDouble, 0, {}, "-inf"},
      {"boolean", "#t\r\n", Type::kBoolean, 0, {}, "t"},
      {"big_number",
       "(3492890328409238509324850943850943825024385\r\n",
       Type::kBigNumber,
       0,
       {},
       "3492890328409238509324850943850943825024385"},
      {"blob_error", "!21\r\nSYNTAX invalid syntax\r\n", Type::kBlobError},
      {"verbatim", "=15\r\ntxt:Some string\r\n", Type::kVerbatim},
      {"map", "%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n", Type::kMap, 4, {"first", "second"}},
      {"empty_map", "%0\r\n", Type::kMap},
      {"set_type", "~3\r\n+a\r\n+b\r\n+c\r\n", Type::kSet, 3, {"a", "b", "c"}},
      {"push",
       ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n",
       Type::kPush,
       3,
       {"message", "ch", "hello"}},
      {"attribute_before_array",
       "|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.19\r\n$1\r\nb\r\n,0.05\r\n"
       "*2\r\n:2039123\r\n:9543892\r\n",
       Type::kArray, 2},
      {"attribute_before_scalar", "|1\r\n+a\r\n+b\r\n+OK\r\n", Type::kSimpleString, 0, {}, "OK"},
      {"empty_attribute", "|0\r\n:1\r\n", Type::kInteger, 0, {}, "1"},
      {"attribute_in_array",
       "*2\r\n|1\r\n+ttl\r\n:3\r\n$3\r\nGET\r\n$1\r\nk\r\n",
       Type::kArray,
       2,
       {"GET", "k"}},
      {"attribute_last_in_array", "*1\r\n|1\r\n+a\r\n+b\r\n:5\r\n", Type::kArray, 1},
      {"deep_mixed", "*4\r\n%1\r\n~1\r\n>1\r\n#f\r\n=5\r\nmkd:x\r\n(1\r\n!1\r\ne\r\n_\r\n",
       Type::kArray, 4},
  };
  return *kFixtures;
}

Value Expected(const Fixture& f, size_t end) {
  return Value{end, f.type, f.arg_count, f.args, f.truncated, f.scalar};
}

class FixtureTest : public ::testing::TestWithParam<Fixture> {};

TEST_P(FixtureTest, SameResultForEverySplit) {
  const Fixture& f = GetParam();
  const Value want = Expected(f, f.wire.size());
  ForEverySplit(f.wire, Limits{}, [&](const FeedResult& run) {
    EXPECT_TRUE(run.status.ok()) << run.status;
    EXPECT_THAT(run.values, ElementsAre(want));
  });
}

INSTANTIATE_TEST_SUITE_P(Redis, FixtureTest, ::testing::ValuesIn(Fixtures()),
                         [](const auto& param_info) { return param_info.param.name; });

// Every fixture back to back in one buffer: each value ends exactly where the next begins.
TEST(DecoderTest, AllFixturesBackToBack) {
  std::string wire;
  std::vector<Value> want;
  for (const Fixture& f : Fixtures()) {
    wire += f.wire;
    want.push_back(Expected(f, wire.size()));
  }
  ForEverySplit(wire, Limits{}, [&](const FeedResult& run) {
    EXPECT_TRUE(run.status.ok()) << run.status;
    EXPECT_EQ(run.values, want);
  });
}

TEST(DecoderTest, PipelineInOneBuffer) {
  const std::string wire =
      "*1\r\n$4\r\nPING\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n+OK\r\n$-1\r\n";
  FeedResult run = FeedWhole(wire);
  ASSERT_TRUE(run.status.ok()) << run.status;
  ASSERT_EQ(run.values.size(), 5u);
  EXPECT_EQ(run.values[0].end, 14u);
  EXPECT_EQ(run.values[1].end, 20u);
  EXPECT_EQ(run.values[1].type, Type::kInline);
  EXPECT_EQ(run.values[2].args, (std::vector<std::string>{"GET", "k"}));
  EXPECT_EQ(run.values[3].scalar, "OK");
  EXPECT_EQ(run.values[4].type, Type::kNull);
  EXPECT_EQ(run.values[4].end, wire.size());
}

TEST(DecoderTest, CapturesResetWhenNextValueStarts) {
  Decoder d({}, 3, 16);
  ASSERT_TRUE(d.Feed("+OK\r\n").ok());
  EXPECT_EQ(d.scalar(), "OK");
  // An empty Feed() does not start a value.
  ASSERT_TRUE(d.Feed("").ok());
  EXPECT_EQ(d.scalar(), "OK");
  absl::StatusOr<Progress> p = d.Feed("*2\r\n$3\r\nGE");
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->complete);
  EXPECT_EQ(p->type, Type::kArray);
  EXPECT_EQ(d.scalar(), "");
  EXPECT_EQ(d.arg_count(), 2);
  EXPECT_THAT(d.args(), ElementsAre("GE"));
}

TEST(DecoderTest, RepliesCaptureNothing) {
  Decoder d({}, 0, 0);
  absl::StatusOr<Progress> p = d.Feed("*2\r\n$3\r\nGET\r\n+x\r\n");
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->complete);
  EXPECT_TRUE(d.args().empty());
  EXPECT_FALSE(d.args_truncated());
  EXPECT_EQ(d.arg_count(), 2);
}

TEST(DecoderTest, ErrorIsSticky) {
  Decoder d;
  EXPECT_EQ(d.Feed("$x\r\n").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(d.Feed("+OK\r\n").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DecoderTest, HugeBulkStreamsWithoutBuffering) {
  constexpr int64_t kSize = 100ll << 20;
  Decoder d({}, 3, 1024);
  const std::string header = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$" + std::to_string(kSize) + "\r\n";
  absl::StatusOr<Progress> p = d.Feed(header);
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->complete);
  EXPECT_EQ(p->consumed, header.size());
  const std::string chunk(64 << 10, 'v');
  for (int64_t sent = 0; sent < kSize; sent += static_cast<int64_t>(chunk.size())) {
    p = d.Feed(chunk);
    ASSERT_TRUE(p.ok());
    ASSERT_FALSE(p->complete);
    ASSERT_EQ(p->consumed, chunk.size());
  }
  p = d.Feed("\r\n+OK\r\n");
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->complete);
  EXPECT_EQ(p->consumed, 2u);
  ASSERT_EQ(d.args().size(), 3u);
  EXPECT_EQ(d.args()[2], std::string(1024, 'v'));
  EXPECT_LE(d.args()[2].capacity(), 2048u);  // never grew with the body
  EXPECT_TRUE(d.args_truncated());
}

struct BadFixture {
  std::string name;
  std::string wire;
  absl::StatusCode code;
  Limits limits = {};
};

Limits With(void (*set)(Limits&)) {
  Limits l;
  set(l);
  return l;
}

const std::vector<BadFixture>& BadFixtures() {
  using absl::StatusCode;
  static const auto* const kBad = new std::vector<BadFixture>{
      // Limits.
      {"bulk_too_long", "$11\r\nhello world\r\n", StatusCode::kResourceExhausted,
       With([](Limits& l) { l.max_bulk = 10; })},
      {"bulk_length_overflows", "$99999999999999999999999\r\n", StatusCode::kResourceExhausted},
      {"blob_error_too_long", "!11\r\nhello world\r\n", StatusCode::kResourceExhausted,
       With([](Limits& l) { l.max_bulk = 10; })},
      {"verbatim_too_long", "=15\r\ntxt:Some string\r\n", StatusCode::kResourceExhausted,
       With([](Limits& l) { l.max_bulk = 14; })},
      {"nested_bulk_too_long", "*1\r\n$11\r\nhello world\r\n", StatusCode::kResourceExhausted,
       With([](Limits& l) { l.max_bulk = 10; })},
      {"too_many_elements", "*4\r\n", StatusCode::kResourceExhausted,
       With([](Limits& l) { l.max_elements = 3; })},
      {"set_too_many", "~4\r\n", StatusCode::kResourceExhausted,
       With([](Limits& l) { l.max_elements = 3; })},
      {"push_too_many", ">4\r\n", StatusCode::kResourceExhausted,
       With([](Limits& l) { l.max_elements = 3; })},
      {"map_counts_two_per_entry", "%2\r\n", StatusCode::kResourceExhausted,
       With([](Limits& l) { l.max_elements = 3; })},
      {"attribute_counts_two_per_entry", "|2\r\n", StatusCode::kResourceExhausted,
       With([](Limits& l) { l.max_elements = 3; })},
      {"count_overflows", "*99999999999999999999999\r\n", StatusCode::kResourceExhausted},
      {"too_deep", "*1\r\n*1\r\n*1\r\n:1\r\n", StatusCode::kResourceExhausted,
       With([](Limits& l) { l.max_depth = 2; })},
      {"too_deep_empty", "*1\r\n*1\r\n*0\r\n", StatusCode::kResourceExhausted,
       With([](Limits& l) { l.max_depth = 2; })},
      {"too_deep_attribute", "*1\r\n|1\r\n+a\r\n+b\r\n:1\r\n", StatusCode::kResourceExhausted,
       With([](Limits& l) { l.max_depth = 1; })},
      {"line_too_long", "+123456789\r\n", StatusCode::kResourceExhausted,
       With([](Limits& l) { l.max_line = 8; })},
      {"line_one_over_limit", "+1234567890\r\n", StatusCode::kResourceExhausted,
       With([](Limits& l) { l.max_line = 9; })},
      {"inline_one_over_limit", "GET 12345\r\n", StatusCode::kResourceExhausted,
       With([](Limits& l) { l.max_inline = 8; })},
      {"line_too_long_unterminated", "-123456789abcdef", StatusCode::kResourceExhausted,
       With([](Limits& l) { l.max_line = 8; })},
      {"header_too_long", "$000000000005\r\nhello\r\n", StatusCode::kResourceExhausted,
       With([](Limits& l) { l.max_line = 8; })},
      {"inline_too_long", "GET 123456789\r\n", StatusCode::kResourceExhausted,
       With([](Limits& l) { l.max_inline = 8; })},
      {"inline_too_long_unterminated", "GET 1234567890abcdef", StatusCode::kResourceExhausted,
       With([](Limits& l) { l.max_inline = 8; })},
      // Malformed.
      {"bulk_negative", "$-2\r\n", StatusCode::kInvalidArgument},
      {"bulk_not_digits", "$1x\r\nab\r\n", StatusCode::kInvalidArgument},
      {"bulk_empty_length", "$\r\n", StatusCode::kInvalidArgument},
      {"bulk_plus_sign", "$+1\r\na\r\n", StatusCode::kInvalidArgument},
      {"bulk_missing_crlf", "$3\r\nabcd\r\n", StatusCode::kInvalidArgument},
      {"bulk_missing_lf", "$3\r\nabc\rx", StatusCode::kInvalidArgument},
      {"verbatim_missing_crlf", "=3\r\ntxtX\r\n", StatusCode::kInvalidArgument},
      {"array_negative", "*-2\r\n", StatusCode::kInvalidArgument},
      {"array_not_digits", "*a\r\n", StatusCode::kInvalidArgument},
      {"map_negative", "%-5\r\n", StatusCode::kInvalidArgument},
      {"attribute_null", "|-1\r\n", StatusCode::kInvalidArgument},
      {"header_bare_lf", "*1\n$1\r\na\r\n", StatusCode::kInvalidArgument},
      {"simple_bare_lf", "+OK\n", StatusCode::kInvalidArgument},
      {"unknown_type_in_array", "*2\r\n$1\r\na\r\n@x\r\n", StatusCode::kInvalidArgument},
      {"inline_inside_array", "*1\r\nGET\r\n", StatusCode::kInvalidArgument},
      {"unknown_type_after_attribute", "|0\r\nGET\r\n", StatusCode::kInvalidArgument},
      {"integer_not_digits", ":12a\r\n", StatusCode::kInvalidArgument},
      {"integer_empty", ":\r\n", StatusCode::kInvalidArgument},
      {"big_number_not_digits", "(12.5\r\n", StatusCode::kInvalidArgument},
      {"double_garbage", ",abc\r\n", StatusCode::kInvalidArgument},
      {"boolean_garbage", "#x\r\n", StatusCode::kInvalidArgument},
      {"null_with_payload", "_x\r\n", StatusCode::kInvalidArgument},
      {"inline_unbalanced_double", "SET \"abc\r\n", StatusCode::kInvalidArgument},
      {"inline_unbalanced_single", "SET 'abc\r\n", StatusCode::kInvalidArgument},
      {"inline_text_after_quote", "SET \"a\"b\r\n", StatusCode::kInvalidArgument},
      {"inline_trailing_backslash", "SET \"a\\\r\n", StatusCode::kInvalidArgument},
      {"error_after_good_value", "+OK\r\n$-3\r\n", StatusCode::kInvalidArgument},
  };
  return *kBad;
}

class BadFixtureTest : public ::testing::TestWithParam<BadFixture> {};

TEST_P(BadFixtureTest, SameErrorForEverySplit) {
  const BadFixture& f = GetParam();
  ForEverySplit(f.wire, f.limits, [&](const FeedResult& run) {
    EXPECT_EQ(run.status.code(), f.code) << run.status;
    EXPECT_FALSE(run.status.message().empty());
    // The message follows "Protocol error: " in a RESP error line.
    EXPECT_EQ(run.status.message().find_first_of("\r\n"), std::string_view::npos);
  });
}

INSTANTIATE_TEST_SUITE_P(Redis, BadFixtureTest, ::testing::ValuesIn(BadFixtures()),
                         [](const auto& param_info) { return param_info.param.name; });

TEST(DecoderTest, LimitsAreInclusive) {
  Limits l;
  l.max_bulk = 5;
  l.max_elements = 4;
  l.max_depth = 2;
  l.max_line = 5;
  l.max_inline = 8;
  for (const std::string wire : {"$5\r\nhello\r\n", "%2\r\n:1\r\n:2\r\n:3\r\n:4\r\n",
                                 "*1\r\n*1\r\n:1\r\n", "+12345\r\n", "GET 1234\r\n"}) {
    ForEverySplit(wire, l, [&](const FeedResult& run) {
      EXPECT_TRUE(run.status.ok()) << wire << ": " << run.status;
      EXPECT_EQ(run.values.size(), 1u) << wire;
    });
  }
}

TEST(DecoderTest, MessagesMatchRedis) {
  EXPECT_EQ(FeedWhole("$-5\r\n").status.message(), "invalid bulk length");
  EXPECT_EQ(FeedWhole("*x\r\n").status.message(), "invalid multibulk length");
  EXPECT_EQ(FeedWhole("$1\r\nab").status.message(), "expected '\\r\\n' after bulk");
  EXPECT_EQ(FeedWhole("GET \"k\r\n").status.message(), "unbalanced quotes in request");
}

}  // namespace
}  // namespace nerava::redis
