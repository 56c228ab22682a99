// Cluster tests: real multi-node clusters of the floodgate binary (docs/cluster.md).
//
// Every check a test sends is recorded (node, key, time, allowed) and the history is checked by
// testing/history against the limit's bound. Clients that get no answer from a node retry on the
// next one, as a load balancer would; a check counts as failed only when no node answered.
// Waits on the cluster (a node seen dead, a config change seen) poll its own HTTP API with a
// deadline; nothing sleeps to synchronise.

#include <signal.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "floodgate/peer/v1/peer.pb.h"
#include "floodgate/store.h"
#include "gtest/gtest.h"
#include "src/cluster/membership.h"
#include "src/cluster/peer_frame.h"
#include "src/cluster/peer_wire.h"
#include "src/core/config.h"
#include "src/limiter/limiter.h"
#include "testing/cluster_harness.h"
#include "testing/history/checker.h"
#include "testing/history/record.h"
#include "testing/http_client.h"
#include "testing/peer_client.h"
#include "testing/server_process.h"
#include "testing/wait_for.h"

namespace floodgate {
namespace {

using ::floodgate::history::Bound;
using ::floodgate::history::Checker;
using ::floodgate::history::Recorder;
using ::floodgate::history::WindowKind;
using ::floodgate::testing::ClusterHarness;
using ::floodgate::testing::WaitFor;

constexpr int64_t kHourNs = 3600LL * 1'000'000'000;

int64_t NowNs() { return absl::ToUnixNanos(absl::Now()); }

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path);
  out << content;
}

std::string MakeConfigDir(const std::string& yaml) {
  const std::string dir = testing::MakeTempDir();
  WriteFile(dir + "/cluster.yaml", yaml);
  return dir;
}

// Sends checks to the nodes of a cluster, one HttpClient per node and thread.
class Client {
 public:
  explicit Client(const ClusterHarness& cluster) : cluster_(cluster) {
    for (int i = 0; i < cluster.size(); ++i) {
      clients_.push_back(std::make_unique<testing::HttpClient>(cluster.node(i).host,
                                                               cluster.node(i).http_port, 3000));
    }
  }

  // Checks `query` ("domain=D&key=value") on node `first`, moving on to the next node when one
  // does not answer. Returns the HTTP status (200 or 429), or 0 when no node answered.
  int Check(int first, const std::string& query, const std::string& key, Recorder* recorder) {
    for (int attempt = 0; attempt < cluster_.size(); ++attempt) {
      const int node = (first + attempt) % cluster_.size();
      const int64_t start = NowNs();
      testing::HttpResponse r = clients_[node]->Request("GET", "/v1/check?" + query);
      // A decision: allowed, over a limit, or refused by `failure_mode: closed` (503 with
      // Floodgate-Refusal: unavailable, counted as a refusal: the node answered). Anything
      // else (no answer, another 5xx) is tried on the next node, as a load balancer would.
      const bool unavailable =
          r.status == 503 && absl::StartsWith(r.Header("Floodgate-Refusal"), "unavailable");
      if (r.status == 200 || r.status == 429 || unavailable) {
        if (recorder != nullptr) {
          recorder->RecordCall(cluster_.node(node).id, key, start, NowNs(), r.status == 200);
        }
        return unavailable ? 429 : r.status;
      }
      clients_[node]->Close();
    }
    return 0;
  }

  testing::HttpResponse Get(int node, const std::string& target) {
    return clients_[node]->Request("GET", target);
  }

 private:
  const ClusterHarness& cluster_;
  std::vector<std::unique_ptr<testing::HttpClient>> clients_;
};

// Returns the value of `"field":` in node `node`'s GET /v1/cluster for member `member`.
std::string MemberField(Client& client, int node, const std::string& member,
                        const std::string& field) {
  const std::string body = client.Get(node, "/v1/cluster").body;
  const size_t at = body.find(absl::StrCat("\"id\":\"", member, "\""));
  if (at == std::string::npos) {
    return "";
  }
  const size_t f = body.find(absl::StrCat("\"", field, "\":"), at);
  if (f == std::string::npos) {
    return "";
  }
  const size_t start = f + field.size() + 3;
  const size_t end = body.find_first_of(",}", start);
  return body.substr(start, end - start);
}

// Whether every node sees every node alive.
bool AllAlive(Client& client, const ClusterHarness& cluster) {
  for (int i = 0; i < cluster.size(); ++i) {
    for (int j = 0; j < cluster.size(); ++j) {
      if (MemberField(client, i, cluster.node(j).id, "alive") != "true") {
        return false;
      }
    }
  }
  return true;
}

uint64_t NodeCounter(Client& client, int node, const std::string& field) {
  const std::string body = client.Get(node, "/v1/cluster").body;
  const size_t f = body.find(absl::StrCat("\"", field, "\":"));
  if (f == std::string::npos) {
    return 0;
  }
  return std::stoull(body.substr(f + field.size() + 3));
}

// Sends `total` checks of one key from `threads` threads, round-robin over `nodes`.
struct LoadResult {
  int allowed = 0;
  int refused = 0;
  int failed = 0;
};

LoadResult SendLoad(const ClusterHarness& cluster, const std::vector<int>& nodes,
                    const std::string& query, const std::string& key, int total, int threads,
                    Recorder* recorder, const std::function<void(int)>& after_each = nullptr) {
  std::atomic<int> next{0};
  std::atomic<int> allowed{0};
  std::atomic<int> refused{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      Client client(cluster);
      while (true) {
        const int n = next.fetch_add(1);
        if (n >= total) {
          break;
        }
        const int status = client.Check(nodes[n % nodes.size()], query, key, recorder);
        (status == 200 ? allowed : status == 429 ? refused : failed).fetch_add(1);
        if (after_each) {
          after_each(n);
        }
      }
    });
  }
  for (auto& w : workers) {
    w.join();
  }
  return LoadResult{allowed.load(), refused.load(), failed.load()};
}

// Checks a history against "at most limit + tolerance per hour-long fixed window".
void ExpectWithinBound(const Recorder& recorder, uint64_t limit, uint64_t tolerance) {
  Bound bound;
  bound.kind = WindowKind::kFixed;
  bound.limit = limit;
  bound.period_ns = kHourNs;
  bound.tolerance = tolerance;
  bound.slack_ns = 100'000'000;
  auto report = Checker(bound).CheckBound(recorder.Snapshot());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->pass) << report->Summary();
}

constexpr char kAlgorithmsYaml[] = R"(domain: cl
descriptors:
  - key: fixed_window
    rate_limit: {unit: hour, requests_per_unit: 60}
  - key: sliding_window
    rate_limit: {unit: hour, requests_per_unit: 60, algorithm: sliding_window}
  - key: token_bucket
    rate_limit: {unit: hour, requests_per_unit: 60, algorithm: token_bucket}
  - key: leaky_bucket
    rate_limit: {unit: hour, requests_per_unit: 60, algorithm: leaky_bucket}
  - key: concurrency
    rate_limit: {unit: hour, requests_per_unit: 60, algorithm: concurrency}
)";

// (a) One key, checks spread round-robin over 3 nodes from several threads: exactly the limit
// is admitted, for every algorithm.
TEST(ClusterTest, ExactLimitAcrossNodesForEveryAlgorithm) {
  const std::string dir = MakeConfigDir(kAlgorithmsYaml);
  auto cluster = ClusterHarness::Start(3, dir);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  Client probe(**cluster);
  ASSERT_NE(WaitFor([&] { return AllAlive(probe, **cluster); }, absl::Seconds(10)),
            absl::InfiniteDuration());

  for (const char* algorithm :
       {"fixed_window", "sliding_window", "token_bucket", "leaky_bucket", "concurrency"}) {
    SCOPED_TRACE(algorithm);
    Recorder recorder;
    const std::string key = absl::StrCat(algorithm, "=user1");
    const LoadResult result =
        SendLoad(**cluster, {0, 1, 2}, absl::StrCat("domain=cl&", key), key, 180, 6, &recorder);
    EXPECT_EQ(result.failed, 0);
    // Token and leaky buckets refill one hit per minute: at most one more during the test.
    const int slack = std::string(algorithm).find("bucket") != std::string::npos ? 1 : 0;
    EXPECT_GE(result.allowed, 60);
    EXPECT_LE(result.allowed, 60 + slack);
    ExpectWithinBound(recorder, 60, slack);
  }
  // The gRPC front end (Envoy's API) of every node enforces the same limit.
  {
    namespace rls = ::envoy::service::ratelimit::v3;
    std::vector<std::unique_ptr<rls::RateLimitService::Stub>> stubs;
    for (int i = 0; i < 3; ++i) {
      stubs.push_back(rls::RateLimitService::NewStub(grpc::CreateChannel(
          (*cluster)->node(i).GrpcAddress(), grpc::InsecureChannelCredentials())));
    }
    int ok = 0;
    for (int n = 0; n < 90; ++n) {
      rls::RateLimitRequest request;
      request.set_domain("cl");
      auto* entry = request.add_descriptors()->add_entries();
      entry->set_key("fixed_window");
      entry->set_value("grpc-user");
      rls::RateLimitResponse response;
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      const grpc::Status status = stubs[n % 3]->ShouldRateLimit(&context, request, &response);
      ASSERT_TRUE(status.ok()) << status.error_message();
      ok += response.overall_code() == rls::RateLimitResponse::OK;
    }
    EXPECT_EQ(ok, 60);
  }
  // /metrics carries the cluster families.
  const std::string metrics = probe.Get(0, "/metrics").body;
  EXPECT_NE(metrics.find("floodgate_cluster_members_alive 3"), std::string::npos);
  EXPECT_NE(metrics.find("floodgate_cluster_forwarded_total{peer=\"n1\"}"), std::string::npos);
  EXPECT_NE(metrics.find("floodgate_cluster_replication_lag_seconds"), std::string::npos);
  // Every node forwarded or owned: the decisions really were spread.
  uint64_t owned = 0;
  for (int i = 0; i < 3; ++i) {
    owned += NodeCounter(probe, i, "owned_ops");
  }
  EXPECT_GE(owned, 5u * 60);  // every admitted check was decided by its key's owner
  // Checks of keys known to be over their limit were refused on the node that got them.
  uint64_t fast = 0;
  for (int i = 0; i < 3; ++i) {
    const std::string m = probe.Get(i, "/metrics").body;
    const size_t at = m.find("\nfloodgate_fast_refusals_total ");
    ASSERT_NE(at, std::string::npos);
    fast += std::stoull(m.substr(at + sizeof("\nfloodgate_fast_refusals_total ") - 1));
  }
  EXPECT_GT(fast, 0u);
  std::filesystem::remove_all(dir);
}

constexpr char kHotYaml[] = R"(domain: cl
descriptors:
  - key: hot
    rate_limit: {unit: hour, requests_per_unit: 1500}
)";

// Returns the node that owns most decisions (the hot key's owner), from each node's owned_ops.
int BusiestOwner(Client& client, int nodes, const std::vector<uint64_t>& before) {
  int best = 0;
  uint64_t best_ops = 0;
  for (int i = 0; i < nodes; ++i) {
    const uint64_t ops = NodeCounter(client, i, "owned_ops") - before[i];
    if (ops > best_ops) {
      best = i;
      best_ops = ops;
    }
  }
  return best;
}

// (b) kill -9 the owner of a hot key under load: clients that retry on another node see no
// failure and the admitted count stays within limit + 1%. (c) Restart it: it takes its keys
// back without a second burst.
// A crash loses the hits the owner admitted but had not yet replicated: those of the last
// --peer-batch-delay plus the time the batch waits for a CPU. With the default 500 us on a
// loaded 2-core machine that was up to 21 hits here (1 in 4 runs past the 1% bound); with 0
// (replication leaves on the loop's next turn) 0-4. The test measures the failover, not the
// batching trade-off, so it replicates at once (docs/cluster.md, "Guarantees").
TEST(ClusterTest, OwnerKilledAndRestartedUnderLoadKeepsTheLimit) {
  const std::string dir = MakeConfigDir(kHotYaml);
  auto cluster = ClusterHarness::Start(3, dir, {"--peer-batch-delay", "0s"});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ClusterHarness& c = **cluster;
  Client probe(c);
  ASSERT_NE(WaitFor([&] { return AllAlive(probe, **cluster); }, absl::Seconds(10)),
            absl::InfiniteDuration());

  const std::string key = "hot=k";
  const std::string query = "domain=cl&hot=k";
  Recorder recorder;
  // Warm up: find the owner.
  std::vector<uint64_t> before;
  for (int i = 0; i < 3; ++i) {
    before.push_back(NodeCounter(probe, i, "owned_ops"));
  }
  LoadResult warm = SendLoad(c, {0, 1, 2}, query, key, 300, 4, &recorder);
  EXPECT_EQ(warm.failed, 0);
  EXPECT_EQ(warm.allowed, 300);
  const int owner = BusiestOwner(probe, 3, before);
  std::vector<int> others;
  for (int i = 0; i < 3; ++i) {
    if (i != owner) {
      others.push_back(i);
    }
  }

  // Kill the owner in the middle of a burst that goes to every node.
  std::atomic<bool> killed{false};
  LoadResult during = SendLoad(c, {0, 1, 2}, query, key, 1800, 6, &recorder, [&](int n) {
    if (n == 600 && !killed.exchange(true)) {
      ASSERT_TRUE(c.Kill(owner, SIGKILL).ok());
    }
  });
  EXPECT_EQ(during.failed, 0);
  // Admitted so far: the limit, within 1% + 1 (hits the dead owner admitted but had not yet
  // replicated), never a reset.
  const uint64_t tolerance = history::FailoverTolerance(1500);
  EXPECT_GE(static_cast<uint64_t>(warm.allowed + during.allowed), 1500u);
  EXPECT_LE(static_cast<uint64_t>(warm.allowed + during.allowed), 1500u + tolerance);
  uint64_t noticed = 0;
  for (int i : others) {
    noticed += NodeCounter(probe, i, "failovers") + NodeCounter(probe, i, "deaths");
  }
  EXPECT_GE(noticed, 1u);

  // Restart: once the others see it, it owns the key again and must not admit a second burst.
  ASSERT_TRUE(c.Restart(owner).ok()) << c.Stderr(owner);
  const std::string owner_id = c.node(owner).id;
  ASSERT_NE(WaitFor(
                [&] {
                  return MemberField(probe, others[0], owner_id, "alive") == "true" &&
                         MemberField(probe, others[1], owner_id, "alive") == "true";
                },
                absl::Seconds(10)),
            absl::InfiniteDuration());
  before.clear();
  for (int i = 0; i < 3; ++i) {
    before.push_back(NodeCounter(probe, i, "owned_ops"));
  }
  LoadResult after = SendLoad(c, {0, 1, 2}, query, key, 900, 6, &recorder);
  EXPECT_EQ(after.failed, 0);
  EXPECT_EQ(BusiestOwner(probe, 3, before), owner);  // it took the key back
  if (HasFailure()) {
    for (int i = 0; i < 3; ++i) {
      std::printf("node %d stderr:\n%s\n", i, c.Stderr(i).c_str());
    }
  }
  const uint64_t admitted = warm.allowed + during.allowed + after.allowed;
  EXPECT_LE(admitted, 1500u + tolerance);

  Bound bound;
  bound.kind = WindowKind::kFixed;
  bound.limit = 1500;
  bound.period_ns = kHourNs;
  bound.tolerance = tolerance;
  bound.slack_ns = 100'000'000;
  auto report = Checker(bound).CheckBound(recorder.Snapshot());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->pass) << report->Summary();
  std::printf("kill/restart: admitted %llu of limit 1500 (bound %llu), over-admission %llu\n",
              static_cast<unsigned long long>(admitted),
              static_cast<unsigned long long>(1500 + tolerance),
              static_cast<unsigned long long>(report->total_over_admission));
  std::filesystem::remove_all(dir);
}

constexpr char kPartitionYaml[] = R"(domain: cl
descriptors:
  - key: local
    rate_limit: {unit: hour, requests_per_unit: 300}
  - key: closed
    rate_limit: {unit: hour, requests_per_unit: 300, failure_mode: closed}
  - key: open
    rate_limit: {unit: hour, requests_per_unit: 300, failure_mode: open}
)";

// (d) Cut one node off (network namespaces made by the test): each side follows the failure
// mode, and after healing the cluster converges on the owner's state.
TEST(ClusterTest, PartitionFollowsFailureModeAndConverges) {
  const std::string dir = MakeConfigDir(kPartitionYaml);
  testing::ClusterOptions options;
  options.network_namespaces = true;
  auto cluster = ClusterHarness::Start(3, dir, {}, options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ClusterHarness& c = **cluster;
  if (!c.isolated()) {
    GTEST_SKIP() << "network namespaces unavailable: " << c.network_error();
  }
  Client probe(c);
  auto all_alive = [&] {
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 3; ++j) {
        if (MemberField(probe, i, c.node(j).id, "alive") != "true") {
          return false;
        }
      }
    }
    return true;
  };
  ASSERT_NE(WaitFor(all_alive, absl::Seconds(10)), absl::InfiniteDuration());

  ASSERT_TRUE(c.Partition({2}, {0, 1}).ok());
  const absl::Duration detected = WaitFor(
      [&] {
        return MemberField(probe, 2, "n0", "alive") == "false" &&
               MemberField(probe, 2, "n1", "alive") == "false" &&
               MemberField(probe, 0, "n2", "alive") == "false" &&
               MemberField(probe, 1, "n2", "alive") == "false";
      },
      absl::Seconds(5));
  ASSERT_NE(detected, absl::InfiniteDuration());
  EXPECT_LE(detected, absl::Seconds(2));  // dead node detected within 2 s

  Recorder recorder;
  // Minority side: failure_mode local enforces limit / 3 on its own.
  LoadResult minority = SendLoad(c, {2}, "domain=cl&local=u", "local=u", 200, 2, &recorder);
  EXPECT_EQ(minority.failed, 0);
  EXPECT_EQ(minority.allowed, 100);
  // Majority side: exact among themselves.
  LoadResult majority = SendLoad(c, {0, 1}, "domain=cl&local=u", "local=u", 600, 4, &recorder);
  EXPECT_EQ(majority.failed, 0);
  EXPECT_EQ(majority.allowed, 300);
  // closed refuses everything on the minority side; open lets everything through.
  LoadResult closed = SendLoad(c, {2}, "domain=cl&closed=u", "closed=u", 50, 2, nullptr);
  EXPECT_EQ(closed.allowed, 0);
  EXPECT_EQ(closed.failed, 0);
  LoadResult open = SendLoad(c, {2}, "domain=cl&open=u", "open=u", 50, 2, nullptr);
  EXPECT_EQ(open.allowed, 50);
  // The majority still decides closed/open keys exactly.
  LoadResult majority_closed =
      SendLoad(c, {0, 1}, "domain=cl&closed=u", "closed=u", 400, 4, nullptr);
  EXPECT_EQ(majority_closed.allowed, 300);

  // Heal: everyone sees everyone again, and every node now refuses the exhausted key (the
  // owner's state, whichever node owns it).
  ASSERT_TRUE(c.Heal().ok());
  const absl::Duration healed = WaitFor(all_alive, absl::Seconds(10));
  ASSERT_NE(healed, absl::InfiniteDuration());
  LoadResult after = SendLoad(c, {0, 1, 2}, "domain=cl&local=u", "local=u", 90, 3, &recorder);
  EXPECT_EQ(after.failed, 0);
  EXPECT_EQ(after.allowed, 0);
  // A fresh key after healing is exact across all three nodes.
  LoadResult fresh = SendLoad(c, {0, 1, 2}, "domain=cl&local=v", "local=v", 450, 3, nullptr);
  EXPECT_EQ(fresh.allowed, 300);
  if (HasFailure()) {
    for (int i = 0; i < 3; ++i) {
      std::printf("node %d stderr:\n%s\n", i, c.Stderr(i).c_str());
    }
  }

  // The history: at most limit + limit / 3 (the minority's share) in the window.
  ExpectWithinBound(recorder, 300, 100);
  std::printf("partition: detected in %s, healed in %s; admitted %d (majority) + %d (minority)\n",
              absl::FormatDuration(detected).c_str(), absl::FormatDuration(healed).c_str(),
              majority.allowed, minority.allowed);
  std::filesystem::remove_all(dir);
}

constexpr char kConfigYaml[] = R"(domain: cl
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 1000000}
)";

// (e) A config change made on one node under load is seen by every node within 1 s, with no
// failed check; a node that was down catches up when it returns.
TEST(ClusterTest, ConfigChangeReachesEveryNodeWithinOneSecond) {
  // Each node has its own config directory: nothing but the cluster carries the change.
  std::vector<std::string> dirs;
  for (int i = 0; i < 3; ++i) {
    dirs.push_back(MakeConfigDir(kConfigYaml));
  }
  testing::ClusterOptions options;
  options.config_dirs = dirs;
  auto cluster = ClusterHarness::Start(3, dirs[0], {}, options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ClusterHarness& c = **cluster;
  Client probe(c);
  ASSERT_NE(WaitFor([&] { return AllAlive(probe, **cluster); }, absl::Seconds(10)),
            absl::InfiniteDuration());

  std::atomic<bool> stop{false};
  std::atomic<int> failed{0};
  std::atomic<int> answered{0};
  std::thread load([&] {
    Client client(c);
    for (int n = 0; !stop.load() || n < 300; ++n) {
      const int status =
          client.Check(n % 3, "domain=cl&user=u" + std::to_string(n % 50), "", nullptr);
      (status == 0 ? failed : answered).fetch_add(1);
    }
  });

  const std::string changed = R"(domain: cl
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 7}
  - key: added
    rate_limit: {unit: minute, requests_per_unit: 5}
)";
  testing::HttpClient admin(c.node(0).host, c.node(0).http_port);
  const absl::Time put_at = absl::Now();
  testing::HttpResponse put = admin.Request("PUT", "/v1/config/cl", changed);
  ASSERT_EQ(put.status, 200) << put.body;
  absl::Duration slowest;
  for (int i = 1; i < 3; ++i) {
    const absl::Duration seen = WaitFor(
        [&] { return probe.Get(i, "/v1/config").body.find("key: added") != std::string::npos; },
        absl::Seconds(5));
    ASSERT_NE(seen, absl::InfiniteDuration()) << "node " << i << " never saw the change";
    slowest = std::max(slowest, absl::Now() - put_at);
  }
  EXPECT_LE(slowest, absl::Seconds(1));
  // The new limit is enforced everywhere: 7 for a fresh user, across nodes.
  LoadResult result = SendLoad(c, {0, 1, 2}, "domain=cl&user=fresh", "user=fresh", 30, 3, nullptr);
  EXPECT_EQ(result.allowed, 7);

  // A node that was down while a change was made catches up when it returns.
  ASSERT_TRUE(c.Kill(2, SIGKILL).ok());
  const std::string changed_again = R"(domain: cl
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 9}
  - key: while_down
    rate_limit: {unit: minute, requests_per_unit: 5}
)";
  testing::HttpClient admin1(c.node(1).host, c.node(1).http_port);
  ASSERT_EQ(admin1.Request("PUT", "/v1/config/cl", changed_again).status, 200);
  ASSERT_TRUE(c.Restart(2).ok()) << c.Stderr(2);
  Client probe2(c);
  EXPECT_NE(
      WaitFor(
          [&] { return probe2.Get(2, "/v1/config").body.find("while_down") != std::string::npos; },
          absl::Seconds(5)),
      absl::InfiniteDuration());

  // Two changes of one domain made at once on two nodes: every node ends with the same one.
  const std::string left = R"(domain: cl
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 11}
)";
  const std::string right = R"(domain: cl
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 22}
)";
  std::thread put_left([&] {
    testing::HttpClient client(c.node(0).host, c.node(0).http_port);
    EXPECT_EQ(client.Request("PUT", "/v1/config/cl", left).status, 200);
  });
  std::thread put_right([&] {
    testing::HttpClient client(c.node(1).host, c.node(1).http_port);
    EXPECT_EQ(client.Request("PUT", "/v1/config/cl", right).status, 200);
  });
  put_left.join();
  put_right.join();
  auto limit_on = [&](int i) {
    const std::string body = probe2.Get(i, "/v1/config").body;
    return body.find("requests_per_unit: 11") != std::string::npos   ? 11
           : body.find("requests_per_unit: 22") != std::string::npos ? 22
                                                                     : 0;
  };
  const absl::Duration converged = WaitFor(
      [&] {
        const int first = limit_on(0);
        return first != 0 && limit_on(1) == first && limit_on(2) == first;
      },
      absl::Seconds(5));
  EXPECT_NE(converged, absl::InfiniteDuration())
      << limit_on(0) << " " << limit_on(1) << " " << limit_on(2);

  stop = true;
  load.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(answered.load(), 0);
  std::printf("config: change seen on every node %s after the PUT; %d checks answered, %d failed\n",
              absl::FormatDuration(slowest).c_str(), answered.load(), failed.load());
  for (const std::string& d : dirs) {
    std::filesystem::remove_all(d);
  }
}

constexpr char kLocalYaml[] = R"(domain: cl
descriptors:
  - key: hotlocal
    rate_limit: {unit: hour, requests_per_unit: 300, consistency: local}
)";

// consistency: local. Each node decides from its share (limit / 3) without a hop and reports
// its hits to the owner; once its share is spent it asks the owner. Uneven or even traffic, the
// cluster admits the limit, plus at most the hits still unreported when the owner's count fills
// (reports leave every 500 us; with 6 clients in flight that is a handful).
TEST(ClusterTest, LocalConsistencyDecidesFromSharesAndSyncsToTheOwner) {
  const std::string dir = MakeConfigDir(kLocalYaml);
  auto cluster = ClusterHarness::Start(3, dir);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ClusterHarness& c = **cluster;
  Client probe(c);
  ASSERT_NE(WaitFor([&] { return AllAlive(probe, c); }, absl::Seconds(10)),
            absl::InfiniteDuration());
  constexpr uint64_t tolerance = 10;

  // All traffic on one node: its share, then the owner's remaining count.
  Recorder uneven_history;
  LoadResult uneven =
      SendLoad(c, {0}, "domain=cl&hotlocal=a", "hotlocal=a", 600, 4, &uneven_history);
  EXPECT_EQ(uneven.failed, 0);
  EXPECT_GE(uneven.allowed, 300);
  EXPECT_LE(static_cast<uint64_t>(uneven.allowed), 300 + tolerance);
  // Spread over every node.
  Recorder even_history;
  LoadResult even =
      SendLoad(c, {0, 1, 2}, "domain=cl&hotlocal=b", "hotlocal=b", 900, 6, &even_history);
  EXPECT_EQ(even.failed, 0);
  EXPECT_GE(even.allowed, 300);
  EXPECT_LE(static_cast<uint64_t>(even.allowed), 300 + tolerance);
  uint64_t local = 0;
  uint64_t refills = 0;
  for (int i = 0; i < 3; ++i) {
    local += NodeCounter(probe, i, "local_share_ops");
    refills += NodeCounter(probe, i, "local_share_refills");
  }
  EXPECT_GE(local, 600u);  // every admitted check was tried on a share first
  EXPECT_GE(refills, 1u);  // and the uneven run needed the owner
  ExpectWithinBound(uneven_history, 300, tolerance);
  ExpectWithinBound(even_history, 300, tolerance);
  std::printf(
      "local consistency: admitted %d (one node) and %d (three nodes) of 300; "
      "%llu share decisions, %llu sent on to the owner\n",
      uneven.allowed, even.allowed, static_cast<unsigned long long>(local),
      static_cast<unsigned long long>(refills));
  std::filesystem::remove_all(dir);
}

// The key testing/cluster_harness.cc gives every node (--cluster-key).
constexpr char kHarnessClusterKey[] = "cluster-harness-key";

// Returns the value of the Prometheus sample `sample` (name and labels, as printed) in node
// `node`'s /metrics, or -1 when it is absent.
int64_t MetricValue(Client& client, int node, const std::string& sample) {
  const std::string body = client.Get(node, "/metrics").body;
  const size_t at = body.find("\n" + sample + " ");
  if (at == std::string::npos) {
    return -1;
  }
  return std::stoll(body.substr(at + sample.size() + 2));
}

std::string AuthFailures(const std::string& reason) {
  return absl::StrCat("floodgate_cluster_peer_auth_failures_total{reason=\"", reason, "\"}");
}

// Returns the `version` of node `node`'s GET /v1/config, or -1.
int64_t ConfigVersion(Client& client, int node) {
  const std::string body = client.Get(node, "/v1/config").body;
  const size_t at = body.find("\"version\":");
  if (at == std::string::npos) {
    return -1;
  }
  return std::stoll(body.substr(at + sizeof("\"version\":") - 1));
}

// Returns the ErrorAnswer of a refused call, or a failure naming what came instead.
absl::StatusOr<peer::v1::ErrorAnswer> ErrorOf(const absl::StatusOr<testing::PeerAnswer>& answer) {
  if (!answer.ok()) {
    return answer.status();
  }
  peer::v1::ErrorAnswer error;
  if (answer->type != cluster::FrameType::kError || !answer->ParseTo(&error)) {
    return absl::InternalError(
        absl::StrCat("expected an error answer, got a ",
                     cluster::FrameTypeName(static_cast<uint8_t>(answer->type)), " frame"));
  }
  return error;
}

peer::v1::ForwardRequest ForwardOf(uint64_t key_hash, uint32_t algorithm, int64_t period_ns,
                                   uint64_t limit, uint64_t hits) {
  peer::v1::ForwardRequest request;
  peer::v1::Op* op = request.add_txns()->add_ops();
  op->set_key_hash(key_hash);
  op->mutable_limit()->set_algorithm(algorithm);
  op->mutable_limit()->set_requests_per_period(limit);
  op->mutable_limit()->set_period_ns(period_ns);
  op->set_hits(hits);
  return request;
}

// Bad peer messages get a clear error, change nothing, and the node keeps serving.
TEST(ClusterTest, BadPeerMessagesAreRefusedClearly) {
  const std::string dir = MakeConfigDir(kHotYaml);
  auto cluster = ClusterHarness::Start(3, dir);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ClusterHarness& c = **cluster;
  Client probe(c);
  ASSERT_NE(WaitFor([&] { return AllAlive(probe, c); }, absl::Seconds(10)),
            absl::InfiniteDuration());
  using cluster::FrameType;
  const testing::PeerIdentity member{kHarnessClusterKey, c.node(1).id, c.node(0).id};

  // A Hello of another protocol version: refused before any challenge, with a log line that
  // says what to do, and counted. (First, while the node's rate-limited log has room.)
  {
    const int64_t before = MetricValue(probe, 0, AuthFailures("version"));
    auto peer = testing::PeerClient::Connect(c.node(0).host, c.node(0).peer_port);
    ASSERT_TRUE(peer.ok()) << peer.status();
    testing::PeerIdentity old = member;
    old.version = 99;
    ASSERT_TRUE((*peer)->SendHello(old).ok());
    EXPECT_TRUE((*peer)->ClosedByPeer());
    EXPECT_EQ(MetricValue(probe, 0, AuthFailures("version")), before + 1);
    EXPECT_NE(WaitFor(
                  [&] {
                    return absl::StrContains(
                        c.Stderr(0),
                        absl::StrCat("peer protocol version 99 refused (this node speaks ",
                                     cluster::kPeerProtocolVersion, "; no rolling upgrade"));
                  },
                  absl::Seconds(5)),
              absl::InfiniteDuration())
        << c.Stderr(0);
  }

  // Authenticated as a member: each bad call gets an error answer naming the problem, and the
  // connection stays up for the next one.
  {
    auto peer = testing::PeerClient::Connect(c.node(0).host, c.node(0).peer_port);
    ASSERT_TRUE(peer.ok()) << peer.status();
    ASSERT_TRUE((*peer)->Handshake(member).ok());
    testing::PeerClient& p = **peer;

    absl::StatusOr<peer::v1::ErrorAnswer> error =
        ErrorOf(p.Call(FrameType::kForward, ForwardOf(7, 99, kHourNs, 10, 1)));
    ASSERT_TRUE(error.ok()) << error.status();
    EXPECT_EQ(error->code(), static_cast<uint32_t>(absl::StatusCode::kInvalidArgument));
    EXPECT_TRUE(absl::StrContains(error->message(), "unknown algorithm 99")) << error->message();

    error = ErrorOf(p.Call(FrameType::kForward, ForwardOf(7, 0, 0, 10, 1)));
    ASSERT_TRUE(error.ok()) << error.status();
    EXPECT_EQ(error->code(), static_cast<uint32_t>(absl::StatusCode::kInvalidArgument));
    EXPECT_TRUE(absl::StrContains(error->message(), "period_ns must be positive, got 0"))
        << error->message();

    peer::v1::ForwardRequest empty;
    empty.add_txns();
    error = ErrorOf(p.Call(FrameType::kForward, empty));
    ASSERT_TRUE(error.ok()) << error.status();
    EXPECT_EQ(error->code(), static_cast<uint32_t>(absl::StatusCode::kInvalidArgument));
    EXPECT_TRUE(absl::StrContains(error->message(), "transaction of 0 ops")) << error->message();

    peer::v1::ReplicateRequest replicate;
    peer::v1::State* state = replicate.add_states();
    state->set_key_hash(7);
    state->mutable_limit()->set_algorithm(0);
    state->mutable_limit()->set_requests_per_period(10);
    state->mutable_limit()->set_period_ns(-5);
    state->set_expiry_ns(NowNs() + kHourNs);
    state->set_data(3);
    replicate.set_now_ns(NowNs());
    error = ErrorOf(p.Call(FrameType::kReplicate, replicate));
    ASSERT_TRUE(error.ok()) << error.status();
    EXPECT_EQ(error->code(), static_cast<uint32_t>(absl::StatusCode::kInvalidArgument));
    EXPECT_TRUE(absl::StrContains(error->message(), "period_ns must be positive, got -5"))
        << error->message();

    // The same connection still answers a good call.
    peer::v1::PingRequest ping;
    ping.set_from(c.node(1).id);
    absl::StatusOr<testing::PeerAnswer> pong = p.Call(FrameType::kPing, ping);
    ASSERT_TRUE(pong.ok()) << pong.status();
    peer::v1::PingResponse response;
    ASSERT_EQ(pong->type, FrameType::kPingAnswer);
    ASSERT_TRUE(pong->ParseTo(&response));
    EXPECT_EQ(response.node_id(), c.node(0).id);
  }

  // Garbage bytes on the peer port: the connection is dropped, nothing else.
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(c.node(0).peer_port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    const std::string garbage(4096, '\x17');
    EXPECT_GT(::write(fd, garbage.data(), garbage.size()), 0);
    char buffer[256];
    while (::read(fd, buffer, sizeof(buffer)) > 0) {
    }
    ::close(fd);
  }

  // The cluster still decides exactly, and the node still has its peers.
  LoadResult after = SendLoad(c, {0, 1, 2}, "domain=cl&hot=after", "hot=after", 1600, 4, nullptr);
  EXPECT_EQ(after.failed, 0);
  EXPECT_EQ(after.allowed, 1500);
  EXPECT_TRUE(AllAlive(probe, c));
  std::filesystem::remove_all(dir);
}

constexpr char kForgedYaml[] = R"(domain: cl
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 5}
)";

// Returns the state key hash every node of a harness cluster uses for `user=<value>` of
// kForgedYaml (the hasher's secret comes from the cluster key: src/server/server.cc), so a
// forger aims at the real key.
uint64_t ForgedYamlKeyHash(const std::string& value, LimitSpec* spec) {
  auto domain = core::ParseDomainConfig(kForgedYaml, "");
  EXPECT_TRUE(domain.ok()) << domain.status();
  const std::vector<core::DescriptorEntry> entries = {{"user", value}};
  const core::DescriptorNode* node = (*domain)->Match(entries);
  EXPECT_NE(node, nullptr);
  const core::RateLimitRule& rule = node->limits.at(0);
  *spec = rule.spec;
  const std::string key = kHarnessClusterKey;
  const KeyHasher hasher(cluster::NodeSeed(key + "/k0"), cluster::NodeSeed(key + "/k1"));
  return hasher.Hash(limiter::StateKey("cl", entries, rule));
}

// Processes that do not hold the cluster key, or claim an id that is not a member, get nothing
// through: their config push, forwarded hits and replicated state change nothing, and each
// refusal is counted by reason in /metrics.
TEST(ClusterTest, ForgedPeersAreRefusedAndCounted) {
  const std::string dir = MakeConfigDir(kForgedYaml);
  auto cluster = ClusterHarness::Start(3, dir);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ClusterHarness& c = **cluster;
  Client probe(c);
  ASSERT_NE(WaitFor([&] { return AllAlive(probe, c); }, absl::Seconds(10)),
            absl::InfiniteDuration());
  using cluster::FrameType;

  // The victim spends 2 of its 5.
  const std::string query = "domain=cl&user=victim";
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(probe.Check(i, query, "user=victim", nullptr), 200);
  }
  LimitSpec spec;
  const uint64_t key_hash = ForgedYamlKeyHash("victim", &spec);

  std::vector<int64_t> versions, bad_key, not_member;
  for (int i = 0; i < 3; ++i) {
    versions.push_back(ConfigVersion(probe, i));
    bad_key.push_back(MetricValue(probe, i, AuthFailures("bad_key")));
    not_member.push_back(MetricValue(probe, i, AuthFailures("not_member")));
    ASSERT_GE(versions.back(), 1);
    ASSERT_GE(bad_key.back(), 0);
    ASSERT_GE(not_member.back(), 0);
  }

  // What a forger sends once "in": the victim made unlimited, its limit spent by forwarded hits
  // and by a replicated state.
  peer::v1::PushConfigRequest push;
  peer::v1::ConfigChange* change = push.add_changes();
  change->mutable_version()->set_domain("cl");
  change->mutable_version()->set_version(1000);
  change->mutable_version()->set_origin("n9");
  change->set_yaml("domain: cl\ndescriptors:\n  - key: user\n    rate_limit: {unlimited: true}\n");
  peer::v1::ForwardRequest forward = ForwardOf(key_hash, static_cast<uint32_t>(spec.algorithm),
                                               spec.period_ns, spec.requests_per_period, 3);
  peer::v1::ReplicateRequest replicate;
  peer::v1::State* state = replicate.add_states();
  state->set_key_hash(key_hash);
  cluster::ToProto(spec, state->mutable_limit());
  state->set_expiry_ns(NowNs() + kHourNs);
  state->set_data(5);
  replicate.set_now_ns(NowNs());
  auto send_all = [&](testing::PeerClient& forger) {
    // The node may close the connection while these are on their way: errors are expected.
    (void)forger.Send(FrameType::kPushConfig, 1, push);
    (void)forger.Send(FrameType::kForward, 2, forward);
    (void)forger.Send(FrameType::kReplicate, 3, replicate);
  };

  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(absl::StrCat("node ", i));
    const std::string other = c.node((i + 1) % 3).id;
    // A member's id without the key: the node's challenge comes, the forged proof is refused.
    {
      auto forger = testing::PeerClient::Connect(c.node(i).host, c.node(i).peer_port);
      ASSERT_TRUE(forger.ok()) << forger.status();
      absl::StatusOr<peer::v1::Challenge> challenge =
          (*forger)->HandshakeUnchecked({"not-the-cluster-key", other, c.node(i).id});
      ASSERT_TRUE(challenge.ok()) << challenge.status();
      EXPECT_EQ(challenge->node_id(), c.node(i).id);
      send_all(**forger);
      EXPECT_TRUE((*forger)->ClosedByPeer());
    }
    // The key (as if leaked) but an id that is not a member: refused at the Hello.
    {
      auto forger = testing::PeerClient::Connect(c.node(i).host, c.node(i).peer_port);
      ASSERT_TRUE(forger.ok()) << forger.status();
      ASSERT_TRUE((*forger)->SendHello({kHarnessClusterKey, "n9", c.node(i).id}).ok());
      send_all(**forger);
      EXPECT_TRUE((*forger)->ClosedByPeer());
    }
    EXPECT_EQ(MetricValue(probe, i, AuthFailures("bad_key")), bad_key[i] + 1);
    EXPECT_EQ(MetricValue(probe, i, AuthFailures("not_member")), not_member[i] + 1);
    EXPECT_EQ(ConfigVersion(probe, i), versions[i]);
    EXPECT_FALSE(absl::StrContains(probe.Get(i, "/v1/config").body, "unlimited"));
  }

  // The hash the forgers aimed at is the victim's: a real member asking each node (0 hits) finds
  // the owner's state, 2 spent.
  int owners_seen = 0;
  for (int i = 0; i < 3; ++i) {
    auto peer = testing::PeerClient::Connect(c.node(i).host, c.node(i).peer_port);
    ASSERT_TRUE(peer.ok()) << peer.status();
    ASSERT_TRUE(
        (*peer)->Handshake({kHarnessClusterKey, c.node((i + 1) % 3).id, c.node(i).id}).ok());
    peer::v1::PingRequest ping;
    ASSERT_TRUE((*peer)->Call(FrameType::kPing, ping).ok());  // authenticated
    peer::v1::FetchRequest fetch;
    fetch.add_key_hashes(key_hash);
    absl::StatusOr<testing::PeerAnswer> fetched = (*peer)->Call(FrameType::kFetch, fetch);
    ASSERT_TRUE(fetched.ok()) << fetched.status();
    peer::v1::FetchResponse held;
    ASSERT_EQ(fetched->type, FrameType::kFetchAnswer);
    ASSERT_TRUE(fetched->ParseTo(&held));
    owners_seen += held.states_size() > 0;
  }
  EXPECT_GE(owners_seen, 1);

  // The victim's limit still refuses at its count: 3 more, then no more.
  int allowed = 0;
  for (int n = 0; n < 6; ++n) {
    allowed += probe.Check(n % 3, query, "user=victim", nullptr) == 200;
  }
  EXPECT_EQ(allowed, 3);
  if (HasFailure()) {
    for (int i = 0; i < 3; ++i) {
      std::printf("node %d stderr:\n%s\n", i, c.Stderr(i).c_str());
    }
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace floodgate
