#include "config/interpolate.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "tests/unit/config/test_env.h"

namespace nerava::config::internal {
namespace {

using ::nerava::config::testing::FakeEnv;
using ::testing::HasSubstr;

const EnvLookup& Env() {
  static const EnvLookup env =
      FakeEnv({{"A", "a"}, {"B", "bee"}, {"EMPTY", ""}, {"REF", "${A}"}, {"PORT", "15432"}});
  return env;
}

struct Case {
  std::string in;
  std::string out;
};

TEST(InterpolateTest, Table) {
  const Case kCases[] = {
      {"", ""},
      {"plain text", "plain text"},
      {"${A}", "a"},
      {"x${A}y${B}z", "xaybeez"},
      {"${A}${A}${A}", "aaa"},
      {"127.0.0.1:${PORT}", "127.0.0.1:15432"},
      {"${UNSET:-def}", "def"},
      {"${UNSET:-}", ""},
      {"${EMPTY}", ""},          // set but empty is a value
      {"${EMPTY:-def}", "def"},  // ...but ':-' treats it like unset, as the shell does
      {"${A:-def}", "a"},
      {"${UNSET:-a:b c}", "a:b c"},
      {"${UNSET:-${A}}", "a"},  // defaults are interpolated
      {"${UNSET:-${ALSO_UNSET:-x}}", "x"},
      {"${A:-${UNSET}}", "a"},  // ...only when used
      {"${UNSET:-$$}", "$"},
      {"$$", "$"},
      {"$${A}", "${A}"},
      {"a$$b", "a$b"},
      {"pa$word", "pa$word"},  // a lone '$' stays
      {"$", "$"},
      {"end$", "end$"},
      {"$A", "$A"},        // only the braced form interpolates
      {"${REF}", "${A}"},  // values are not interpolated again
      {"}{", "}{"},
  };
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.in);
    absl::StatusOr<std::string> out = Interpolate(c.in, Env());
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(*out, c.out);
  }
}

struct ErrorCase {
  std::string in;
  std::string message_part;
};

TEST(InterpolateTest, Errors) {
  const ErrorCase kCases[] = {
      {"${UNSET}", "environment variable UNSET is not set"},
      {"x${A}${UNSET}", "environment variable UNSET is not set"},
      {"${UNSET:-${ALSO_UNSET}}", "environment variable ALSO_UNSET is not set"},
      {"${A", "unterminated"},
      {"${", "unterminated"},
      {"${A:-x", "unterminated"},
      {"${UNSET:-${A}", "unterminated"},
      {"${}", "bad variable name"},
      {"${1A}", "bad variable name \"1A\""},
      {"${A B}", "bad interpolation"},
      {"${A-x}", "bad interpolation"},
      {"${A:x}", "bad interpolation"},
  };
  for (const ErrorCase& c : kCases) {
    SCOPED_TRACE(c.in);
    absl::StatusOr<std::string> out = Interpolate(c.in, Env());
    ASSERT_FALSE(out.ok()) << *out;
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(out.status().message()), HasSubstr(c.message_part));
  }
}

TEST(InterpolateTest, NestingIsBounded) {
  std::string text;
  for (int i = 0; i < 40; ++i) text += "${U:-";
  text += "x";
  for (int i = 0; i < 40; ++i) text += "}";
  absl::StatusOr<std::string> out = Interpolate(text, Env());
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("nested too deeply"));
}

}  // namespace
}  // namespace nerava::config::internal
