// ClusterStore over an in-process fake transport (no sockets, fake clock, heartbeats run by the
// test). The real transport is tested in tcp_peer_transport_test.cc.

#include "src/cluster/cluster_store.h"

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "src/cluster/peer_wire.h"
#include "src/service/top_refused.h"
#include "testing/fake_clock.h"
#include "testing/fake_peer_transport.h"

namespace floodgate::cluster {
namespace {

constexpr int64_t kSecond = 1'000'000'000;

StoreOp Op(uint64_t key, uint64_t limit, FailureMode failure_mode = FailureMode::kLocal,
           Consistency consistency = Consistency::kExact) {
  StoreOp op;
  op.key_hash = key;
  op.spec.algorithm = Algorithm::kFixedWindow;
  op.spec.requests_per_period = limit;
  op.spec.period_ns = 3600 * kSecond;
  op.failure_mode = failure_mode;
  op.consistency = consistency;
  return op;
}

uint64_t Key(uint64_t i) { return i * 0x9E3779B97F4A7C15ULL; }

class ClusterStoreTest : public ::testing::Test {
 protected:
  static constexpr int kMembers = 3;

  ClusterStoreTest() : network_(kMembers, &clock_) {
    clock_.Advance(100 * kSecond);
    auto members = ParsePeers("n0=127.0.0.1:1,n1=127.0.0.1:2,n2=127.0.0.1:3");
    EXPECT_TRUE(members.ok()) << members.status();
    members_ = *members;
    locals_.resize(kMembers);
    nodes_.resize(kMembers);
  }

  // Starts (or restarts, with an empty store) node i.
  void StartNode(int i) {
    nodes_[i].reset();
    locals_[i] = *NewShardedStore({});
    ClusterOptions options;
    options.self_id = absl::StrCat("n", i);
    options.members = members_;
    options.clock = &clock_;
    options.heartbeat_thread = false;
    options.replicas = replicas_;
    auto store = ClusterStore::Start(options, locals_[i].get(), network_.TransportFor(i));
    ASSERT_TRUE(store.ok()) << store.status();
    nodes_[i] = std::move(*store);
  }

  // Starts every node and runs a heartbeat round on each: every node sees every other alive.
  void StartAll() {
    for (int i = 0; i < kMembers; ++i) {
      StartNode(i);
    }
    Heartbeats();
  }

  void Heartbeats() {
    for (auto& node : nodes_) {
      if (node != nullptr) {
        node->HeartbeatRound();
      }
    }
  }

  bool Check(int node, const StoreOp& op) {
    Decision d;
    nodes_[node]->Apply(absl::MakeConstSpan(&op, 1), clock_.NowNs(), absl::MakeSpan(&d, 1));
    return d.allowed;
  }

  int Checks(int node, const StoreOp& op, int n) {
    int allowed = 0;
    for (int i = 0; i < n; ++i) {
      allowed += Check(node, op);
    }
    return allowed;
  }

  // Returns the owner of `key` in node 0's view.
  // Spends `spent` of a limit-10 key another node owns, from node 0; loses the owner by `lose`;
  // expects 10 more checks to pass 10 - spent: the next owner was the key's replica and goes on
  // from the owner's count. Returns the owner.
  int ExpectFailover(uint64_t key, int spent, const std::function<void(int owner)>& lose) {
    const int owner = OwnerOf(key);
    EXPECT_EQ(Checks(0, Op(key, 10), spent), spent);
    lose(owner);
    EXPECT_EQ(Checks(0, Op(key, 10), 10), 10 - spent);
    EXPECT_GE(nodes_[0]->GetClusterStats().failovers, 1u);
    return owner;
  }

  int OwnerOf(uint64_t key) const {
    const Membership& m = nodes_[0]->membership();
    return m.Owner(key, m.alive_mask());
  }

  // Returns a key that a node other than node 0 owns.
  uint64_t KeyOwnedElsewhere() const {
    for (uint64_t i = 1;; ++i) {
      if (OwnerOf(Key(i)) != 0) {
        return Key(i);
      }
    }
  }

  int replicas_ = ClusterOptions{}.replicas;
  testing::FakeClock clock_;
  testing::FakePeerNetwork network_;
  std::vector<Member> members_;
  std::vector<std::unique_ptr<LocalStore>> locals_;
  std::vector<std::unique_ptr<ClusterStore>> nodes_;
};

TEST_F(ClusterStoreTest, EveryNodeSharesOneCountPerKey) {
  StartAll();
  for (uint64_t key = 1; key <= 20; ++key) {
    EXPECT_EQ(Checks(0, Op(Key(key), 10), 10) + Checks(1, Op(Key(key), 10), 10) +
                  Checks(2, Op(Key(key), 10), 10),
              10)
        << key;
    // Decided on its owner: the owner's store holds the key's state.
    StateRecord held;
    EXPECT_TRUE(locals_[OwnerOf(Key(key))]->GetState(Key(key), clock_.NowNs(), &held)) << key;
  }
  // The keys were spread over owners, and states were replicated.
  uint64_t owned = 0;
  uint64_t replicated = 0;
  for (auto& node : nodes_) {
    const ClusterStats stats = node->GetClusterStats();
    EXPECT_TRUE(stats.quorum);
    owned += stats.owned_ops;
    EXPECT_GT(stats.owned_ops, 0u);
    for (const PeerStats& peer : stats.peers) {
      replicated += peer.replicated_states;
    }
  }
  EXPECT_EQ(owned, 20u * 30);
  EXPECT_GT(replicated, 0u);
}

TEST_F(ClusterStoreTest, FailsOverToTheNextOwnerWhenTheOwnerIsDead) {
  StartAll();
  const int owner = ExpectFailover(KeyOwnedElsewhere(), 4,
                                   [&](int owner) { network_.SetUnreachable(owner, true); });
  EXPECT_FALSE((nodes_[0]->membership().alive_mask() >> owner) & 1);
  EXPECT_EQ(nodes_[0]->GetClusterStats().failure_mode_ops, 0u);
}

TEST_F(ClusterStoreTest, FailsOverWhenTheOwnerTimesOut) {
  StartAll();
  ExpectFailover(KeyOwnedElsewhere(), 3, [&](int owner) { network_.SetSlowFail(owner, true); });
}

TEST_F(ClusterStoreTest, WithoutAMajorityEachLimitFollowsItsFailureMode) {
  StartNode(0);  // the others never come up
  Heartbeats();
  EXPECT_FALSE(nodes_[0]->GetClusterStats().quorum);
  EXPECT_EQ(Checks(0, Op(1, 10, FailureMode::kOpen), 30), 30);
  EXPECT_EQ(Checks(0, Op(2, 10, FailureMode::kClosed), 30), 0);
  EXPECT_EQ(Checks(0, Op(3, 10, FailureMode::kLocal), 30), 3);  // 10 / 3 members
  EXPECT_EQ(nodes_[0]->GetClusterStats().failure_mode_ops, 90u);
}

// A closed failure mode's refusal says that the owner could not be asked, so that front ends
// can tell it from the limit being spent; the limit's own refusals and the other modes do not.
TEST_F(ClusterStoreTest, AClosedRefusalSaysTheOwnerWasUnavailable) {
  StartNode(0);  // the others never come up: no majority
  Heartbeats();
  auto decide = [&](const StoreOp& op) {
    Decision d;
    nodes_[0]->Apply(absl::MakeConstSpan(&op, 1), clock_.NowNs(), absl::MakeSpan(&d, 1));
    return d;
  };
  const Decision closed = decide(Op(4, 10, FailureMode::kClosed));
  EXPECT_FALSE(closed.allowed);
  EXPECT_TRUE(closed.unavailable);
  EXPECT_GT(closed.retry_after_ns, 0);
  EXPECT_FALSE(decide(Op(5, 10, FailureMode::kOpen)).unavailable);
  const Decision spent = decide(Op(6, 0, FailureMode::kLocal));  // the local share refuses
  EXPECT_FALSE(spent.allowed);
  EXPECT_FALSE(spent.unavailable);
}

TEST_F(ClusterStoreTest, LocalConsistencyUsesTheShareThenTheOwner) {
  StartAll();
  // All traffic on one node: 3 from its share, the rest of the 9 from the owner's count (the
  // fake delivers each share hit's report before the next check).
  EXPECT_EQ(Checks(0, Op(77, 9, FailureMode::kLocal, Consistency::kLocal), 30), 9);
  const ClusterStats stats = nodes_[0]->GetClusterStats();
  EXPECT_EQ(stats.local_share_ops, 30u);
  EXPECT_GT(stats.local_share_refills, 0u);
}

// A check a front end sheds (past its in-flight bounds) never waits for another node: a key
// another node owns goes by its failure mode, a key this node owns is still decided exactly.
TEST_F(ClusterStoreTest, ShedChecksDecideOwnedKeysExactlyAndOthersByFailureMode) {
  StartAll();
  const Membership& membership = nodes_[0]->membership();
  int owned_here = 0;
  int owned_elsewhere = 0;
  for (uint64_t key = 1; key <= 30; ++key) {
    for (FailureMode mode : {FailureMode::kOpen, FailureMode::kClosed}) {
      StoreOp op = Op(Key(key) + static_cast<uint64_t>(mode), 5, mode);
      op.shed = true;
      const int allowed = Checks(0, op, 12);
      const bool owner_here =
          membership.Owner(op.key_hash, membership.alive_mask()) == membership.self();
      if (owner_here) {
        EXPECT_EQ(allowed, 5) << key;
      } else {
        EXPECT_EQ(allowed, mode == FailureMode::kOpen ? 12 : 0) << key;
      }
      (owner_here ? owned_here : owned_elsewhere) += 1;
    }
  }
  EXPECT_GT(owned_here, 0);
  EXPECT_GT(owned_elsewhere, 0);
  const ClusterStats stats = nodes_[0]->GetClusterStats();
  EXPECT_EQ(stats.shed_ops, static_cast<uint64_t>(owned_elsewhere) * 12);
  EXPECT_EQ(stats.failure_mode_ops, stats.shed_ops);
  // The same keys, not shed, go to their owners, which counted none of the shed checks above.
  for (uint64_t key = 1; key <= 30; ++key) {
    StoreOp op = Op(Key(key) + 1, 5, FailureMode::kOpen);
    const bool owner_here =
        membership.Owner(op.key_hash, membership.alive_mask()) == membership.self();
    if (!owner_here) {
      EXPECT_TRUE(Check(0, op)) << key;
    }
  }
}

// An owner that restarts into a running cluster fetches the state of keys it lacks from their
// replicas before deciding them.
TEST_F(ClusterStoreTest, RestartedOwnerFetchesStateFromReplicas) {
  StartAll();
  const uint64_t key = KeyOwnedElsewhere();
  const int owner = OwnerOf(key);
  EXPECT_EQ(Checks(0, Op(key, 10), 6), 6);
  clock_.Advance(kSecond);  // the others started well before the restart
  StartNode(owner);         // an empty store
  nodes_[owner]->HeartbeatRound();
  EXPECT_EQ(Checks(owner, Op(key, 10), 10), 4);
  EXPECT_GT(nodes_[owner]->GetClusterStats().warmup_fetches, 0u);
}

// Concurrency slots under lease `token` (a check acquires, a release frees), 2 slots per key.
StoreOp LeaseOp(uint64_t key, uint64_t token, bool release = false) {
  StoreOp op = Op(key, 2);
  op.spec.algorithm = Algorithm::kConcurrency;
  op.spec.period_ns = 60 * kSecond;
  op.lease = token;
  op.kind = release ? StoreOp::Kind::kRelease : StoreOp::Kind::kCheck;
  return op;
}

// Issue 11, in a cluster: a release goes to the key's owner like a check, and frees the slots
// of its own lease there, once, from whichever node it arrives at; a made-up or replayed token
// frees nothing (the limiter answers FailedPrecondition, HTTP 409).
TEST_F(ClusterStoreTest, AReleaseFreesItsOwnLeaseOnTheOwnerOnce) {
  StartAll();
  const uint64_t key = KeyOwnedElsewhere();
  ASSERT_TRUE(Check(0, LeaseOp(key, 7)));
  ASSERT_TRUE(Check(1, LeaseOp(key, 8)));
  EXPECT_FALSE(Check(2, LeaseOp(key, 9))) << "both slots held";
  EXPECT_FALSE(Check(2, LeaseOp(key, 5, /*release=*/true))) << "forged";
  EXPECT_FALSE(Check(2, LeaseOp(key, 9))) << "the forged release freed nothing";
  EXPECT_TRUE(Check(2, LeaseOp(key, 7, /*release=*/true))) << "released from another node";
  EXPECT_FALSE(Check(0, LeaseOp(key, 7, /*release=*/true))) << "replayed";
  EXPECT_TRUE(Check(2, LeaseOp(key, 9)));
  EXPECT_FALSE(Check(0, LeaseOp(key, 10))) << "the replay did not free lease 8's slot";
  // The token crosses the peer wire.
  peer::v1::Op wire;
  ToProto(LeaseOp(key, 0xFEEDFACECAFEBEEF, /*release=*/true), &wire);
  absl::StatusOr<StoreOp> back = FromProto(wire);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->lease, 0xFEEDFACECAFEBEEFu);
  EXPECT_EQ(back->kind, StoreOp::Kind::kRelease);
}

// Issue 11: with a replica, a release on the owner used to be undone. The owner replicated its
// lowered state; the replica merged it with core::Merge, which never lowers a state, kept the
// released slots and sent them back as a correction. Now the owner's record says what it held
// before the release (StateRecord::lowered), and a replica in step takes the lowered state.
TEST_F(ClusterStoreTest, ReleaseSurvivesReplication) {
  StartAll();
  const uint64_t key = KeyOwnedElsewhere();
  ASSERT_TRUE(Check(0, LeaseOp(key, 7)));
  ASSERT_TRUE(Check(0, LeaseOp(key, 8)));
  ASSERT_TRUE(Check(0, LeaseOp(key, 7, /*release=*/true)));
  EXPECT_TRUE(Check(0, LeaseOp(key, 9))) << "lease 7's slot was freed";
}

// What a failover does to outstanding leases (docs/cluster.md, "Concurrency leases"): the
// replica that takes over has the key's counts (replicated) but not its lease book, so it never
// admits more than the limit, a lease taken before the failover frees nothing there (409) and
// its slots age out with the lease period, and leases taken on it work as usual.
TEST_F(ClusterStoreTest, AfterAFailoverOldLeasesAgeOutAndNewOnesWork) {
  StartAll();
  const uint64_t key = KeyOwnedElsewhere();
  const int owner = OwnerOf(key);
  ASSERT_TRUE(Check(0, LeaseOp(key, 7)));
  network_.SetUnreachable(owner, true);
  EXPECT_FALSE(Check(0, LeaseOp(key, 7, /*release=*/true))) << "unknown to the acting owner";
  ASSERT_TRUE(Check(0, LeaseOp(key, 8)));
  EXPECT_FALSE(Check(0, LeaseOp(key, 9))) << "lease 7's slot is still counted: fail closed";
  EXPECT_TRUE(Check(0, LeaseOp(key, 8, /*release=*/true)));
  EXPECT_FALSE(Check(0, LeaseOp(key, 8, /*release=*/true))) << "replayed";
  ASSERT_TRUE(Check(0, LeaseOp(key, 9)));
  EXPECT_FALSE(Check(0, LeaseOp(key, 10)));
  // Within two lease periods lease 7's slot ages out (lease 9's too: it was never released).
  clock_.Advance(120 * kSecond);
  Heartbeats();
  EXPECT_TRUE(Check(0, LeaseOp(key, 11)));
  EXPECT_TRUE(Check(0, LeaseOp(key, 12)));
  EXPECT_FALSE(Check(0, LeaseOp(key, 13)));
}

// The real grpc++ transport: servers listen on port 0 and report the port they got; a Forward,
// a Fetch and a Ping go from one to the other.
// ApplyAsync over the fake transport: a key another node owns is suspended until the caller's
// loop runs the owner's answer; a key this node owns is decided inline.
class ClusterStoreAsyncTest : public ClusterStoreTest {
 protected:
  struct Outcome {
    bool done = false;
    bool committed = false;
    Decision decision;
  };
  // Starts an async check of `op` on node 0; its outcome fills once the loop runs.
  std::shared_ptr<Outcome> Start(const StoreOp& op) {
    auto outcome = std::make_shared<Outcome>();
    nodes_[0]->ApplyAsync(absl::MakeConstSpan(&op, 1), clock_.NowNs(),
                          absl::MakeSpan(&outcome->decision, 1), loop_, [outcome](bool committed) {
                            outcome->done = true;
                            outcome->committed = committed;
                          });
    return outcome;
  }
  void RunLoop() {
    loop_.restart();
    loop_.run();
  }
  boost::asio::io_context loop_;
};

TEST_F(ClusterStoreAsyncTest, OwnedKeyIsDecidedInlineAndAForwardedOneResumesOnTheLoop) {
  StartAll();
  EXPECT_TRUE(nodes_[0]->MaySuspend());
  uint64_t owned = 0;
  for (uint64_t i = 1; owned == 0; ++i) {
    if (OwnerOf(Key(i)) == 0) {
      owned = Key(i);
    }
  }
  std::shared_ptr<Outcome> local = Start(Op(owned, 10));
  EXPECT_TRUE(local->done);
  EXPECT_TRUE(local->decision.allowed);
  EXPECT_EQ(network_.async_forwards(), 0);

  const uint64_t key = KeyOwnedElsewhere();
  std::shared_ptr<Outcome> forwarded = Start(Op(key, 2));
  EXPECT_FALSE(forwarded->done);  // suspended until the loop runs the answer
  EXPECT_EQ(network_.async_forwards(), 1);
  RunLoop();
  EXPECT_TRUE(forwarded->done);
  EXPECT_TRUE(forwarded->committed);
  EXPECT_TRUE(forwarded->decision.allowed);
  // The owner's count is the one Apply uses: 2 allowed in all.
  EXPECT_TRUE(Check(0, Op(key, 2)));
  EXPECT_FALSE(Check(0, Op(key, 2)));
}

TEST_F(ClusterStoreAsyncTest, DeadOwnerFailsOverToTheReplicaOnTheLoop) {
  StartAll();
  const uint64_t key = KeyOwnedElsewhere();
  const int owner = OwnerOf(key);
  EXPECT_EQ(Checks(0, Op(key, 10), 4), 4);
  network_.SetUnreachable(owner, true);
  int allowed = 0;
  for (int i = 0; i < 10; ++i) {
    std::shared_ptr<Outcome> outcome = Start(Op(key, 10));
    RunLoop();
    ASSERT_TRUE(outcome->done);
    allowed += outcome->decision.allowed;
  }
  EXPECT_EQ(allowed, 6);  // the replica goes on from the owner's count
  EXPECT_GE(nodes_[0]->GetClusterStats().failovers, 1u);
  EXPECT_FALSE((nodes_[0]->membership().alive_mask() >> owner) & 1);
}

TEST_F(ClusterStoreAsyncTest, TimedOutForwardFailsOverAndNoMajorityFollowsTheFailureMode) {
  StartAll();
  const uint64_t key = KeyOwnedElsewhere();
  network_.SetSlowFail(OwnerOf(key), true);
  std::shared_ptr<Outcome> outcome = Start(Op(key, 10));
  RunLoop();
  EXPECT_TRUE(outcome->done);
  EXPECT_TRUE(outcome->decision.allowed);
  EXPECT_GE(nodes_[0]->GetClusterStats().failovers, 1u);

  // Both others unreachable: no majority, so each op goes by its failure mode, inline.
  network_.SetSlowFail(OwnerOf(key), false);
  network_.SetUnreachable(1, true);
  network_.SetUnreachable(2, true);
  for (int i = 0; i < 3; ++i) {
    Heartbeats();
    clock_.Advance(2 * kSecond);
  }
  Heartbeats();
  ASSERT_FALSE(nodes_[0]->GetClusterStats().quorum);
  std::shared_ptr<Outcome> closed = Start(Op(Key(999), 10, FailureMode::kClosed));
  EXPECT_TRUE(closed->done);
  EXPECT_FALSE(closed->decision.allowed);
  EXPECT_TRUE(closed->decision.unavailable);
  std::shared_ptr<Outcome> open = Start(Op(Key(998), 10, FailureMode::kOpen));
  EXPECT_TRUE(open->done);
  EXPECT_TRUE(open->decision.allowed);
}

TEST_F(ClusterStoreAsyncTest, HeldAnswerKeepsTheCheckSuspended) {
  StartAll();
  network_.HoldAnswers(true);
  std::shared_ptr<Outcome> outcome = Start(Op(KeyOwnedElsewhere(), 10));
  RunLoop();
  EXPECT_FALSE(outcome->done);
  EXPECT_EQ(network_.held_answers(), 1u);
  network_.ReleaseAnswers();
  RunLoop();
  EXPECT_TRUE(outcome->done);
  EXPECT_TRUE(outcome->decision.allowed);
}

// consistency: local over ApplyAsync: the share decides inline; once it is spent the check is
// suspended while this node's reports are flushed (FlushReportsAsync), then asks the owner.
TEST_F(ClusterStoreAsyncTest, SpentLocalShareFlushesReportsThenAsksTheOwnerOnTheLoop) {
  StartAll();
  const uint64_t key = KeyOwnedElsewhere();
  const StoreOp op = Op(key, 9, FailureMode::kLocal, Consistency::kLocal);
  for (int i = 0; i < 3; ++i) {  // 9 / 3 members
    std::shared_ptr<Outcome> share = Start(op);
    EXPECT_TRUE(share->done) << i;
    EXPECT_TRUE(share->decision.allowed) << i;
  }
  EXPECT_EQ(network_.async_forwards(), 0);
  int allowed = 3;
  for (int i = 0; i < 10; ++i) {
    std::shared_ptr<Outcome> refill = Start(op);
    EXPECT_FALSE(refill->done) << i;  // waits for the flush, on the loop
    RunLoop();
    ASSERT_TRUE(refill->done) << i;
    allowed += refill->decision.allowed ? 1 : 0;
  }
  // The owner counted the 3 share hits before the refills: 9 in all, not 12.
  EXPECT_EQ(allowed, 9);
  EXPECT_GT(network_.async_forwards(), 0);
  // The io thread never waited for a flush.
  EXPECT_GT(network_.async_flushes(), 0);
  EXPECT_EQ(network_.blocking_flushes(), 0);
  EXPECT_GT(nodes_[0]->GetClusterStats().local_share_refills, 0u);
}

}  // namespace
}  // namespace floodgate::cluster

namespace floodgate::cluster {
namespace {

// GET /v1/top's cluster part: each node's refusals (fed to a real service::TopRefused, as the
// pipeline feeds it) merged by summing per key; a member that cannot answer is listed missing.
TEST_F(ClusterStoreTest, TopRefusedMergesEveryMembersSketch) {
  StartAll();
  std::vector<std::unique_ptr<service::TopRefused>> tops;
  for (int i = 0; i < kMembers; ++i) {
    tops.push_back(std::make_unique<service::TopRefused>(&clock_));
    nodes_[i]->SetTopRefusedSource([top = tops.back().get()] { return top->Snapshot(); });
  }
  const std::string alice = service::RefusalKey("api", {{"user", "alice"}});
  const std::string bob = service::RefusalKey("api", {{"user", "bob"}});
  for (int i = 0; i < 5; ++i) {
    tops[0]->Record(alice);
  }
  for (int i = 0; i < 7; ++i) {
    tops[1]->Record(alice);
  }
  tops[2]->Record(bob);

  ClusterTopRefused top = nodes_[0]->TopRefused(absl::Milliseconds(300), 20);
  EXPECT_EQ(top.nodes, (std::vector<std::string>{"n0", "n1", "n2"}));
  EXPECT_TRUE(top.missing.empty());
  EXPECT_EQ(top.top.total, 13u);
  ASSERT_EQ(top.top.keys.size(), 2u);
  EXPECT_EQ(top.top.keys[0], (core::TopKey{alice, 12, 0}));
  EXPECT_EQ(top.top.keys[1], (core::TopKey{bob, 1, 0}));

  // n2 unreachable: its refusals are missing, and it is named.
  network_.SetUnreachable(2, true);
  top = nodes_[1]->TopRefused(absl::Milliseconds(300), 1);
  EXPECT_EQ(top.nodes, (std::vector<std::string>{"n1", "n0"}));
  EXPECT_EQ(top.missing, std::vector<std::string>{"n2"});
  EXPECT_EQ(top.top.total, 12u);
  ASSERT_EQ(top.top.keys.size(), 1u);  // the limit
  EXPECT_EQ(top.top.keys[0].count, 12u);
}

}  // namespace
}  // namespace floodgate::cluster
