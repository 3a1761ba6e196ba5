#include "config/units.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace nerava::config::internal {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;

struct DurationCase {
  std::string text;
  int64_t ms;  // -1: must be refused
};

TEST(UnitsTest, DurationTable) {
  const DurationCase kCases[] = {
      {"0", 0},
      {"5", 5000},
      {"1.5", 1500},
      {"250ms", 250},
      {"1.5s", 1500},
      {"30s", 30000},
      {"2m", 120000},
      {"1h", 3600000},
      {"0.1s", 100},
      {".5s", 500},
      {" 30s ", 30000},
      {"30 s", 30000},
      {"007s", 7000},
      {"0.25m", 15000},
      {"10ms", 10},
      {"1.0ms", 1},
      {"", -1},
      {"s", -1},
      {"-5s", -1},
      {"5x", -1},
      {"5 sec", -1},
      {"0.5ms", -1},
      {"1.0001s", -1},
      {"5S", -1},
      {"1e3", -1},
      {"1..5s", -1},
      {"abc", -1},
      {"5ms5", -1},
      {"9999999999999999999h", -1},
  };
  for (const DurationCase& c : kCases) {
    SCOPED_TRACE(c.text);
    absl::StatusOr<milliseconds> d = ParseDuration(c.text);
    if (c.ms < 0) {
      ASSERT_FALSE(d.ok());
      EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    } else {
      ASSERT_TRUE(d.ok()) << d.status();
      EXPECT_EQ(d->count(), c.ms);
    }
  }
}

struct SizeCase {
  std::string text;
  uint64_t bytes;
  bool ok;
};

TEST(UnitsTest, SizeTable) {
  const SizeCase kCases[] = {
      {"0", 0, true},
      {"1048576", 1048576, true},
      {"100B", 100, true},
      {"1kB", 1000, true},
      {"1KB", 1000, true},
      {"2MB", 2000000, true},
      {"1GB", 1000000000, true},
      {"1KiB", 1024, true},
      {"16MiB", 16ull << 20, true},
      {"1GiB", 1ull << 30, true},
      {"1.5MiB", 3ull << 19, true},
      {"0.5KiB", 512, true},
      {"16 MiB", 16ull << 20, true},
      {"1.5", 0, false},  // a fraction of a byte
      {"1.1B", 0, false},
      {"16mib", 0, false},  // units are case-sensitive: mB would be millibytes
      {"1kb", 0, false},
      {"1TB", 0, false},
      {"-1", 0, false},
      {"", 0, false},
      {"MiB", 0, false},
      {"99999999999999999GiB", 0, false},  // overflows 64 bits
  };
  for (const SizeCase& c : kCases) {
    SCOPED_TRACE(c.text);
    absl::StatusOr<uint64_t> s = ParseSize(c.text);
    ASSERT_EQ(s.ok(), c.ok) << s.status();
    if (c.ok) {
      EXPECT_EQ(*s, c.bytes);
    } else {
      EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

TEST(UnitsTest, ErrorTextQuotesTheValueAndTheReason) {
  EXPECT_THAT(ParseDuration("5x").status().message(), HasSubstr("\"5x\""));
  EXPECT_THAT(ParseDuration("5x").status().message(), HasSubstr("unknown unit \"x\""));
  EXPECT_THAT(ParseDuration("-1s").status().message(), HasSubstr("must not be negative"));
  EXPECT_THAT(ParseSize("1.1B").status().message(), HasSubstr("not a whole number of bytes"));
}

TEST(UnitsTest, Ports) {
  EXPECT_EQ(*ParsePort("1"), 1);
  EXPECT_EQ(*ParsePort("65535"), 65535);
  EXPECT_EQ(*ParsePort("5432"), 5432);
  for (const char* bad : {"0", "65536", "-1", "", "54a", "5432.0", "0x10", "+80"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(ParsePort(bad).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(UnitsTest, Integers) {
  EXPECT_EQ(*ParseInt("0"), 0);
  EXPECT_EQ(*ParseInt("-3"), -3);
  EXPECT_EQ(*ParseInt(" 12 "), 12);
  for (const char* bad : {"", "1.5", "1e3", "abc", "99999999999999999999", "--1"}) {
    SCOPED_TRACE(bad);
    EXPECT_FALSE(ParseInt(bad).ok());
  }
}

TEST(UnitsTest, Bools) {
  for (const char* t : {"true", "True", "TRUE", "yes", "on"}) EXPECT_TRUE(*ParseBool(t)) << t;
  for (const char* f : {"false", "False", "no", "off"}) EXPECT_FALSE(*ParseBool(f)) << f;
  EXPECT_FALSE(ParseBool("1").ok());
  EXPECT_FALSE(ParseBool("").ok());
}

struct EndpointCase {
  std::string text;
  std::string host;  // empty: must be refused
  uint16_t port;
};

TEST(UnitsTest, EndpointTable) {
  const EndpointCase kCases[] = {
      {"127.0.0.1:6432", "127.0.0.1", 6432},
      {"primary-db:5432", "primary-db", 5432},
      {"[::1]:6432", "::1", 6432},
      {"[2001:db8::7]:1", "2001:db8::7", 1},
      {"0.0.0.0:9187", "0.0.0.0", 9187},
      {"::1:6432", "", 0},  // unbracketed IPv6
      {"host", "", 0},      // no port
      {":6432", "", 0},     // no host
      {"[]:6432", "", 0},
      {"[::1]6432", "", 0},
      {"[::1:6432", "", 0},
      {"host:0", "", 0},
      {"host:70000", "", 0},
      {"host:", "", 0},
      {"", "", 0},
  };
  for (const EndpointCase& c : kCases) {
    SCOPED_TRACE(c.text);
    absl::StatusOr<Endpoint> e = ParseEndpoint(c.text);
    if (c.host.empty()) {
      ASSERT_FALSE(e.ok());
      EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
      continue;
    }
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_EQ(e->host, c.host);
    EXPECT_EQ(e->port, c.port);
    EXPECT_EQ(e->ToString(), c.text);  // ToString is the inverse
  }
  EXPECT_THAT(ParseEndpoint("::1:6432").status().message(), HasSubstr("brackets"));
}

TEST(UnitsTest, EndpointToStringBracketsIpv6) {
  EXPECT_EQ((Endpoint{"::1", 6432}).ToString(), "[::1]:6432");
  EXPECT_EQ((Endpoint{"fe80::1", 80}).ToString(), "[fe80::1]:80");
  EXPECT_EQ((Endpoint{"10.0.0.1", 80}).ToString(), "10.0.0.1:80");
  EXPECT_EQ((Endpoint{"db.internal", 5432}).ToString(), "db.internal:5432");
}

TEST(UnitsTest, FormatReadsBack) {
  for (int64_t ms : {0, 1, 10, 250, 999, 1000, 1500, 30000, 60000, 90000, 3600000, 7200000}) {
    const std::string text = FormatDuration(milliseconds(ms));
    SCOPED_TRACE(text);
    EXPECT_EQ(ParseDuration(text)->count(), ms);
  }
  EXPECT_EQ(FormatDuration(milliseconds(250)), "250ms");
  EXPECT_EQ(FormatDuration(milliseconds(30000)), "30s");
  EXPECT_EQ(FormatDuration(milliseconds(120000)), "2m");
  for (uint64_t b :
       {0ull, 1ull, 1000ull, 1024ull, 1536ull, 16ull << 20, 1ull << 30, 5ull << 30, 123456789ull}) {
    const std::string text = FormatSize(b);
    SCOPED_TRACE(text);
    EXPECT_EQ(*ParseSize(text), b);
  }
  EXPECT_EQ(FormatSize(16ull << 20), "16MiB");
  EXPECT_EQ(FormatSize(1536), "1536");  // 1.5KiB: FormatSize keeps whole numbers
}

}  // namespace
}  // namespace nerava::config::internal
