#include "nerava/protocol/pg/framer.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "pg_test_util.h"

namespace nerava::pg {
namespace {

using namespace std::string_literals;
using namespace std::string_view_literals;
using testing::AllSplits;
using testing::Cat;
using testing::Cstr;
using testing::Feed;
using testing::FeedResult;
using testing::Framed;
using testing::Int16;
using testing::Int32;
using testing::Msg;
using testing::RawHeader;

struct FramerCase {
  const char* name;
  Direction direction;
  std::string bytes;
  std::vector<Framed> expected;  // messages handed out, in order
  absl::StatusCode error = absl::StatusCode::kOk;
  Limits limits = {};
};

Limits SmallLimits() {
  Limits l;
  l.max_message = 64;
  l.max_streamed_message = 256;
  return l;
}

std::vector<FramerCase> Cases() {
  const std::string query = Msg('Q', Cstr("SELECT 1"));
  const std::string rfq = Msg('Z', "I");
  const std::string data_row = Msg('D', Int16(1) + Int32(3) + "abc");
  const std::string copy_data = Msg('d', std::string(40, 'x'));
  const std::string big_row = Msg('D', Int16(1) + Int32(194) + std::string(194, 'r'));  // 205 bytes
  const std::string sync = Msg('S', "");
  const std::string describe = Msg('D', "S" + Cstr("stmt"));
  std::vector<FramerCase> cases = {
      // One row per message type the proxy meets.
      {"Query", Direction::kFrontend, query, {{'Q', query}}},
      {"Parse",
       Direction::kFrontend,
       Msg('P', Cstr("s1") + Cstr("SELECT $1") + Int16(1) + Int32(23)),
       {{'P', Msg('P', Cstr("s1") + Cstr("SELECT $1") + Int16(1) + Int32(23))}}},
      {"Sync (empty body)", Direction::kFrontend, sync, {{'S', sync}}},
      {"Terminate", Direction::kFrontend, Msg('X', ""), {{'X', Msg('X', "")}}},
      {"Describe upstream is buffered, not streamed",
       Direction::kFrontend,
       describe,
       {{'D', describe}}},
      {"CopyData upstream", Direction::kFrontend, copy_data, {{'d', copy_data}}},
      {"CopyDone", Direction::kFrontend, Msg('c', ""), {{'c', Msg('c', "")}}},
      {"ReadyForQuery", Direction::kBackend, rfq, {{'Z', rfq}}},
      {"ErrorResponse",
       Direction::kBackend,
       Msg('E', "SERROR\0C42P01\0Mnope\0\0"s),
       {{'E', Msg('E', "SERROR\0C42P01\0Mnope\0\0"s)}}},
      {"DataRow downstream", Direction::kBackend, data_row, {{'D', data_row}}},
      {"CopyData downstream", Direction::kBackend, copy_data, {{'d', copy_data}}},
      {"empty DataRow-typed message (length 4)",
       Direction::kBackend,
       Msg('D', ""),
       {{'D', Msg('D', "")}}},
      {"AuthenticationOk", Direction::kBackend, Msg('R', Int32(0)), {{'R', Msg('R', Int32(0))}}},
      {"a response sequence",
       Direction::kBackend,
       Msg('T', Int16(0)) + data_row + data_row + Msg('C', Cstr("SELECT 2")) + rfq,
       {{'T', Msg('T', Int16(0))},
        {'D', data_row},
        {'D', data_row},
        {'C', Msg('C', Cstr("SELECT 2"))},
        {'Z', rfq}}},
      {"streamed between max_message and max_streamed_message",
       Direction::kBackend,
       big_row + rfq,
       {{'D', big_row}, {'Z', rfq}},
       absl::StatusCode::kOk,
       SmallLimits()},
      {"whole message exactly at max_message",
       Direction::kFrontend,
       Msg('Q', std::string(59, 'a') + '\0'),
       {{'Q', Msg('Q', std::string(59, 'a') + '\0')}},
       absl::StatusCode::kOk,
       SmallLimits()},
      // Negative rows: the error shows up after the messages before it were handed out.
      {"length 3",
       Direction::kFrontend,
       query + RawHeader('Q', 3),
       {{'Q', query}},
       absl::StatusCode::kInvalidArgument},
      {"length 0 streamed type",
       Direction::kBackend,
       RawHeader('D', 0),
       {},
       absl::StatusCode::kInvalidArgument},
      {"length 0xffffffff",
       Direction::kBackend,
       RawHeader('Z', 0xffffffffu),
       {},
       absl::StatusCode::kResourceExhausted},
      {"whole message above max_message (header only)",
       Direction::kFrontend,
       RawHeader('Q', 65),
       {},
       absl::StatusCode::kResourceExhausted,
       SmallLimits()},
      {"Describe upstream above max_message",
       Direction::kFrontend,
       RawHeader('D', 65),
       {},
       absl::StatusCode::kResourceExhausted,
       SmallLimits()},
      {"DataRow above max_streamed_message",
       Direction::kBackend,
       rfq + RawHeader('D', 257),
       {{'Z', rfq}},
       absl::StatusCode::kResourceExhausted,
       SmallLimits()},
      {"CopyData upstream above max_streamed_message",
       Direction::kFrontend,
       RawHeader('d', 257),
       {},
       absl::StatusCode::kResourceExhausted,
       SmallLimits()},
      {"default max_message",
       Direction::kBackend,
       RawHeader('E', (64u << 20) + 1),
       {},
       absl::StatusCode::kResourceExhausted},
      {"default max_streamed_message",
       Direction::kBackend,
       RawHeader('D', (1u << 30) + 1025),
       {},
       absl::StatusCode::kResourceExhausted},
  };
  return cases;
}

TEST(FramerTest, FixturesAreSplitInvariant) {
  for (const FramerCase& c : Cases()) {
    SCOPED_TRACE(c.name);
    FeedResult expected;
    expected.messages = c.expected;
    expected.error = c.error;
    bool first = true;
    for (const auto& chunks : AllSplits(c.bytes)) {
      std::vector<std::string> violations;
      FeedResult got = Feed(c.direction, c.limits, chunks, &violations);
      EXPECT_TRUE(violations.empty()) << violations.front() << " (" << chunks.size() << " chunks)";
      EXPECT_EQ(got.messages, expected.messages) << chunks.size() << " chunks";
      EXPECT_EQ(got.error, expected.error) << chunks.size() << " chunks";
      if (c.error == absl::StatusCode::kOk) {
        EXPECT_TRUE(got.leftover.empty());
        EXPECT_FALSE(got.in_message);
      }
      if (first && got.messages != expected.messages) break;  // one failure report is enough
      first = false;
    }
  }
}

TEST(FramerTest, NeedsFiveBytesForAHeader) {
  Framer framer(Direction::kBackend, Limits{});
  for (std::string_view in : {""sv, "Z"sv, "Z\0\0\0"sv}) {
    absl::StatusOr<Piece> p = framer.Next(in);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p->kind, Piece::Kind::kNeedMore);
  }
}

TEST(FramerTest, WholeMessageWaitsForItsBody) {
  Framer framer(Direction::kBackend, Limits{});
  const std::string rfq = Msg('Z', "I");
  absl::StatusOr<Piece> p = framer.Next(std::string_view(rfq).substr(0, 5));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kind, Piece::Kind::kNeedMore);
  EXPECT_FALSE(framer.in_message());
  p = framer.Next(rfq + "trailing");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kind, Piece::Kind::kMessage);
  EXPECT_EQ(p->type, 'Z');
  EXPECT_EQ(p->size, 6u);
  EXPECT_TRUE(p->starts_message);
  EXPECT_TRUE(p->ends_message);
}

TEST(FramerTest, StreamedMessageIsHandedOutInParts) {
  Framer framer(Direction::kBackend, Limits{});
  const std::string row = Msg('D', Int16(1) + Int32(10) + "0123456789");  // 21 bytes
  ASSERT_EQ(row.size(), 21u);

  // First part: everything available, header included.
  absl::StatusOr<Piece> p = framer.Next(std::string_view(row).substr(0, 8));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kind, Piece::Kind::kPart);
  EXPECT_EQ(p->type, 'D');
  EXPECT_EQ(p->size, 8u);
  EXPECT_TRUE(p->starts_message);
  EXPECT_FALSE(p->ends_message);
  EXPECT_TRUE(framer.in_message());

  // Nothing new: never a zero-sized part.
  p = framer.Next("");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kind, Piece::Kind::kNeedMore);

  p = framer.Next(std::string_view(row).substr(8, 5));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kind, Piece::Kind::kPart);
  EXPECT_EQ(p->size, 5u);
  EXPECT_FALSE(p->starts_message);
  EXPECT_FALSE(p->ends_message);

  // The rest plus the next message: the part stops at the message boundary.
  const std::string rest = row.substr(13) + Msg('Z', "I");
  p = framer.Next(rest);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kind, Piece::Kind::kPart);
  EXPECT_EQ(p->type, 'D');
  EXPECT_EQ(p->size, 8u);
  EXPECT_TRUE(p->ends_message);
  EXPECT_FALSE(framer.in_message());

  p = framer.Next(std::string_view(rest).substr(8));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kind, Piece::Kind::kMessage);
  EXPECT_EQ(p->type, 'Z');
}

TEST(FramerTest, HeaderOnlyOfStreamedMessageIsAPart) {
  Framer framer(Direction::kFrontend, Limits{});
  const std::string copy = Msg('d', "abc");
  absl::StatusOr<Piece> p = framer.Next(std::string_view(copy).substr(0, 5));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kind, Piece::Kind::kPart);
  EXPECT_EQ(p->size, 5u);
  EXPECT_TRUE(p->starts_message);
}

TEST(FramerTest, StreamedMessageAlreadyWholeIsAMessage) {
  Framer framer(Direction::kBackend, Limits{});
  const std::string row = Msg('D', Int16(0));
  absl::StatusOr<Piece> p = framer.Next(row);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kind, Piece::Kind::kMessage);
  EXPECT_EQ(p->size, row.size());
}

TEST(FramerTest, LimitIsDecidedFromTheHeaderAlone) {
  Limits limits;
  limits.max_message = 100;
  Framer framer(Direction::kFrontend, limits);
  absl::StatusOr<Piece> p = framer.Next(RawHeader('Q', 101));
  EXPECT_EQ(p.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(PeekHeaderTest, DecodesAndChecks) {
  absl::StatusOr<std::optional<MessageHeader>> h = PeekHeader("Z\0\0\0"sv, 100);
  ASSERT_TRUE(h.ok());
  EXPECT_FALSE(h->has_value());

  h = PeekHeader(Msg('Z', "I"), 100);
  ASSERT_TRUE(h.ok());
  ASSERT_TRUE(h->has_value());
  EXPECT_EQ((*h)->type, 'Z');
  EXPECT_EQ((*h)->length, 5u);
  EXPECT_EQ((*h)->total_size(), 6u);
  EXPECT_EQ((*h)->body_size(), 1u);

  EXPECT_EQ(PeekHeader(RawHeader('Z', 3), 100).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PeekHeader(RawHeader('Z', 101), 100).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(PeekHeader(RawHeader('Z', 100), 100).ok());
}

}  // namespace
}  // namespace nerava::pg
