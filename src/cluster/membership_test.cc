#include "src/cluster/membership.h"

#include <vector>

#include "gtest/gtest.h"
#include "src/common/log.h"
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
  EXPECT_TRUE(m.RecordContact(1));   // dead until now: the caller ends its link's backoff
  EXPECT_FALSE(m.RecordContact(1));  // already alive
  m.RecordFailure(1);
  EXPECT_EQ(m.alive_mask(), 0b001u);
  m.RecordFailure(0);  // self never dies
  EXPECT_EQ(m.alive_mask(), 0b001u);
  EXPECT_FALSE(m.RecordContact(0));
  EXPECT_TRUE(m.RecordContact(1));
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

std::vector<Member> Named(std::vector<std::string> ids) {
  std::vector<Member> out;
  for (size_t i = 0; i < ids.size(); ++i) {
    out.push_back(Member{ids[i], "127.0.0.1:" + std::to_string(8000 + i), NodeSeed(ids[i])});
  }
  return out;
}

TEST(MembershipTest, JoinersGetSlotsAndAreAliveAtOnce) {
  FakeClock clock;
  Membership m(Named({"a"}), 0, &clock, kSecond);
  EXPECT_EQ(m.size(), 1);
  EXPECT_TRUE(m.HasQuorum());
  std::vector<std::pair<int, std::string>> seen;
  const MembershipChange change =
      m.SetMembers(Named({"a", "b", "c"}),
                   [&](int slot, const Member& member) { seen.emplace_back(slot, member.id); });
  EXPECT_EQ(change.joined, (std::vector<std::string>{"b", "c"}));
  EXPECT_TRUE(change.left.empty());
  EXPECT_EQ(seen, (std::vector<std::pair<int, std::string>>{{1, "b"}, {2, "c"}}));
  EXPECT_EQ(m.size(), 3);
  EXPECT_EQ(m.slots(), 3);
  EXPECT_EQ(m.alive_mask(), 0b111u);
  EXPECT_EQ(m.SlotOf("c"), 2);
  EXPECT_EQ(m.member(2).seed, NodeSeed("c"));
  EXPECT_EQ(m.joins(), 2u);
  // The same list again changes nothing.
  EXPECT_TRUE(m.SetMembers(Named({"a", "b", "c"})).empty());
}

// Deaths, returns and the quorum are logged when they change, not on every message.
TEST(MembershipTest, LogsTransitionsOnly) {
  common::LogCapture log;
  FakeClock clock;
  Membership m(Named({"a", "b", "c"}), 0, &clock, kSecond);
  for (int i = 0; i < 10; ++i) {  // heartbeats from b and c
    m.RecordContact(1);
    m.RecordContact(2);
    m.Tick();
  }
  EXPECT_EQ(log.Events("peer_alive").size(), 2u);
  ASSERT_EQ(log.Events("quorum_reached").size(), 1u);
  EXPECT_NE(log.Events("quorum_reached")[0].find("alive=2 members=3"), std::string::npos)
      << log.Events("quorum_reached")[0];

  m.RecordFailure(1);  // b's call fails: dead at once; a and c still make a majority
  m.RecordFailure(1);
  ASSERT_EQ(log.Events("peer_dead").size(), 1u);
  EXPECT_NE(log.Events("peer_dead")[0].find("peer=b why=\"call failed\" alive=2 members=3"),
            std::string::npos)
      << log.Events("peer_dead")[0];
  EXPECT_TRUE(log.Events("quorum_lost").empty());

  clock.Advance(2 * kSecond);  // c falls silent too
  m.Tick();
  m.Tick();
  ASSERT_EQ(log.Events("peer_dead").size(), 2u);
  EXPECT_NE(log.Events("peer_dead")[1].find("peer=c why=silent"), std::string::npos);
  ASSERT_EQ(log.Events("quorum_lost").size(), 1u);
  EXPECT_NE(log.Events("quorum_lost")[0].find("alive=1 members=3"), std::string::npos);

  EXPECT_TRUE(m.RecordContact(2));  // c is back: so is the quorum
  EXPECT_FALSE(m.RecordContact(2));
  EXPECT_EQ(log.Events("peer_alive").size(), 3u);
  EXPECT_EQ(log.Events("quorum_reached").size(), 2u);
  EXPECT_EQ(log.lines().size(), 8u);
}

TEST(MembershipTest, LeaversStopCountingForTheQuorum) {
  FakeClock clock;
  Membership m(Named({"a", "b", "c", "d", "e"}), 0, &clock, kSecond);
  // Only self alive: 1 of 5 is no majority.
  EXPECT_FALSE(m.HasQuorum());
  const MembershipChange change = m.SetMembers(Named({"a", "b"}));
  EXPECT_EQ(change.left, (std::vector<std::string>{"c", "d", "e"}));
  EXPECT_EQ(m.size(), 2);
  EXPECT_EQ(m.member_mask(), 0b00011u);
  EXPECT_EQ(m.leaves(), 3u);
  EXPECT_FALSE(m.HasQuorum());  // b is a member but not heard from
  m.RecordContact(1);
  EXPECT_TRUE(m.HasQuorum());
  // A leaver's late message does not make it alive again.
  m.RecordContact(3);
  EXPECT_EQ(m.alive_mask(), 0b00011u);
  // A member that joins again gets its old slot back.
  const MembershipChange back = m.SetMembers(Named({"a", "b", "c", "d", "e"}));
  EXPECT_EQ(back.joined, (std::vector<std::string>{"c", "d", "e"}));
  EXPECT_TRUE(back.slots.empty());  // same slots, same addresses
  EXPECT_EQ(m.SlotOf("d"), 3);
}

TEST(MembershipTest, SelfStaysUntilItLeaves) {
  FakeClock clock;
  Membership m(Named({"a", "b"}), 0, &clock, kSecond);
  m.SetMembers(Named({"b"}));  // not registered yet, say
  EXPECT_TRUE(m.is_member(0));
  m.SetLeaving();
  EXPECT_FALSE(m.is_member(0));
  EXPECT_EQ(m.alive_mask() & 1u, 0u);
  // A leaving node owns nothing: every key goes to a member that stays.
  m.RecordContact(1);
  for (uint64_t key = 1; key < 100; ++key) {
    EXPECT_EQ(m.Owner(key * 0x9E3779B97F4A7C15ULL, m.alive_mask()), 1);
  }
}

TEST(MembershipTest, AnAddressChangeIsReported) {
  FakeClock clock;
  Membership m(Named({"a", "b"}), 0, &clock, kSecond);
  std::vector<Member> moved = Named({"a", "b"});
  moved[1].address = "127.0.0.1:9999";
  std::string address;
  const MembershipChange change =
      m.SetMembers(moved, [&](int slot, const Member& member) { address = member.address; });
  EXPECT_EQ(change.slots, std::vector<int>{1});
  EXPECT_TRUE(change.joined.empty());
  EXPECT_EQ(address, "127.0.0.1:9999");
  EXPECT_EQ(m.member(1).address, "127.0.0.1:9999");
}

TEST(MembershipTest, SlotsOfLongGoneMembersAreReused) {
  FakeClock clock;
  std::vector<std::string> ids;
  for (int i = 0; i < kMaxMembers; ++i) {
    ids.push_back("n" + std::to_string(100 + i));
  }
  Membership m(Named(ids), 0, &clock, kSecond);
  // n101 leaves first, then n102; a newcomer takes n101's slot (gone longest).
  std::vector<std::string> without = ids;
  without.erase(without.begin() + 1);
  m.SetMembers(Named(without));
  clock.Advance(kSecond);
  without.erase(without.begin() + 1);
  m.SetMembers(Named(without));
  without.push_back("newcomer");
  const MembershipChange change = m.SetMembers(Named(without));
  EXPECT_EQ(change.joined, std::vector<std::string>{"newcomer"});
  EXPECT_EQ(m.SlotOf("newcomer"), 1);
  EXPECT_EQ(m.SlotOf("n101"), -1);
  // A 65th member is refused with a clear error.
  without.push_back("n102");
  without.push_back("one-too-many");
  const MembershipChange full = m.SetMembers(Named(without));
  EXPECT_NE(full.error.find("at most 64 members"), std::string::npos) << full.error;
}

}  // namespace
}  // namespace floodgate::cluster
