// EtcdDiscovery against a real etcd (testing/etcd_server.h): members see each other, leave at
// once on Deregister and after the lease TTL on a crash, keep their list while etcd is down and
// come back (registered again) when it returns.
//
// Waits are on conditions with deadlines: on_change results (Recorder::WaitFor) or status()
// (PollUntil, a bounded poll); no sleep stands in for synchronisation.

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "src/discovery/etcd_client.h"
#include "src/discovery/etcd_discovery.h"
#include "testing/etcd_server.h"

namespace floodgate::discovery {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;

// Every list a discovery reported, with waits on the latest.
class Recorder {
 public:
  Discovery::OnChange Callback() {
    return [this](const std::vector<Node>& members) {
      absl::MutexLock lock(&mu_);
      lists_.push_back(members);
    };
  }

  // Waits until the latest list has exactly `ids` (in order); false after `timeout`.
  bool WaitFor(const std::vector<std::string>& ids, milliseconds timeout) {
    absl::MutexLock lock(&mu_);
    struct Args {
      Recorder* self;
      const std::vector<std::string>* ids;
    } args{this, &ids};
    return mu_.AwaitWithTimeout(absl::Condition(
                                    +[](Args* a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(a->self->mu_) {
                                      return !a->self->lists_.empty() &&
                                             Ids(a->self->lists_.back()) == *a->ids;
                                    },
                                    &args),
                                absl::FromChrono(timeout));
  }

  std::vector<std::string> Latest() {
    absl::MutexLock lock(&mu_);
    return lists_.empty() ? std::vector<std::string>{} : Ids(lists_.back());
  }

  std::vector<Node> LatestNodes() {
    absl::MutexLock lock(&mu_);
    return lists_.empty() ? std::vector<Node>{} : lists_.back();
  }

  size_t count() {
    absl::MutexLock lock(&mu_);
    return lists_.size();
  }

  std::string Describe() {
    absl::MutexLock lock(&mu_);
    std::string out;
    for (const auto& list : lists_) {
      out += "[" + absl::StrJoin(Ids(list), ",") + "] ";
    }
    return out;
  }

 private:
  static std::vector<std::string> Ids(const std::vector<Node>& nodes) {
    std::vector<std::string> ids;
    for (const Node& n : nodes) {
      ids.push_back(n.id);
    }
    return ids;
  }

  absl::Mutex mu_;
  std::vector<std::vector<Node>> lists_ ABSL_GUARDED_BY(mu_);
};

// Polls `done` every 20 ms until it holds or `timeout` passes; returns whether it held.
bool PollUntil(const std::function<bool()>& done, milliseconds timeout) {
  const auto deadline = steady_clock::now() + timeout;
  while (!done()) {
    if (steady_clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  return true;
}

class EtcdDiscoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<testing::EtcdServer>> server = testing::EtcdServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    etcd_ = *std::move(server);
  }

  EtcdDiscoveryOptions Options(const std::string& id) {
    EtcdDiscoveryOptions options;
    options.endpoints = etcd_->endpoint();
    options.prefix = "/floodgate/test";
    options.self = {id, "127.0.0.1:" + std::to_string(7000 + id[0])};
    options.lease_ttl_seconds = 2;
    options.start_timeout = seconds(5);
    options.backoff_max = milliseconds(500);
    return options;
  }

  std::unique_ptr<Discovery> Make(const EtcdDiscoveryOptions& options) {
    absl::StatusOr<std::unique_ptr<Discovery>> discovery = NewEtcdDiscovery(options);
    EXPECT_TRUE(discovery.ok()) << discovery.status();
    return discovery.ok() ? *std::move(discovery) : nullptr;
  }

  // Starts a discovery for `id` reporting to `recorder`; fails the test if Start fails.
  std::unique_ptr<Discovery> StartNode(const std::string& id, Recorder& recorder) {
    std::unique_ptr<Discovery> discovery = Make(Options(id));
    if (discovery == nullptr) {
      return nullptr;
    }
    const absl::Status started = discovery->Start(recorder.Callback());
    EXPECT_TRUE(started.ok()) << started;
    return discovery;
  }

  std::unique_ptr<testing::EtcdServer> etcd_;
};

TEST_F(EtcdDiscoveryTest, MembersSeeEachOther) {
  Recorder ra, rb, rc;
  auto a = StartNode("a", ra);
  auto b = StartNode("b", rb);
  auto c = StartNode("c", rc);
  ASSERT_TRUE(a && b && c);
  for (Recorder* r : {&ra, &rb, &rc}) {
    EXPECT_TRUE(r->WaitFor({"a", "b", "c"}, seconds(5))) << r->Describe();
  }
  EXPECT_EQ(ra.LatestNodes()[1], (Node{"b", "127.0.0.1:7098"}));
  const DiscoveryStatus status = a->status();
  EXPECT_EQ(status.source, "etcd");
  EXPECT_TRUE(status.connected);
  EXPECT_EQ(status.errors, 0u) << status.last_error;
  EXPECT_GT(status.revision, 0);
  EXPECT_EQ(status.updates, ra.count());
  // The first list came before Start returned (read before this node registered itself).
  EXPECT_GE(ra.count(), 1u);
}

TEST_F(EtcdDiscoveryTest, DeregisterDropsTheNodeAtOnce) {
  Recorder ra, rb;
  auto a = StartNode("a", ra);
  auto b = StartNode("b", rb);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(ra.WaitFor({"a", "b"}, seconds(5))) << ra.Describe();
  const auto start = steady_clock::now();
  ASSERT_TRUE(b->Deregister().ok());
  // Well under the 2 s lease TTL: the lease was revoked, not left to expire.
  EXPECT_TRUE(ra.WaitFor({"a"}, milliseconds(1500))) << ra.Describe();
  EXPECT_LT(steady_clock::now() - start, milliseconds(1500));
  // b keeps following, without itself.
  EXPECT_TRUE(rb.WaitFor({"a"}, seconds(2))) << rb.Describe();
  EXPECT_TRUE(b->Deregister().ok());  // again: nothing to do
}

TEST_F(EtcdDiscoveryTest, CrashedNodeLeavesAfterTheLeaseTtl) {
  Recorder ra, rb;
  auto a = StartNode("a", ra);
  auto b = StartNode("b", rb);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(ra.WaitFor({"a", "b"}, seconds(5))) << ra.Describe();
  // A crash: b stops renewing its lease but does not revoke it.
  b->Stop();
  const size_t reported_after_stop = rb.count();
  EXPECT_EQ(ra.Latest(), (std::vector<std::string>{"a", "b"}));
  // etcd expires a 2 s lease within about 2 s plus its expiry sweep (~0.5 s).
  EXPECT_TRUE(ra.WaitFor({"a"}, seconds(6))) << ra.Describe();
  EXPECT_EQ(rb.count(), reported_after_stop);  // no on_change after Stop
}

TEST_F(EtcdDiscoveryTest, KeepsTheListWhileEtcdIsDownAndRecovers) {
  Recorder ra, rb;
  auto a = StartNode("a", ra);
  auto b = StartNode("b", rb);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(ra.WaitFor({"a", "b"}, seconds(5))) << ra.Describe();
  // b read the folder before it registered; its own entry comes back by its watch.
  ASSERT_TRUE(rb.WaitFor({"a", "b"}, seconds(5))) << rb.Describe();

  etcd_->Kill();
  ASSERT_TRUE(PollUntil([&] { return !a->status().connected; }, seconds(5)));
  const DiscoveryStatus down = a->status();
  EXPECT_GE(down.errors, 1u);
  EXPECT_NE(down.last_error.find("etcd at 127.0.0.1:" + std::to_string(etcd_->client_port()) +
                                 " unreachable"),
            std::string::npos)
      << down.last_error;
  // Still the last list, never an empty one.
  EXPECT_EQ(ra.Latest(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(rb.Latest(), (std::vector<std::string>{"a", "b"}));

  ASSERT_TRUE(etcd_->Restart().ok()) << etcd_->Log();
  ASSERT_TRUE(PollUntil(
      [&] {
        const DiscoveryStatus s = a->status();
        return s.connected && s.reconnects >= 1;
      },
      seconds(10)))
      << a->status().last_error;
  EXPECT_TRUE(PollUntil([&] { return b->status().connected; }, seconds(10)));
  EXPECT_EQ(ra.Latest(), (std::vector<std::string>{"a", "b"})) << ra.Describe();
  // Both registrations are in etcd, on live leases.
  absl::StatusOr<std::unique_ptr<EtcdClient>> client =
      EtcdClient::Create({.endpoints = etcd_->endpoint()});
  ASSERT_TRUE(client.ok());
  absl::StatusOr<EtcdRangeResult> range = (*client)->RangePrefix("/floodgate/test/members/");
  ASSERT_TRUE(range.ok()) << range.status();
  ASSERT_EQ(range->kvs.size(), 2u);
  EXPECT_NE(range->kvs[0].lease, 0);
}

TEST_F(EtcdDiscoveryTest, RegistersAgainWhenItsLeaseIsLost) {
  Recorder ra, rb;
  auto a = StartNode("a", ra);
  auto b = StartNode("b", rb);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(ra.WaitFor({"a", "b"}, seconds(5))) << ra.Describe();
  absl::StatusOr<std::unique_ptr<EtcdClient>> client =
      EtcdClient::Create({.endpoints = etcd_->endpoint()});
  ASSERT_TRUE(client.ok());
  absl::StatusOr<EtcdRangeResult> before = (*client)->RangePrefix("/floodgate/test/members/b");
  ASSERT_TRUE(before.ok() && before->kvs.size() == 1u);
  // Someone revokes b's lease (as etcd does when a lease expires): b's key goes, b takes a new
  // lease and writes it again.
  ASSERT_TRUE((*client)->Revoke(before->kvs[0].lease).ok());
  EXPECT_TRUE(PollUntil(
      [&] {
        absl::StatusOr<EtcdRangeResult> now = (*client)->RangePrefix("/floodgate/test/members/b");
        return now.ok() && now->kvs.size() == 1u && now->kvs[0].lease != before->kvs[0].lease;
      },
      seconds(5)));
  EXPECT_TRUE(ra.WaitFor({"a", "b"}, seconds(5))) << ra.Describe();
  absl::StatusOr<std::optional<EtcdKeyValue>> value = (*client)->Get("/floodgate/test/members/b");
  ASSERT_TRUE(value.ok() && value->has_value());
  EXPECT_EQ((*value)->value, R"({"id":"b","address":"127.0.0.1:7098"})");
  value = (*client)->Get("/floodgate/test/members/nobody");
  ASSERT_TRUE(value.ok());
  EXPECT_FALSE(value->has_value());
}

TEST_F(EtcdDiscoveryTest, StartWithEtcdDownFailsInTimeThenJoins) {
  etcd_->Stop();
  EtcdDiscoveryOptions options = Options("a");
  options.start_timeout = seconds(1);
  std::unique_ptr<Discovery> a = Make(options);
  ASSERT_TRUE(a);
  Recorder ra;
  const auto start = steady_clock::now();
  const absl::Status started = a->Start(ra.Callback());
  const auto took = steady_clock::now() - start;
  EXPECT_TRUE(absl::IsUnavailable(started)) << started;
  EXPECT_NE(started.message().find("unreachable"), std::string::npos) << started;
  EXPECT_GE(took, milliseconds(900));
  EXPECT_LT(took, milliseconds(2500));
  EXPECT_FALSE(a->status().connected);
  EXPECT_EQ(ra.count(), 0u);

  ASSERT_TRUE(etcd_->Restart().ok()) << etcd_->Log();
  EXPECT_TRUE(ra.WaitFor({"a"}, seconds(10))) << ra.Describe() << a->status().last_error;
  EXPECT_TRUE(a->status().connected);
}

TEST_F(EtcdDiscoveryTest, StopIsPromptAndIdempotent) {
  Recorder ra;
  auto a = StartNode("a", ra);
  ASSERT_TRUE(a);
  ASSERT_TRUE(ra.WaitFor({"a"}, seconds(5)));
  const auto start = steady_clock::now();
  a->Stop();
  a->Stop();
  EXPECT_LT(steady_clock::now() - start, seconds(2));
}

TEST(EtcdDiscoveryOptionsTest, RefusesBadOptions) {
  EtcdDiscoveryOptions options;
  options.endpoints = "http://127.0.0.1:2379";
  options.prefix = "/floodgate/x";
  options.self = {"a", "127.0.0.1:7946"};
  EXPECT_TRUE(NewEtcdDiscovery(options).ok());
  EtcdDiscoveryOptions bad = options;
  bad.prefix = "/floodgate/x/";
  EXPECT_TRUE(absl::IsInvalidArgument(NewEtcdDiscovery(bad).status()));
  bad = options;
  bad.endpoints = "";
  EXPECT_TRUE(absl::IsInvalidArgument(NewEtcdDiscovery(bad).status()));
  bad = options;
  bad.endpoints = "https://127.0.0.1:2379";
  EXPECT_TRUE(absl::IsInvalidArgument(NewEtcdDiscovery(bad).status()));
  bad = options;
  bad.self.address = "";
  EXPECT_TRUE(absl::IsInvalidArgument(NewEtcdDiscovery(bad).status()));
  bad = options;
  bad.lease_ttl_seconds = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(NewEtcdDiscovery(bad).status()));
}

}  // namespace
}  // namespace floodgate::discovery
