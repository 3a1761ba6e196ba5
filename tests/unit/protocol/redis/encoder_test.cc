#include "nerava/protocol/redis/encoder.h"

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nerava/protocol/redis/decoder.h"

namespace nerava::redis {
namespace {

TEST(EncoderTest, ExactBytes) {
  struct Case {
    std::string got;
    std::string want;
  };
  auto with = [](auto append) {
    std::string out = "x";  // appends, never overwrites
    append(out);
    return out;
  };
  const std::vector<Case> cases = {
      {with([](std::string& o) { AppendSimpleString(o, "OK"); }), "x+OK\r\n"},
      {with([](std::string& o) { AppendSimpleString(o, ""); }), "x+\r\n"},
      {with([](std::string& o) { AppendError(o, "ERR Protocol error: invalid bulk length"); }),
       "x-ERR Protocol error: invalid bulk length\r\n"},
      // CR/LF in an error text must not break framing.
      {with([](std::string& o) { AppendError(o, "ERR a\r\nb"); }), "x-ERR a  b\r\n"},
      {with([](std::string& o) { AppendInteger(o, 0); }), "x:0\r\n"},
      {with([](std::string& o) { AppendInteger(o, -42); }), "x:-42\r\n"},
      {with([](std::string& o) { AppendInteger(o, INT64_MIN); }), "x:-9223372036854775808\r\n"},
      {with([](std::string& o) { AppendInteger(o, INT64_MAX); }), "x:9223372036854775807\r\n"},
      {with([](std::string& o) { AppendBulkString(o, "hello"); }), "x$5\r\nhello\r\n"},
      {with([](std::string& o) { AppendBulkString(o, ""); }), "x$0\r\n\r\n"},
      {with([](std::string& o) { AppendBulkString(o, "a\r\nb"); }), "x$4\r\na\r\nb\r\n"},
      {with([](std::string& o) { AppendNullBulk(o, 2); }), "x$-1\r\n"},
      {with([](std::string& o) { AppendNullBulk(o, 3); }), "x_\r\n"},
      {with([](std::string& o) { AppendArrayHeader(o, 0); }), "x*0\r\n"},
      {with([](std::string& o) { AppendArrayHeader(o, 12); }), "x*12\r\n"},
      {with([](std::string& o) {
         AppendCommand(o, {"SELECT", "3"});
       }),
       "x*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n"},
      {with([](std::string& o) { AppendCommand(o, {}); }), "x*0\r\n"},
  };
  for (const Case& c : cases) EXPECT_EQ(c.got, c.want);
}

TEST(EncoderTest, CommandRoundTripsThroughDecoder) {
  std::string out;
  AppendCommand(out, {"HELLO", "3", "AUTH", "user", "pa ss"});
  Decoder d({}, 5, 64);
  absl::StatusOr<Progress> p = d.Feed(out);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->complete);
  EXPECT_EQ(p->consumed, out.size());
  EXPECT_EQ(p->type, Type::kArray);
  EXPECT_EQ(d.arg_count(), 5);
  EXPECT_EQ(d.args(), (std::vector<std::string>{"HELLO", "3", "AUTH", "user", "pa ss"}));
}

}  // namespace
}  // namespace nerava::redis
