#include "nerava/routing/redis_commands.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace nerava::routing {
namespace {

using Args = std::vector<std::string>;

constexpr RedisKind kR = RedisKind::kRead;
constexpr RedisKind kW = RedisKind::kWrite;
constexpr RedisKind kC = RedisKind::kConnectionState;
constexpr RedisKind kO = RedisKind::kOther;
constexpr RedisKind kU = RedisKind::kUnknown;

struct Case {
  Args args;
  RedisKind kind;
  bool replica;  // ReplicaEligible()
  uint32_t pin_begin = kRedisPinNone;
  uint32_t pin_end = kRedisPinNone;
  std::optional<size_t> first_key = std::nullopt;
};

// One command per line (DESIGN §5), against the built-in Redis 7.0 table.
const std::vector<Case>& Cases() {
  // clang-format off
  static const auto* cases = new std::vector<Case>{
      {{"GET", "k"}, kR, true, 0, 0, 1},
      {{"get", "k"}, kR, true, 0, 0, 1},
      {{"MGET", "a", "b"}, kR, true, 0, 0, 1},
      {{"STRLEN", "k"}, kR, true, 0, 0, 1},
      {{"GETRANGE", "k", "0", "1"}, kR, true, 0, 0, 1},
      {{"EXISTS", "k"}, kR, true, 0, 0, 1},
      {{"TTL", "k"}, kR, true, 0, 0, 1},
      {{"TYPE", "k"}, kR, true, 0, 0, 1},
      {{"HGET", "h", "f"}, kR, true, 0, 0, 1},
      {{"HGETALL", "h"}, kR, true, 0, 0, 1},
      {{"LRANGE", "l", "0", "-1"}, kR, true, 0, 0, 1},
      {{"LLEN", "l"}, kR, true, 0, 0, 1},
      {{"SMEMBERS", "s"}, kR, true, 0, 0, 1},
      {{"SISMEMBER", "s", "m"}, kR, true, 0, 0, 1},
      {{"ZRANGE", "z", "0", "-1"}, kR, true, 0, 0, 1},
      {{"ZSCORE", "z", "m"}, kR, true, 0, 0, 1},
      {{"XRANGE", "s", "-", "+"}, kR, true, 0, 0, 1},
      {{"XLEN", "s"}, kR, true, 0, 0, 1},
      {{"PFCOUNT", "h"}, kR, true, 0, 0, 1},
      {{"GEOPOS", "g", "m"}, kR, true, 0, 0, 1},
      {{"GEORADIUS_RO", "g", "0", "0", "1", "km"}, kR, true, 0, 0, 1},
      {{"SORT_RO", "l"}, kR, true, 0, 0, 1},
      {{"BITCOUNT", "k"}, kR, true, 0, 0, 1},
      {{"KEYS", "*"}, kR, true},
      {{"SCAN", "0"}, kR, true},
      {{"DBSIZE"}, kR, true},
      {{"RANDOMKEY"}, kR, true},
      {{"OBJECT", "ENCODING", "k"}, kR, true, 0, 0, 2},
      {{"object", "freq", "k"}, kR, true, 0, 0, 2},
      {{"MEMORY", "USAGE", "k"}, kR, true, 0, 0, 2},
      {{"XREAD", "COUNT", "2", "STREAMS", "s", "0"}, kR, true, 0, 0, 4},
      {{"XREAD", "BLOCK", "0", "STREAMS", "s", "$"}, kR, false, 0, 0, 4},
      {{"xread", "streams", "block", "0"}, kR, true, 0, 0, 2},  // "block" is a key here
      {{"EVAL_RO", "return 1", "0"}, kR, true},
      {{"EVALSHA_RO", "abc", "1", "k"}, kR, true, 0, 0, 3},
      {{"FCALL_RO", "f", "1", "k"}, kR, true, 0, 0, 3},
      {{"SET", "k", "v"}, kW, false, 0, 0, 1},
      {{"SETEX", "k", "1", "v"}, kW, false, 0, 0, 1},
      {{"GETDEL", "k"}, kW, false, 0, 0, 1},
      {{"GETEX", "k"}, kW, false, 0, 0, 1},
      {{"INCR", "k"}, kW, false, 0, 0, 1},
      {{"DEL", "k"}, kW, false, 0, 0, 1},
      {{"EXPIRE", "k", "10"}, kW, false, 0, 0, 1},
      {{"HSET", "h", "f", "v"}, kW, false, 0, 0, 1},
      {{"LPUSH", "l", "v"}, kW, false, 0, 0, 1},
      {{"SADD", "s", "m"}, kW, false, 0, 0, 1},
      {{"ZADD", "z", "1", "m"}, kW, false, 0, 0, 1},
      {{"XADD", "s", "*", "f", "v"}, kW, false, 0, 0, 1},
      {{"XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"}, kW, false, 0, 0, 5},
      {{"XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">"}, kW, false, 0, 0, 7},
      {{"SORT", "l", "STORE", "d"}, kW, false, 0, 0, 1},
      {{"GEORADIUS", "g", "0", "0", "1", "km"}, kW, false, 0, 0, 1},
      {{"PFADD", "h", "x"}, kW, false, 0, 0, 1},
      {{"FLUSHALL"}, kW, false},
      {{"BLPOP", "l", "0"}, kW, false, 0, 0, 1},
      {{"BRPOPLPUSH", "a", "b", "0"}, kW, false, 0, 0, 1},
      {{"BZPOPMIN", "z", "0"}, kW, false, 0, 0, 1},
      {{"FUNCTION", "LOAD", "code"}, kW, false},
      {{"EVAL", "return 1", "0"}, kO, false},
      {{"EVALSHA", "abc", "1", "k"}, kO, false, 0, 0, 3},
      {{"FCALL", "f", "0"}, kO, false},
      {{"SCRIPT", "LOAD", "return 1"}, kO, false},
      {{"SCRIPT", "EXISTS", "abc"}, kO, false},
      {{"PUBLISH", "ch", "m"}, kO, false},
      {{"SUBSCRIBE", "ch"}, kO, false, kRedisPinPubSub},
      {{"PSUBSCRIBE", "c*"}, kO, false, kRedisPinPubSub},
      {{"SSUBSCRIBE", "ch"}, kO, false, kRedisPinPubSub, 0, 1},
      {{"UNSUBSCRIBE"}, kO, false, 0, kRedisPinPubSub},
      {{"PUNSUBSCRIBE", "c*"}, kO, false, 0, kRedisPinPubSub},
      {{"MULTI"}, kO, false, kRedisPinMulti},
      {{"EXEC"}, kO, false, 0, kRedisPinMulti | kRedisPinWatch},
      {{"DISCARD"}, kO, false, 0, kRedisPinMulti | kRedisPinWatch},
      {{"WATCH", "k"}, kO, false, kRedisPinWatch, 0, 1},
      {{"UNWATCH"}, kO, false, 0, kRedisPinWatch},
      {{"CLIENT", "TRACKING", "on"}, kO, false, kRedisPinTracking},
      {{"CLIENT", "TRACKING", "OFF"}, kO, false, 0, kRedisPinTracking},
      {{"CLIENT", "ID"}, kO, false},
      {{"CLIENT", "SETNAME", "app"}, kC, false},
      {{"CLIENT", "NO-EVICT", "on"}, kC, false},
      {{"SELECT", "2"}, kC, false},
      {{"AUTH", "user", "pw"}, kC, false},
      {{"HELLO", "3"}, kC, false},
      {{"RESET"}, kC, false, 0, kRedisPinAll},
      {{"PING"}, kO, false},
      {{"INFO", "replication"}, kO, false},
      {{"CONFIG", "GET", "maxmemory"}, kO, false},
      {{"WAIT", "1", "0"}, kO, false},
      {{"NOSUCHCOMMAND", "x"}, kU, false},
      {{"CLIENT", "NOSUCHSUB"}, kU, false},
      {{}, kU, false},
  };
  // clang-format on
  return *cases;
}

TEST(RedisCommandsTest, ClassificationTable) {
  const RedisCommandTable& table = RedisCommandTable::Builtin();
  for (const Case& c : Cases()) {
    std::string label =
        c.args.empty() ? "(empty)" : c.args[0] + (c.args.size() > 1 ? " " + c.args[1] : "");
    RedisCommandClass got = ClassifyRedisCommand(table, c.args);
    EXPECT_EQ(RedisKindName(got.kind), std::string(RedisKindName(c.kind))) << label;
    EXPECT_EQ(got.ReplicaEligible(), c.replica) << label;
    EXPECT_EQ(got.pin_begin, c.pin_begin) << label;
    EXPECT_EQ(got.pin_end, c.pin_end) << label;
    EXPECT_EQ(got.first_key, c.first_key) << label;
  }
}

TEST(RedisCommandsTest, BuiltinCoversRedis70DataTypes) {
  const RedisCommandTable& table = RedisCommandTable::Builtin();
  EXPECT_GE(table.size(), 360u);  // 240 commands + their subcommands in 7.0
  for (const char* name :
       {"get",           "set",          "append",          "incrbyfloat",  "lmpop",
        "blmove",        "hrandfield",   "smismember",      "zrangestore",  "zintercard",
        "xautoclaim",    "xinfo|stream", "pfmerge",         "geosearch",    "bitfield_ro",
        "copy",          "lcs",          "object|encoding", "memory|usage", "client|tracking",
        "function|load", "script|load",  "sintercard",      "expiretime"}) {
    EXPECT_NE(table.Find(name), nullptr) << name;
  }
  const RedisCommandInfo* client = table.Find("client");
  ASSERT_NE(client, nullptr);
  EXPECT_TRUE(client->has_subcommands);
  const RedisCommandInfo* multi = table.Find("multi");
  ASSERT_NE(multi, nullptr);
  EXPECT_NE(multi->flags & kRedisTransaction, 0u);
}

// RESP2 text (CRLF line ends) into the plain reply tree, as the monitor does from hiredis.
class RespReader {
 public:
  explicit RespReader(std::string text) : text_(std::move(text)) {}
  RedisReply Read() {
    std::string line = Line();
    char type = line[0];
    std::string rest = line.substr(1);
    switch (type) {
      case '+':
        return RedisReply::String(rest);
      case ':':
        return RedisReply::Integer(std::stoll(rest));
      case '$': {
        long long n = std::stoll(rest);
        if (n < 0) return RedisReply::Nil();
        std::string s = text_.substr(pos_, static_cast<size_t>(n));
        pos_ += static_cast<size_t>(n) + 2;
        return RedisReply::String(s);
      }
      case '*': {
        long long n = std::stoll(rest);
        if (n < 0) return RedisReply::Nil();
        std::vector<RedisReply> items;
        for (long long i = 0; i < n; ++i) items.push_back(Read());
        return RedisReply::Array(std::move(items));
      }
      default:
        ADD_FAILURE() << "unexpected RESP line " << line;
        return RedisReply::Nil();
    }
  }
  bool done() const { return pos_ == text_.size(); }

 private:
  std::string Line() {
    size_t end = text_.find("\r\n", pos_);
    std::string line = text_.substr(pos_, end - pos_);
    pos_ = end + 2;
    return line;
  }
  std::string text_;
  size_t pos_ = 0;
};

std::string CapturedCommandInfo() {
  std::string lines =
#include "redis_command_info_fixture.inc"
      ;
  std::string out;
  for (char c : lines) {
    if (c == '\n') {
      out += "\r\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

TEST(RedisCommandsTest, ParseCapturedCommandInfoReply) {
  RespReader reader(CapturedCommandInfo());
  RedisReply reply = reader.Read();
  ASSERT_TRUE(reader.done());
  absl::StatusOr<RedisCommandTable> table = ParseCommandReply(reply);
  ASSERT_TRUE(table.ok()) << table.status();

  const RedisCommandInfo* get = table->Find("get");
  ASSERT_NE(get, nullptr);
  EXPECT_EQ(get->arity, 2);
  EXPECT_EQ(get->first_key, 1);
  EXPECT_EQ(get->flags, kRedisReadonly | kRedisFast);
  EXPECT_NE(table->Find("set")->flags & kRedisWrite, 0u);
  EXPECT_EQ(table->Find("xread")->flags & (kRedisReadonly | kRedisBlocking | kRedisMovableKeys),
            kRedisReadonly | kRedisBlocking | kRedisMovableKeys);
  EXPECT_NE(table->Find("eval_ro")->flags & kRedisScript, 0u);
  EXPECT_NE(table->Find("subscribe")->flags & kRedisPubSub, 0u);
  EXPECT_NE(table->Find("multi")->flags & kRedisTransaction, 0u);
  EXPECT_TRUE(table->Find("object")->has_subcommands);
  EXPECT_NE(table->Find("object|encoding"), nullptr);
  EXPECT_EQ(table->Find("nosuchcommand"), nullptr);  // nil in the reply: skipped

  // The parsed and the built-in tables agree on every command of the capture.
  const RedisCommandTable& builtin = RedisCommandTable::Builtin();
  for (const char* name : {"get", "set", "xread", "eval_ro", "subscribe", "multi", "object",
                           "object|encoding", "object|freq", "object|help"}) {
    const RedisCommandInfo* a = table->Find(name);
    const RedisCommandInfo* b = builtin.Find(name);
    ASSERT_NE(a, nullptr) << name;
    ASSERT_NE(b, nullptr) << name;
    EXPECT_EQ(a->flags, b->flags) << name;
    EXPECT_EQ(a->arity, b->arity) << name;
    EXPECT_EQ(a->first_key, b->first_key) << name;
    EXPECT_EQ(a->has_subcommands, b->has_subcommands) << name;
  }
  // Classification works the same on the parsed table.
  Args xread = {"XREAD", "BLOCK", "100", "STREAMS", "s", "0"};
  EXPECT_FALSE(ClassifyRedisCommand(*table, xread).ReplicaEligible());
  Args encoding = {"OBJECT", "ENCODING", "k"};
  EXPECT_TRUE(ClassifyRedisCommand(*table, encoding).ReplicaEligible());
}

TEST(RedisCommandsTest, ParseCommandReplyRejectsMalformed) {
  auto entry = [](std::vector<RedisReply> e) { return RedisReply::Array(std::move(e)); };
  auto good = [&](const char* name) {
    return entry({RedisReply::String(name), RedisReply::Integer(2),
                  RedisReply::Array({RedisReply::String("readonly")}), RedisReply::Integer(1),
                  RedisReply::Integer(1), RedisReply::Integer(1)});
  };
  EXPECT_EQ(ParseCommandReply(RedisReply::Integer(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      ParseCommandReply(RedisReply::Array({entry({RedisReply::String("get")})})).status().code(),
      absl::StatusCode::kInvalidArgument);
  RedisReply bad_flag = good("x");
  bad_flag.elements[2].elements.push_back(RedisReply::Integer(3));
  EXPECT_EQ(ParseCommandReply(RedisReply::Array({bad_flag})).status().code(),
            absl::StatusCode::kInvalidArgument);
  RedisReply bad_sub = good("y");
  while (bad_sub.elements.size() < 9) bad_sub.elements.push_back(RedisReply::Array({}));
  bad_sub.elements.push_back(RedisReply::Array({RedisReply::String("y|z")}));
  EXPECT_EQ(ParseCommandReply(RedisReply::Array({bad_sub})).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<RedisReply> many(20001, good("same"));
  EXPECT_EQ(ParseCommandReply(RedisReply::Array(std::move(many))).status().code(),
            absl::StatusCode::kResourceExhausted);
  absl::StatusOr<RedisCommandTable> ok =
      ParseCommandReply(RedisReply::Array({good("GET"), RedisReply::Nil()}));
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->size(), 1u);
  EXPECT_NE(ok->Find("get"), nullptr);  // names are lower-cased
}

}  // namespace
}  // namespace nerava::routing
