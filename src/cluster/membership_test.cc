#include "src/cluster/membership.h"

#include <vector>

#include "gtest/gtest.h"
#include "testing/fake_clock.h"

namespace floodgate::cluster {
namespace {

using ::floodgate::testing::FakeClock;

constexpr int64_t kSecond = 1'000'000'000;

std::vector<Member> Members(int n) {
  std::string spec;
  for (int i = 0; i < n; ++i) {
    spec += "n" + std::to_string(i) + "=127.0.0.1:" + std::to_string(7000 + i) + ",";
  }
  return *ParsePeers(spec);
}

TEST(ParsePeersTest, ParsesAndSorts) {
  auto members = ParsePeers("b=127.0.0.1:2, a=127.0.0.1:1");
  ASSERT_TRUE(members.ok()) << members.status();
  ASSERT_EQ(members->size(), 2u);
  EXPECT_EQ((*members)[0].id, "a");
  EXPECT_EQ((*members)[0].address, "127.0.0.1:1");
  EXPECT_EQ((*members)[0].seed, NodeSeed("a"));
}

TEST(ParsePeersTest, RejectsBadInput) {
  EXPECT_FALSE(ParsePeers("").ok());
  EXPECT_FALSE(ParsePeers("a").ok());
  EXPECT_FALSE(ParsePeers("=127.0.0.1:1").ok());
  EXPECT_FALSE(ParsePeers("a=127.0.0.1").ok());
  EXPECT_FALSE(ParsePeers("a=127.0.0.1:0").ok());
  EXPECT_FALSE(ParsePeers("a=127.0.0.1:70000").ok());
  EXPECT_FALSE(ParsePeers("a=127.0.0.1:1,a=127.0.0.1:2").ok());
}

TEST(MembershipTest, SelfIsAliveAndPeersStartDead) {
  FakeClock clock;
  Membership m(Members(3), 1, &clock, kSecond);
  EXPECT_EQ(m.alive_mask(), 0b010u);
  EXPECT_FALSE(Membership::HasQuorum(m.alive_mask(), 3));
  m.RecordContact(0);
  EXPECT_EQ(m.alive_mask(), 0b011u);
  EXPECT_TRUE(Membership::HasQuorum(m.alive_mask(), 3));
}

TEST(MembershipTest, SilentMemberDiesAfterTimeout) {
  FakeClock clock;
  Membership m(Members(3), 0, &clock, kSecond);
  m.RecordContact(1);
  m.RecordContact(2);
  clock.Advance(kSecond);
  m.Tick();
  EXPECT_EQ(m.alive_mask(), 0b111u);  // exactly at the timeout: still alive
  m.RecordContact(2);
  clock.Advance(1);
  m.Tick();
  EXPECT_EQ(m.alive_mask(), 0b101u);
  EXPECT_EQ(m.deaths(), 1u);
}

TEST(MembershipTest, FailureMarksDeadUntilContact) {
  FakeClock clock;
  Membership m(Members(3), 0, &clock, kSecond);
  m.RecordContact(1);
  m.RecordFailure(1);
  EXPECT_EQ(m.alive_mask(), 0b001u);
  m.RecordFailure(0);  // self never dies
  EXPECT_EQ(m.alive_mask(), 0b001u);
  m.RecordContact(1);
  EXPECT_EQ(m.alive_mask(), 0b011u);
}

TEST(MembershipTest, RankMatchesOwnerAndSkipsDead) {
  FakeClock clock;
  Membership m(Members(5), 0, &clock, kSecond);
  for (uint64_t key = 1; key < 2000; ++key) {
    const uint64_t hash = key * 0x9E3779B97F4A7C15ULL;
    int ranks[3];
    ASSERT_EQ(m.Rank(hash, 0b11111, absl::MakeSpan(ranks)), 3);
    EXPECT_EQ(ranks[0], m.Owner(hash, 0b11111));
    EXPECT_NE(ranks[0], ranks[1]);
    EXPECT_NE(ranks[1], ranks[2]);
    EXPECT_NE(ranks[0], ranks[2]);
    // Without the owner, the first replica owns the key and the order is otherwise kept.
    const uint64_t without = 0b11111 & ~(uint64_t{1} << ranks[0]);
    int next[2];
    ASSERT_EQ(m.Rank(hash, without, absl::MakeSpan(next)), 2);
    EXPECT_EQ(next[0], ranks[1]);
    EXPECT_EQ(next[1], ranks[2]);
  }
}

TEST(MembershipTest, OnlyTheLeaversKeysMove) {
  FakeClock clock;
  Membership m(Members(4), 0, &clock, kSecond);
  constexpr int kKeys = 20000;
  int moved = 0;
  int owned_by_leaver = 0;
  for (uint64_t key = 1; key <= kKeys; ++key) {
    const uint64_t hash = key * 0xD6E8FEB86659FD93ULL;
    const int before = m.Owner(hash, 0b1111);
    const int after = m.Owner(hash, 0b0111);
    owned_by_leaver += before == 3;
    moved += before != after;
  }
  EXPECT_EQ(moved, owned_by_leaver);
  // About 1/4 of the keys, within a loose statistical bound.
  EXPECT_GT(owned_by_leaver, kKeys / 4 - kKeys / 20);
  EXPECT_LT(owned_by_leaver, kKeys / 4 + kKeys / 20);
}

}  // namespace
}  // namespace floodgate::cluster
