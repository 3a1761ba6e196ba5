#include "nerava/routing/watermark.h"

#include <gtest/gtest.h>

#include <vector>

namespace nerava::routing {
namespace {

using Clock = Watermark::Clock;
using std::chrono::milliseconds;

// Synthetic time: t(ms) is `ms` milliseconds after an arbitrary origin.
Clock::time_point T(int64_t ms) {
  return Clock::time_point{} + std::chrono::hours(1) + milliseconds(ms);
}

struct Point {
  int64_t ms;
  uint64_t position;
};

Watermark Build(const std::vector<Point>& points, size_t capacity = Watermark::kDefaultCapacity) {
  Watermark watermark(capacity);
  for (const Point& p : points) watermark.Add(T(p.ms), p.position);
  return watermark;
}

TEST(WatermarkTest, EmptyHistoryReportsNoLag) {
  Watermark watermark;
  EXPECT_TRUE(watermark.empty());
  EXPECT_DOUBLE_EQ(watermark.LagSeconds(0, T(5000)), 0.0);
  EXPECT_DOUBLE_EQ(watermark.LagSeconds(123, T(5000)), 0.0);
  EXPECT_FALSE(watermark.SampleAtOrAfter(T(0)).has_value());
}

struct LagCase {
  const char* name;
  std::vector<Point> samples;
  uint64_t replica;
  int64_t now_ms;
  double want_seconds;
};

class WatermarkLagTest : public testing::TestWithParam<LagCase> {};

TEST_P(WatermarkLagTest, LagSeconds) {
  const LagCase& c = GetParam();
  Watermark watermark = Build(c.samples);
  EXPECT_NEAR(watermark.LagSeconds(c.replica, T(c.now_ms)), c.want_seconds, 1e-9) << c.name;
}

// A primary writing 1000 bytes per second, sampled every 250 ms unless said otherwise.
const std::vector<Point> kSteady = {{0, 0},       {250, 250},   {500, 500},  {750, 750},
                                    {1000, 1000}, {1250, 1250}, {1500, 1500}};

INSTANTIATE_TEST_SUITE_P(
    Cases, WatermarkLagTest,
    testing::Values(
        LagCase{"caught up with the newest sample", kSteady, 1500, 1600, 0.0},
        LagCase{"ahead of the newest sample", kSteady, 1700, 1600, 0.0},
        LagCase{"exactly on a sample", kSteady, 1000, 1600, 0.6},
        LagCase{"interpolated between samples", kSteady, 1100, 1600, 0.5},
        LagCase{"interpolated, uneven samples", {{0, 0}, {1000, 4000}}, 1000, 1000, 0.75},
        LagCase{"older than the history", {{2000, 100}, {3000, 200}}, 50, 5000, 3.0},
        LagCase{"equal to the oldest position", {{2000, 100}, {3000, 200}}, 100, 5000, 3.0},
        LagCase{"now before the interpolated time clamps to 0", kSteady, 1400, 1000, 0.0},
        // An idle primary: its last write is at 1000, then nothing for 10 s.
        LagCase{"idle primary, replica caught up",
                {{0, 0}, {1000, 1000}, {2000, 1000}, {5000, 1000}, {11000, 1000}},
                1000,
                11000,
                0.0},
        // The replica is missing the write made between 11000 and 11250 only.
        LagCase{"idle primary that writes again",
                {{0, 0}, {1000, 1000}, {2000, 1000}, {11000, 1000}, {11250, 2000}},
                1000,
                11300,
                0.3}),
    [](const testing::TestParamInfo<LagCase>& param) {
      std::string name = param.param.name;
      for (char& ch : name) {
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      }
      return name;
    });

TEST(WatermarkTest, IdlePrimaryKeepsCaughtUpReplicaAtZero) {
  Watermark watermark;
  watermark.Add(T(0), 500);
  for (int64_t ms = 250; ms <= 60000; ms += 250) {
    watermark.Add(T(ms), 500);
    EXPECT_DOUBLE_EQ(watermark.LagSeconds(500, T(ms)), 0.0) << ms;
  }
  // The idle run is stored as its two ends only.
  EXPECT_EQ(watermark.size(), 2u);
  EXPECT_EQ(watermark.oldest().time, T(0));
  EXPECT_EQ(watermark.newest().time, T(60000));
}

TEST(WatermarkTest, PausedReplicaLagGrowsWhilePrimaryWrites) {
  Watermark watermark;
  // Replay stops at position 1000, which the primary reached at t = 1 s.
  double previous = -1;
  for (int64_t ms = 0; ms <= 20000; ms += 250) {
    watermark.Add(T(ms), static_cast<uint64_t>(ms));
    if (ms <= 1000) continue;
    const double lag = watermark.LagSeconds(1000, T(ms));
    EXPECT_NEAR(lag, static_cast<double>(ms - 1000) / 1000.0, 1e-9) << ms;
    EXPECT_GT(lag, previous);
    previous = lag;
  }
}

TEST(WatermarkTest, DelayedReplicaUnderSteadyWrites) {
  // A replica replaying exactly 2 s behind a primary that writes steadily: lag 2 s whatever
  // the phase of the replica's check relative to the primary's samples.
  Watermark watermark;
  for (int64_t ms = 0; ms <= 10000; ms += 250) watermark.Add(T(ms), static_cast<uint64_t>(ms) * 8);
  for (int64_t now = 3000; now <= 10000; now += 37) {
    const uint64_t replica = static_cast<uint64_t>(now - 2000) * 8;
    EXPECT_NEAR(watermark.LagSeconds(replica, T(now)), 2.0, 1e-9) << now;
  }
}

TEST(WatermarkTest, WrapAroundKeepsTheNewestSamples) {
  Watermark watermark(4);
  for (int64_t i = 0; i < 10; ++i) watermark.Add(T(i * 1000), static_cast<uint64_t>(i) * 100);
  ASSERT_EQ(watermark.size(), 4u);
  EXPECT_EQ(watermark.oldest().position, 600u);
  EXPECT_EQ(watermark.oldest().time, T(6000));
  EXPECT_EQ(watermark.newest().position, 900u);
  for (size_t i = 0; i < watermark.size(); ++i) {
    EXPECT_EQ(watermark.at(i).position, 600u + 100 * i);
  }
  // Inside the kept history: interpolation still works across the ring's seam.
  EXPECT_NEAR(watermark.LagSeconds(850, T(9000)), 0.5, 1e-9);
  EXPECT_NEAR(watermark.LagSeconds(650, T(9000)), 2.5, 1e-9);
  // Older than the kept history: at least now − oldest sample time.
  EXPECT_NEAR(watermark.LagSeconds(100, T(9000)), 3.0, 1e-9);
  EXPECT_GE(watermark.LagSeconds(0, T(9000)), 3.0);
}

TEST(WatermarkTest, WrapAroundAtEveryFillLevel) {
  // The same history through rings of every size: the newest `capacity` samples decide.
  for (size_t capacity = 2; capacity <= 12; ++capacity) {
    Watermark watermark(capacity);
    for (int64_t i = 0; i < 25; ++i) {
      watermark.Add(T(i * 100), static_cast<uint64_t>(i) * 10);
      const size_t kept = std::min<size_t>(static_cast<size_t>(i) + 1, capacity);
      ASSERT_EQ(watermark.size(), kept);
      EXPECT_EQ(watermark.newest().position, static_cast<uint64_t>(i) * 10);
      EXPECT_EQ(watermark.oldest().position, static_cast<uint64_t>(i + 1 - kept) * 10);
      if (i >= 1) {
        // Half way between the last two samples: 50 ms after the second to last.
        const uint64_t half = static_cast<uint64_t>(i) * 10 - 5;
        EXPECT_NEAR(watermark.LagSeconds(half, T(i * 100)), 0.05, 1e-9)
            << "capacity " << capacity << " i " << i;
      }
    }
  }
}

TEST(WatermarkTest, IdleRunDoesNotEvictHistory) {
  Watermark watermark(4);
  watermark.Add(T(0), 0);
  watermark.Add(T(1000), 1000);
  for (int64_t ms = 1250; ms < 100000; ms += 250) watermark.Add(T(ms), 1000);
  EXPECT_EQ(watermark.size(), 3u);
  EXPECT_EQ(watermark.oldest().position, 0u);
  // The write at [0, 1000] ms is still known: a replica at 500 lags since t = 0.5 s.
  EXPECT_NEAR(watermark.LagSeconds(500, T(100000)), 99.5, 1e-9);
}

TEST(WatermarkTest, LowerPositionRestartsHistory) {
  Watermark watermark;
  watermark.Add(T(0), 1000);
  watermark.Add(T(1000), 2000);
  watermark.Add(T(2000), 500);  // a new primary with its own positions
  ASSERT_EQ(watermark.size(), 1u);
  EXPECT_EQ(watermark.oldest().position, 500u);
  EXPECT_EQ(watermark.oldest().time, T(2000));
}

TEST(WatermarkTest, OlderSampleIsIgnored) {
  Watermark watermark;
  watermark.Add(T(1000), 100);
  watermark.Add(T(500), 200);
  ASSERT_EQ(watermark.size(), 1u);
  EXPECT_EQ(watermark.newest().position, 100u);
}

TEST(WatermarkTest, ClearForgetsEverything) {
  Watermark watermark = Build(kSteady);
  watermark.Clear();
  EXPECT_TRUE(watermark.empty());
  EXPECT_DOUBLE_EQ(watermark.LagSeconds(0, T(9000)), 0.0);
}

struct AtOrAfterCase {
  int64_t t_ms;
  std::optional<uint64_t> want;
};

TEST(WatermarkTest, SampleAtOrAfter) {
  const Watermark watermark = Build(kSteady);
  const std::vector<AtOrAfterCase> cases = {
      {-100, 0},  {0, 0},       {1, 250},     {250, 250},
      {251, 500}, {1499, 1500}, {1500, 1500}, {1501, std::nullopt}};
  for (const auto& c : cases) EXPECT_EQ(watermark.SampleAtOrAfter(T(c.t_ms)), c.want) << c.t_ms;
}

TEST(WatermarkTest, SampleAtOrAfterInsideAnIdleRun) {
  // The run [1000, 9000] at position 700 is stored as its ends; any time inside it maps to 700.
  const Watermark watermark =
      Build({{0, 100}, {1000, 700}, {3000, 700}, {5000, 700}, {9000, 700}, {9250, 800}});
  EXPECT_EQ(watermark.size(), 4u);
  EXPECT_EQ(watermark.SampleAtOrAfter(T(4000)), 700u);
  EXPECT_EQ(watermark.SampleAtOrAfter(T(9000)), 700u);
  EXPECT_EQ(watermark.SampleAtOrAfter(T(9001)), 800u);
}

TEST(WatermarkTest, SampleAtOrAfterAcrossWrapAround) {
  Watermark watermark(3);
  for (int64_t i = 0; i < 7; ++i) watermark.Add(T(i * 100), static_cast<uint64_t>(i));
  // Kept: (400, 4), (500, 5), (600, 6).
  EXPECT_EQ(watermark.SampleAtOrAfter(T(0)), 4u);
  EXPECT_EQ(watermark.SampleAtOrAfter(T(450)), 5u);
  EXPECT_EQ(watermark.SampleAtOrAfter(T(600)), 6u);
  EXPECT_EQ(watermark.SampleAtOrAfter(T(601)), std::nullopt);
}

}  // namespace
}  // namespace nerava::routing
