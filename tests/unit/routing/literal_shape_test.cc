#include "routing/literal_shape.h"

#include <gtest/gtest.h>

#include "nerava/routing/sql_classifier.h"

namespace nerava::routing {
namespace {

struct ShapeCase {
  const char* sql;
  const char* shape;  // nullptr: no shape (exact text only)
};

TEST(LiteralShapeTest, Table) {
  const ShapeCase cases[] = {
      {"SELECT abalance FROM pgbench_accounts WHERE aid = 4711;",
       "SELECT abalance FROM pgbench_accounts WHERE aid = ?;"},
      {"select * from t where a = 'x''y' and b = 1.5e-3", "select * from t where a = ? and b = ?"},
      {"select c1, t2.c3 from t2", nullptr},  // digits inside identifiers are not literals
      {"select $1::int + 2", "select $1::int + ?"},
      {"/* nerava:replica */ select 42", "/* nerava:replica */ select ?"},
      {"select 1 -- comment 2\n", "select ? -- comment 2\n"},
      {"select \"col 1\" from t where x = 3", "select \"col 1\" from t where x = ?"},
      {"select $$ 1 $$", nullptr},        // dollar quoting: exact text only
      {"select E'a\\'b', 1", nullptr},    // escape string: exact text only
      {"select 'unterminated", nullptr},
      {"select now()", nullptr},
  };
  for (const auto& c : cases) {
    auto shape = LiteralShape(c.sql);
    if (c.shape == nullptr) {
      EXPECT_FALSE(shape.has_value()) << c.sql << " -> " << shape.value_or("");
    } else {
      ASSERT_TRUE(shape.has_value()) << c.sql;
      EXPECT_EQ(*shape, c.shape) << c.sql;
    }
  }
}

TEST(LiteralShapeTest, StatementsDifferingInLiteralsShareOneCacheEntry) {
  ClassificationCache cache;
  auto first = cache.Classify("SELECT abalance FROM pgbench_accounts WHERE aid = 1");
  auto second = cache.Classify("SELECT abalance FROM pgbench_accounts WHERE aid = 2");
  EXPECT_EQ(first, second);
  EXPECT_EQ(cache.misses(), 1u);
  EXPECT_EQ(cache.hits(), 1u);
  EXPECT_EQ(second->kind, StatementKind::kRead);
}

TEST(LiteralShapeTest, SetStatementsKeepTheirOwnText) {
  // The replay text of a SET carries its value: never shared between values.
  ClassificationCache cache;
  auto a = cache.Classify("SET work_mem = '7MB'");
  auto b = cache.Classify("SET work_mem = '8MB'");
  ASSERT_EQ(a->session_effects.size(), 1u);
  ASSERT_EQ(b->session_effects.size(), 1u);
  EXPECT_NE(a->session_effects[0].text, b->session_effects[0].text);
  EXPECT_EQ(cache.misses(), 2u);
}

}  // namespace
}  // namespace nerava::routing
