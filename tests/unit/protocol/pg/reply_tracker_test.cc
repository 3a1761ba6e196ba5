#include "nerava/protocol/pg/reply_tracker.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace nerava::pg {
namespace {

// One scenario: requests (uppercase letters, lowercase 'p' = a Parse the proxy slipped in,
// 'q' = a Query the proxy slipped in), then replies; expected: for each reply, whether it is
// forwarded ('f') or swallowed ('-'), and whether a client batch ended ('!').
struct Scenario {
  const char* name;
  std::string requests;
  std::string replies;
  std::string expected;  // one char per reply: 'f', '-', or '!' (forwarded and batch done)
  size_t pending_after = 0;
};

void Feed(ReplyTracker& tracker, const std::string& requests) {
  for (char c : requests) {
    if (c == 'p') {
      tracker.OnRequest('P', Origin::kProxy);
    } else if (c == 'q') {
      tracker.OnRequest('Q', Origin::kProxy);
    } else {
      tracker.OnRequest(c, Origin::kClient);
    }
  }
}

class ReplyTrackerTest : public ::testing::TestWithParam<Scenario> {};

TEST_P(ReplyTrackerTest, ForwardsAndEndsBatches) {
  const Scenario& s = GetParam();
  ReplyTracker tracker;
  Feed(tracker, s.requests);
  std::string got;
  for (char reply : s.replies) {
    auto verdict = tracker.OnReply(reply);
    EXPECT_FALSE(verdict.unexpected) << "reply " << reply;
    got += verdict.batch_done ? '!' : (verdict.forward ? 'f' : '-');
  }
  EXPECT_EQ(got, s.expected);
  EXPECT_EQ(tracker.pending(), s.pending_after);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ReplyTrackerTest,
    ::testing::Values(
        Scenario{"simple_query", "Q", "TDDCZ", "ffff!"},
        Scenario{"multi_statement_query", "Q", "TDCCTCZ", "ffffff!"},
        Scenario{"query_error", "Q", "EZ", "f!"},
        Scenario{"empty_query", "Q", "IZ", "f!"},
        Scenario{"copy_in", "Q", "GCZ", "ff!"},
        Scenario{"copy_out", "Q", "HddcCZ", "fffff!"},
        Scenario{"extended", "PBDES", "12TDDCZ", "ffffff!"},
        Scenario{"describe_statement", "PDS", "1tnZ", "fff!"},
        Scenario{"portal_suspended", "BEES", "2DsDCZ", "fffff!"},
        Scenario{"close", "CS", "3Z", "f!"},
        Scenario{"pipelined_batches", "PBESBES", "12CZ2CZ", "fff!ff!"},
        Scenario{"error_skips_to_sync", "PBESBES", "EZ2CZ", "f!ff!"},
        Scenario{"lazy_parse_swallowed", "pBES", "12CZ", "-ff!"},
        Scenario{"lazy_parse_fails_client_sees_error", "pBES", "EZ", "f!"},
        Scenario{"replayed_settings_swallowed", "qQ", "SCZCZ", "---f!"},
        Scenario{"replay_error_swallowed", "qQ", "EZCZ", "--f!"},
        Scenario{"function_call", "F", "VZ", "f!"},
        Scenario{"open_batch_after_flush", "PBE", "12C", "fff"},
        Scenario{"notification_while_idle", "", "A", "f"},
        Scenario{"notification_during_replay", "q", "ACZ", "f--"}),
    [](const auto& param_info) { return std::string(param_info.param.name); });

TEST(ReplyTrackerTest, RequestsAfterAnErrorAreIgnoredUntilSync) {
  ReplyTracker tracker;
  Feed(tracker, "PB");
  EXPECT_TRUE(tracker.OnReply('E').forward);
  EXPECT_TRUE(tracker.idle());
  Feed(tracker, "EQ");  // the server discards these: no reply will come
  EXPECT_TRUE(tracker.idle());
  Feed(tracker, "S");
  EXPECT_EQ(tracker.client_batches(), 1u);
  EXPECT_TRUE(tracker.OnReply('Z').batch_done);
  EXPECT_TRUE(tracker.idle());
}

TEST(ReplyTrackerTest, CompletionWithoutRequestIsUnexpected) {
  ReplyTracker tracker;
  EXPECT_TRUE(tracker.OnReply('C').unexpected);
  Feed(tracker, "P");
  EXPECT_TRUE(tracker.OnReply('2').unexpected);
}

}  // namespace
}  // namespace nerava::pg
