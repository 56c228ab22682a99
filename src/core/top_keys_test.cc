#include "src/core/top_keys.h"

#include <cstdint>
#include <map>
#include <random>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace floodgate::core {
namespace {

using ::testing::ElementsAre;

constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kT0 = 1'700'000'000 * kSec;  // on a slot boundary

TEST(SpaceSavingTest, ExactWhileKeysFit) {
  SpaceSaving sketch(4);
  for (int i = 0; i < 5; ++i) {
    sketch.Add("a");
  }
  sketch.Add("b");
  sketch.Add("b");
  sketch.Add("c");
  const TopSnapshot top = MergeTopSnapshots({TopSnapshot{sketch.Entries(), sketch.total()}}, 10);
  EXPECT_EQ(top.total, 8u);
  EXPECT_THAT(top.keys, ElementsAre(TopKey{"a", 5, 0}, TopKey{"b", 2, 0}, TopKey{"c", 1, 0}));
}

TEST(SpaceSavingTest, NewKeyInheritsTheSmallestCountAsError) {
  SpaceSaving sketch(2);
  sketch.Add("a");
  sketch.Add("a");
  sketch.Add("b");
  sketch.Add("c");  // replaces b (count 1): c = 2, error 1
  const TopSnapshot top = MergeTopSnapshots({TopSnapshot{sketch.Entries(), sketch.total()}}, 10);
  EXPECT_THAT(top.keys, ElementsAre(TopKey{"a", 2, 0}, TopKey{"c", 2, 1}));
  EXPECT_EQ(sketch.size(), 2u);
}

TEST(SpaceSavingTest, FindsHeavyHittersAmongManyKeysWithinTheBound) {
  // 100k additions: 3 heavy keys (5%, 3%, 2%) among uniformly random ones from 100k names.
  constexpr size_t kK = 128;
  constexpr int kN = 100'000;
  SpaceSaving sketch(kK);
  std::mt19937_64 rng(42);
  std::map<std::string, uint64_t> truth;
  for (int i = 0; i < kN; ++i) {
    const uint64_t r = rng() % 100;
    std::string key = r < 5   ? "heavy1"
                      : r < 8 ? "heavy2"
                      : r < 10 ? "heavy3"
                               : "k" + std::to_string(rng() % 100'000);
    ++truth[key];
    sketch.Add(key);
  }
  EXPECT_EQ(sketch.total(), static_cast<uint64_t>(kN));
  EXPECT_LE(sketch.size(), kK);  // memory bounded whatever the cardinality
  std::map<std::string, TopKey> found;
  for (const TopKey& key : sketch.Entries()) {
    found[key.key] = key;
    // The documented guarantee: count - error <= true <= count.
    EXPECT_LE(key.count - key.error, truth[key.key]) << key.key;
    EXPECT_GE(key.count, truth[key.key]) << key.key;
  }
  // Every key above N / k is present.
  for (const auto& [key, count] : truth) {
    if (count > kN / kK) {
      EXPECT_TRUE(found.contains(key)) << key << " occurred " << count;
    }
  }
  ASSERT_TRUE(found.contains("heavy1"));
  ASSERT_TRUE(found.contains("heavy2"));
  ASSERT_TRUE(found.contains("heavy3"));
  EXPECT_LE(found["heavy1"].error, static_cast<uint64_t>(kN / kK));
  // The top three are the heavy ones.
  const TopSnapshot top = MergeTopSnapshots({TopSnapshot{sketch.Entries(), sketch.total()}}, 3);
  ASSERT_EQ(top.keys.size(), 3u);
  EXPECT_EQ(top.keys[0].key, "heavy1");
  EXPECT_EQ(top.keys[1].key, "heavy2");
  EXPECT_EQ(top.keys[2].key, "heavy3");
}

TEST(MergeTopSnapshotsTest, SumsCountsAndErrorsPerKey) {
  TopSnapshot a{{TopKey{"x", 5, 1}, TopKey{"y", 2, 0}}, 7};
  TopSnapshot b{{TopKey{"x", 3, 2}, TopKey{"z", 9, 0}}, 12};
  const TopSnapshot merged = MergeTopSnapshots({a, b}, 2);
  EXPECT_EQ(merged.total, 19u);
  EXPECT_THAT(merged.keys, ElementsAre(TopKey{"z", 9, 0}, TopKey{"x", 8, 3}));
}

TEST(WindowedTopKeysTest, CoversTheLastMinuteAndForgetsOlderSlots) {
  WindowedTopKeys top(8);
  top.Add("old", kT0);
  top.Add("old", kT0 + 5 * kSec);
  top.Add("new", kT0 + 30 * kSec);
  TopSnapshot now = top.Snapshot(kT0 + 59 * kSec);
  EXPECT_EQ(now.total, 3u);
  EXPECT_THAT(now.keys, ElementsAre(TopKey{"old", 2, 0}, TopKey{"new", 1, 0}));
  // The first slot [T0, T0+10s) leaves the window once the seventh slot starts.
  now = top.Snapshot(kT0 + 60 * kSec);
  EXPECT_EQ(now.total, 1u);
  EXPECT_THAT(now.keys, ElementsAre(TopKey{"new", 1, 0}));
  // A slot's ring place is reused: the old counts are cleared, not added to.
  top.Add("again", kT0 + 61 * kSec);
  now = top.Snapshot(kT0 + 61 * kSec);
  EXPECT_EQ(now.total, 2u);
  EXPECT_THAT(now.keys, ElementsAre(TopKey{"again", 1, 0}, TopKey{"new", 1, 0}));
  // Long after: nothing.
  EXPECT_EQ(top.Snapshot(kT0 + 3600 * kSec).total, 0u);
  EXPECT_TRUE(top.Snapshot(kT0 + 3600 * kSec).keys.empty());
}

TEST(WindowedTopKeysTest, MemoryIsBoundedPerSlot) {
  WindowedTopKeys top(16);
  for (int i = 0; i < 10'000; ++i) {
    top.Add("key" + std::to_string(i), kT0 + (i % 60) * kSec);
  }
  const TopSnapshot now = top.Snapshot(kT0 + 59 * kSec);
  EXPECT_EQ(now.total, 10'000u);
  EXPECT_LE(now.keys.size(), 6u * 16u);
}

TEST(TruncateKeyTest, NeverSplitsACharacter) {
  EXPECT_EQ(TruncateKey("abcdef", 3), "abc");
  EXPECT_EQ(TruncateKey("ab", 3), "ab");
  // "é" is two bytes (C3 A9): cutting at 2 would split it.
  EXPECT_EQ(TruncateKey("a\xC3\xA9z", 2), "a");
  EXPECT_EQ(TruncateKey("a\xC3\xA9z", 3), "a\xC3\xA9");
}

}  // namespace
}  // namespace floodgate::core
