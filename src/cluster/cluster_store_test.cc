// ClusterStore with real peers in one process (loopback gRPC), a fake clock for decisions.

#include "src/cluster/cluster_store.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bit>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "testing/fake_clock.h"

namespace floodgate::cluster {
namespace {

constexpr int64_t kSecond = 1'000'000'000;

// Returns a free TCP port on 127.0.0.1 (bound, read and released).
int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

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

class ClusterStoreTest : public ::testing::Test {
 protected:
  // Starts nodes `running` of an `n`-member cluster.
  void StartCluster(int n, std::vector<int> running) {
    std::string spec;
    for (int i = 0; i < n; ++i) {
      absl::StrAppend(&spec, i ? "," : "", "n", i, "=127.0.0.1:", FreePort());
    }
    auto members = ParsePeers(spec);
    ASSERT_TRUE(members.ok()) << members.status();
    locals_.resize(n);
    nodes_.resize(n);
    for (int i : running) {
      locals_[i] = *NewShardedStore({});
      ClusterOptions options;
      options.self_id = absl::StrCat("n", i);
      options.members = *members;
      options.clock = &clock_;
      options.heartbeat = absl::Milliseconds(50);
      options.dead_after = absl::Milliseconds(300);
      auto store = ClusterStore::Start(options, locals_[i].get());
      ASSERT_TRUE(store.ok()) << store.status();
      nodes_[i] = std::move(*store);
    }
  }

  // Waits (bounded) until every running node sees `alive` members.
  void AwaitAlive(int alive) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    for (auto& node : nodes_) {
      while (node != nullptr && std::popcount(node->membership().alive_mask()) != alive &&
             absl::Now() < deadline) {
        absl::SleepFor(absl::Milliseconds(10));  // heartbeats run on real time
      }
    }
  }

  bool Check(int node, const StoreOp& op) {
    Decision d;
    nodes_[node]->Apply(absl::MakeConstSpan(&op, 1), clock_.NowNs(), absl::MakeSpan(&d, 1));
    return d.allowed;
  }

  testing::FakeClock clock_;
  std::vector<std::unique_ptr<LocalStore>> locals_;
  std::vector<std::unique_ptr<ClusterStore>> nodes_;
};

TEST_F(ClusterStoreTest, EveryNodeSharesOneCountPerKey) {
  StartCluster(3, {0, 1, 2});
  AwaitAlive(3);
  for (uint64_t key = 1; key <= 20; ++key) {
    int allowed = 0;
    for (int n = 0; n < 30; ++n) {
      allowed += Check(n % 3, Op(key * 0x9E3779B97F4A7C15ULL, 10));
    }
    EXPECT_EQ(allowed, 10) << key;
  }
  // The keys were spread over owners, and states were replicated.
  uint64_t owned = 0;
  uint64_t replicated = 0;
  for (auto& node : nodes_) {
    const ClusterStats stats = node->GetClusterStats();
    owned += stats.owned_ops;
    EXPECT_GT(stats.owned_ops, 0u);
    for (const PeerStats& peer : stats.peers) {
      replicated += peer.replicated_states;
    }
  }
  EXPECT_EQ(owned, 20u * 30);
  EXPECT_GT(replicated, 0u);
}

TEST_F(ClusterStoreTest, WithoutAMajorityEachLimitFollowsItsFailureMode) {
  StartCluster(3, {0});  // the others never come up
  EXPECT_FALSE(nodes_[0]->GetClusterStats().quorum);
  int open = 0;
  int closed = 0;
  int local = 0;
  for (int n = 0; n < 30; ++n) {
    open += Check(0, Op(1, 10, FailureMode::kOpen));
    closed += Check(0, Op(2, 10, FailureMode::kClosed));
    local += Check(0, Op(3, 10, FailureMode::kLocal));
  }
  EXPECT_EQ(open, 30);
  EXPECT_EQ(closed, 0);
  EXPECT_EQ(local, 3);  // 10 / 3 members
  EXPECT_EQ(nodes_[0]->GetClusterStats().failure_mode_ops, 90u);
}

TEST_F(ClusterStoreTest, LocalConsistencyUsesTheShareThenTheOwner) {
  StartCluster(3, {0, 1, 2});
  AwaitAlive(3);
  // All traffic on one node: 3 from its share, the rest of the 9 from the owner's count.
  int allowed = 0;
  for (int n = 0; n < 30; ++n) {
    allowed += Check(0, Op(77, 9, FailureMode::kLocal, Consistency::kLocal));
  }
  EXPECT_GE(allowed, 9);
  EXPECT_LE(allowed, 9 + 3);  // hits still being reported when the owner's count filled
  const ClusterStats stats = nodes_[0]->GetClusterStats();
  EXPECT_EQ(stats.local_share_ops, 30u);
  EXPECT_GT(stats.local_share_refills, 0u);
}

// A check a front end sheds (past its in-flight bounds) never waits for another node: a key
// another node owns goes by its failure mode, a key this node owns is still decided exactly.
TEST_F(ClusterStoreTest, ShedChecksDecideOwnedKeysExactlyAndOthersByFailureMode) {
  StartCluster(3, {0, 1, 2});
  AwaitAlive(3);
  const Membership& membership = nodes_[0]->membership();
  int owned_here = 0;
  int owned_elsewhere = 0;
  for (uint64_t key = 1; key <= 30; ++key) {
    const uint64_t hash = key * 0x9E3779B97F4A7C15ULL;
    for (FailureMode mode : {FailureMode::kOpen, FailureMode::kClosed}) {
      StoreOp op = Op(hash + static_cast<uint64_t>(mode), 5, mode);
      op.shed = true;
      int allowed = 0;
      for (int n = 0; n < 12; ++n) {
        allowed += Check(0, op);
      }
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
    StoreOp op = Op(key * 0x9E3779B97F4A7C15ULL + 1, 5, FailureMode::kOpen);
    const bool owner_here =
        membership.Owner(op.key_hash, membership.alive_mask()) == membership.self();
    if (!owner_here) {
      EXPECT_TRUE(Check(0, op)) << key;
    }
  }
}

}  // namespace
}  // namespace floodgate::cluster
