// An elastic cluster with real parts: `floodgate serve` processes that find each other through a
// real etcd (Debian's etcd-server, testing/etcd_server.h) or a real DNS server (dnsmasq,
// testing/dnsmasq_server.h), grown, shrunk, restarted and crashed under load.
//
// Every check the load sends is recorded (node, key, time, allowed) and the history is checked
// against the limit (testing/history): admitted <= limit + 1% in every window. Clients retry on
// another node when one gives no decision (a node that is leaving, or gone), as a load balancer
// would, and a check that no node decides counts as failed: there must be none.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "testing/dnsmasq_server.h"
#include "testing/etcd_server.h"
#include "testing/history/checker.h"
#include "testing/history/record.h"
#include "testing/http_client.h"
#include "testing/server_process.h"
#include "testing/wait_for.h"

namespace floodgate {
namespace {

using ::floodgate::history::Bound;
using ::floodgate::history::Checker;
using ::floodgate::history::Recorder;
using ::floodgate::history::WindowKind;
using ::floodgate::testing::ServerProcess;
using ::floodgate::testing::WaitFor;

constexpr int64_t kHourNs = 3600LL * 1'000'000'000;
constexpr uint64_t kHotLimit = 400;
constexpr uint64_t kWarmLimit = 4000;

constexpr char kYaml[] = R"(domain: el
descriptors:
  - key: hot
    rate_limit: {unit: hour, requests_per_unit: 400}
  - key: warm
    rate_limit: {unit: hour, requests_per_unit: 4000}
)";

int64_t NowNs() { return absl::ToUnixNanos(absl::Now()); }

// Returns a TCP port that was free a moment ago on `host`.
int FreePort(const std::string& host = "127.0.0.1") {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Returns the number after `"field":` in `body` (the first one), or -1.
int64_t Field(const std::string& body, const std::string& field) {
  const size_t f = body.find(absl::StrCat("\"", field, "\":"));
  if (f == std::string::npos) {
    return -1;
  }
  return std::stoll(body.substr(f + field.size() + 3));
}

// One node: its id, peer address and process (null while it is down).
struct Node {
  std::string id;
  std::string host = "127.0.0.1";
  int peer_port = 0;
  std::unique_ptr<ServerProcess> process;
};

// The nodes of one cluster, started with discovery flags; thread-safe, so that load threads can
// pick live nodes while the test adds and removes them.
class Cluster {
 public:
  Cluster(std::string config_dir, std::vector<std::string> discovery_args)
      : config_dir_(std::move(config_dir)), discovery_args_(std::move(discovery_args)) {}

  ~Cluster() {
    for (auto& node : nodes_) {
      if (node->process != nullptr) {
        node->process->Stop(SIGKILL);
      }
    }
  }

  // Starts node `id` (a new one, or again with its old peer port).
  absl::Status StartNode(const std::string& id, const std::string& host = "127.0.0.1",
                         int peer_port = 0) {
    Node* node = Find(id);
    if (node == nullptr) {
      auto fresh = std::make_unique<Node>();
      fresh->id = id;
      fresh->host = host;
      fresh->peer_port = peer_port != 0 ? peer_port : FreePort(host);
      node = fresh.get();
      absl::MutexLock lock(&mu_);
      nodes_.push_back(std::move(fresh));
    }
    std::vector<std::string> args = {
        "--config",        ConfigDirOf(id),
        "--state-dir",     testing::MakeTempDir(),
        "--http",          node->host + ":0",
        "--grpc",          node->host + ":0",
        "--peer",          absl::StrCat(node->host, ":", node->peer_port),
        "--cluster-key",   "elastic-test-key",
        "--drain-timeout", "3s"};
    if (!absl::StrContains(absl::StrJoin(discovery_args_, " "), "--peers-dns")) {
      args.push_back("--node-id");
      args.push_back(id);
    }
    args.insert(args.end(), discovery_args_.begin(), discovery_args_.end());
    absl::StatusOr<std::unique_ptr<ServerProcess>> process =
        ServerProcess::Start(testing::FloodgateBinary(), args);
    if (!process.ok()) {
      return process.status();
    }
    absl::MutexLock lock(&mu_);
    node->process = *std::move(process);
    return absl::OkStatus();
  }

  std::string ConfigDirOf(const std::string& id) const {
    auto it = config_overrides_.find(id);
    return it == config_overrides_.end() ? config_dir_ : it->second;
  }

  // Node `id` serves `dir` instead of the shared config (set before it starts).
  void SetConfigDir(const std::string& id, const std::string& dir) { config_overrides_[id] = dir; }

  // Sends `method target` with `body` to node `id`; returns the response.
  testing::HttpResponse Send(const std::string& id, const std::string& method,
                             const std::string& target, const std::string& body = "") const {
    const std::map<std::string, int> live = Live();
    auto it = live.find(id);
    if (it == live.end()) {
      return {};
    }
    testing::HttpClient client(Host(id), it->second, 3000);
    return client.Request(method, target, body);
  }

  // Stops node `id` with `signal` (SIGTERM: a graceful leave; SIGKILL: a crash).
  void StopNode(const std::string& id, int signal) {
    std::unique_ptr<ServerProcess> process;
    {
      absl::MutexLock lock(&mu_);
      Node* node = FindLocked(id);
      process = std::move(node->process);
    }
    if (process != nullptr) {
      stderr_[id] += process->Stderr();
      process->Stop(signal);
    }
  }

  // The HTTP ports of the nodes that run, by id.
  std::map<std::string, int> Live() const {
    absl::MutexLock lock(&mu_);
    std::map<std::string, int> live;
    for (const auto& node : nodes_) {
      if (node->process != nullptr) {
        live[node->id] = node->process->http_port();
      }
    }
    return live;
  }

  std::string Host(const std::string& id) const {
    absl::MutexLock lock(&mu_);
    const Node* node = FindLocked(id);
    return node == nullptr ? "127.0.0.1" : node->host;
  }

  // GET /v1/cluster of node `id` ("" when it does not answer).
  std::string ClusterJson(const std::string& id) const {
    const std::map<std::string, int> live = Live();
    auto it = live.find(id);
    if (it == live.end()) {
      return "";
    }
    testing::HttpClient client(Host(id), it->second, 2000);
    return client.Request("GET", "/v1/cluster").body;
  }

  // Whether every running node counts exactly `members` members.
  bool Converged(int members) const {
    for (const auto& [id, port] : Live()) {
      if (Field(ClusterJson(id), "member_count") != members) {
        return false;
      }
    }
    return true;
  }

  std::string AllStderr() {
    std::string out;
    absl::MutexLock lock(&mu_);
    for (const auto& node : nodes_) {
      out += absl::StrCat("--- ", node->id, " ---\n", stderr_[node->id]);
      if (node->process != nullptr) {
        out += node->process->Stderr();
      }
    }
    return out;
  }

 private:
  Node* Find(const std::string& id) {
    absl::MutexLock lock(&mu_);
    return FindLocked(id);
  }
  Node* FindLocked(const std::string& id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const auto& node : nodes_) {
      if (node->id == id) {
        return node.get();
      }
    }
    return nullptr;
  }

  const std::string config_dir_;
  const std::vector<std::string> discovery_args_;
  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Node>> nodes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> stderr_;  // of stopped runs
  std::map<std::string, std::string> config_overrides_;
};

// Checks keys round-robin over the running nodes from `threads` threads until Stop(), retrying
// on the next node when one gives no decision; records every decision.
class Load {
 public:
  Load(const Cluster& cluster, int threads) : cluster_(cluster) {
    for (int t = 0; t < threads; ++t) {
      workers_.emplace_back([this, t] { Run(t); });
    }
  }
  ~Load() { Stop(); }

  void Stop() {
    stop_.store(true);
    for (auto& w : workers_) {
      if (w.joinable()) {
        w.join();
      }
    }
  }

  int sent() const { return sent_.load(); }
  int failed() const { return failed_.load(); }
  int allowed(const std::string& key) const {
    return key == "hot" ? hot_allowed_.load() : warm_allowed_.load();
  }
  const Recorder& recorder() const { return recorder_; }

 private:
  void Run(int t) {
    std::map<int, std::unique_ptr<testing::HttpClient>> clients;
    for (int n = t; !stop_.load(); ++n) {
      const std::string key = n % 4 == 0 ? "warm" : "hot";
      const std::map<std::string, int> live = cluster_.Live();
      if (live.empty()) {
        continue;
      }
      std::vector<std::pair<std::string, int>> order(live.begin(), live.end());
      bool decided = false;
      for (size_t attempt = 0; attempt < order.size() * 2 && !decided; ++attempt) {
        const auto& [id, port] = order[(n + attempt) % order.size()];
        auto& client = clients[port];
        if (client == nullptr) {
          client = std::make_unique<testing::HttpClient>(cluster_.Host(id), port, 3000);
        }
        const int64_t start = NowNs();
        testing::HttpResponse r = client->Request("GET", "/v1/check?domain=el&" + key + "=k");
        if (r.status == 200 || r.status == 429) {
          recorder_.RecordCall(id, key, start, NowNs(), r.status == 200);
          if (r.status == 200) {
            (key == "hot" ? hot_allowed_ : warm_allowed_).fetch_add(1);
          }
          decided = true;
        } else {
          client.reset();  // a node going away: the next node
        }
      }
      sent_.fetch_add(1);
      if (!decided) {
        failed_.fetch_add(1);
      }
    }
  }

  const Cluster& cluster_;
  Recorder recorder_;
  std::atomic<bool> stop_{false};
  std::atomic<int> sent_{0};
  std::atomic<int> failed_{0};
  std::atomic<int> hot_allowed_{0};
  std::atomic<int> warm_allowed_{0};
  std::vector<std::thread> workers_;
};

// Checks the load's history: at most limit + 1% (+1) of each key in every hour-long window.
void ExpectWithinBounds(const Load& load) {
  for (const auto& [key, limit] : {std::pair{"hot", kHotLimit}, std::pair{"warm", kWarmLimit}}) {
    Bound bound;
    bound.kind = WindowKind::kFixed;
    bound.limit = limit;
    bound.period_ns = kHourNs;
    bound.tolerance = history::FailoverTolerance(limit);
    bound.slack_ns = 100'000'000;
    std::vector<history::Record> records;
    for (const history::Record& r : load.recorder().Snapshot()) {
      if (r.key == key) {
        records.push_back(r);
      }
    }
    auto report = Checker(bound).CheckBound(records);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_TRUE(report->pass) << key << ": " << report->Summary();
  }
  // The hot key was spent early: it must have admitted its limit (no reset gave more, no lost
  // state refused it early).
  if (::testing::Test::HasFailure()) {
    // Where the admissions past the limit came from, in time order.
    std::vector<history::Record> hot;
    for (const history::Record& r : load.recorder().Snapshot()) {
      if (r.key == "hot" && r.allowed) {
        hot.push_back(r);
      }
    }
    std::sort(hot.begin(), hot.end(), [](const history::Record& a, const history::Record& b) {
      return a.time_ns < b.time_ns;
    });
    std::map<std::string, int> by_node;
    for (size_t i = kHotLimit; i < hot.size(); ++i) {
      ++by_node[hot[i].node];
    }
    for (const auto& [node, count] : by_node) {
      std::printf("past the limit via %s: %d (first at +%lld ms)\n", node.c_str(), count,
                  static_cast<long long>((hot[kHotLimit].time_ns - hot[0].time_ns) / 1000000));
    }
  }
  EXPECT_GE(static_cast<uint64_t>(load.allowed("hot")), kHotLimit);
  EXPECT_LE(static_cast<uint64_t>(load.allowed("hot")),
            kHotLimit + history::FailoverTolerance(kHotLimit));
}

std::string MakeConfigDir() {
  const std::string dir = testing::MakeTempDir();
  std::ofstream(dir + "/el.yaml") << kYaml;
  return dir;
}

class ElasticClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_dir_ = MakeConfigDir();
    auto etcd = testing::EtcdServer::Start(std::chrono::seconds(20));
    ASSERT_TRUE(etcd.ok()) << etcd.status();
    etcd_ = *std::move(etcd);
    cluster_ = std::make_unique<Cluster>(
        config_dir_,
        std::vector<std::string>{"--etcd", etcd_->endpoint(), "--cluster-name", "elastic"});
  }
  void TearDown() override {
    if (HasFailure()) {
      std::printf("%s\n", cluster_->AllStderr().c_str());
    }
    cluster_.reset();
    etcd_.reset();
    std::filesystem::remove_all(config_dir_);
  }

  // Starts nodes and waits until every running node counts `members`; returns how long that
  // took after the last start.
  absl::Duration StartAndConverge(const std::vector<std::string>& ids, int members) {
    for (const std::string& id : ids) {
      const absl::Status started = cluster_->StartNode(id);
      EXPECT_TRUE(started.ok()) << started;
    }
    return WaitFor([&] { return cluster_->Converged(members); }, absl::Seconds(10));
  }

  std::string config_dir_;
  std::unique_ptr<testing::EtcdServer> etcd_;
  std::unique_ptr<Cluster> cluster_;
};

// Three nodes found through etcd grow to five and shrink back to three under load.
TEST_F(ElasticClusterTest, ScaleOutAndInUnderLoadKeepsTheLimit) {
  ASSERT_LT(StartAndConverge({"a", "b", "c"}, 3), absl::Seconds(5));
  Load load(*cluster_, 3);
  ASSERT_NE(WaitFor([&] { return load.sent() > 600; }, absl::Seconds(20)),
            absl::InfiniteDuration());
  const absl::Duration grow = StartAndConverge({"d", "e"}, 5);
  EXPECT_LT(grow, absl::Seconds(5));
  const int at_five = load.sent();
  ASSERT_NE(WaitFor([&] { return load.sent() > at_five + 400; }, absl::Seconds(20)),
            absl::InfiniteDuration());
  // Graceful leaves: their states go to the members that stay.
  cluster_->StopNode("d", SIGTERM);
  cluster_->StopNode("e", SIGTERM);
  const absl::Duration shrink = WaitFor([&] { return cluster_->Converged(3); }, absl::Seconds(10));
  EXPECT_LT(shrink, absl::Seconds(5));
  const int at_three = load.sent();
  ASSERT_NE(WaitFor([&] { return load.sent() > at_three + 400; }, absl::Seconds(20)),
            absl::InfiniteDuration());
  load.Stop();
  EXPECT_EQ(load.failed(), 0);
  ExpectWithinBounds(load);
  const std::string json = cluster_->ClusterJson("a");
  EXPECT_EQ(Field(json, "joins"), 4) << json;  // b, c, then d, e
  EXPECT_EQ(Field(json, "leaves"), 2) << json;
  std::printf("scale 3->5->3: %d checks, hot admitted %d of %llu, warm %d; converged in %s / %s\n",
              load.sent(), load.allowed("hot"), static_cast<unsigned long long>(kHotLimit),
              load.allowed("warm"), absl::FormatDuration(grow).c_str(),
              absl::FormatDuration(shrink).c_str());
}

// Every node restarted in turn (a rolling deploy) under load. A restarted node fetches the
// state of the keys it owns again (warm-up); two nodes warming up at once must not wait on each
// other (the peer server decides such forwards off its io threads), or the fetch times out and
// the key starts afresh: a reset.
TEST_F(ElasticClusterTest, RollingRestartUnderLoadKeepsTheLimit) {
  ASSERT_LT(StartAndConverge({"a", "b", "c"}, 3), absl::Seconds(5));
  Load load(*cluster_, 3);
  ASSERT_NE(WaitFor([&] { return load.sent() > 600; }, absl::Seconds(20)),
            absl::InfiniteDuration());
  for (const std::string id : {"a", "b", "c"}) {
    cluster_->StopNode(id, SIGTERM);
    EXPECT_LT(WaitFor([&] { return cluster_->Converged(2); }, absl::Seconds(10)), absl::Seconds(5))
        << "after " << id << " left";
    ASSERT_TRUE(cluster_->StartNode(id).ok());
    EXPECT_LT(WaitFor([&] { return cluster_->Converged(3); }, absl::Seconds(10)), absl::Seconds(5))
        << "after " << id << " came back";
    const int now = load.sent();
    ASSERT_NE(WaitFor([&] { return load.sent() > now + 200; }, absl::Seconds(20)),
              absl::InfiniteDuration());
  }
  // Every fourth check is 'warm': offer it well past its limit, so that a count reset during
  // the restarts shows as admissions over the limit whatever the machine's speed.
  ASSERT_NE(WaitFor([&] { return load.sent() > 4 * static_cast<int>(kWarmLimit + 1000); },
                    absl::Seconds(60)),
            absl::InfiniteDuration());
  load.Stop();
  EXPECT_EQ(load.failed(), 0);
  ExpectWithinBounds(load);
  std::printf("rolling restart: %d checks, hot admitted %d of %llu, warm %d\n", load.sent(),
              load.allowed("hot"), static_cast<unsigned long long>(kHotLimit),
              load.allowed("warm"));
}

// A key spent through the cluster stays spent when each node that held it leaves; a crashed
// node is seen dead within 2 s and removed when its lease expires.
TEST_F(ElasticClusterTest, GracefulLeaveHandsStateOverAndACrashIsDetected) {
  ASSERT_LT(StartAndConverge({"a", "b", "c", "d"}, 4), absl::Seconds(5));
  const std::map<std::string, int> live = cluster_->Live();
  int allowed = 0;
  for (int i = 0; i < 500; ++i) {
    auto it = std::next(live.begin(), i % live.size());
    testing::HttpClient client(it->second, 3000);
    allowed += client.Request("GET", "/v1/check?domain=el&hot=spent").status == 200;
  }
  ASSERT_EQ(allowed, static_cast<int>(kHotLimit));
  // a and b leave, one after the other: whoever owned or replicated the key, it stays spent.
  for (const std::string id : {"a", "b"}) {
    cluster_->StopNode(id, SIGTERM);
    for (const auto& [other, port] : cluster_->Live()) {
      testing::HttpClient client(port, 3000);
      EXPECT_EQ(client.Request("GET", "/v1/check?domain=el&hot=spent").status, 429)
          << "via " << other << " after " << id << " left";
    }
  }
  ASSERT_LT(WaitFor([&] { return cluster_->Converged(2); }, absl::Seconds(10)), absl::Seconds(5));
  const std::string left = cluster_->ClusterJson("c");
  EXPECT_EQ(Field(left, "leaves"), 2) << left;

  // d crashes: c sees it dead within 2 s, and without it once its lease expires.
  cluster_->StopNode("d", SIGKILL);
  const absl::Duration dead = WaitFor(
      [&] {
        const std::string json = cluster_->ClusterJson("c");
        const size_t at = json.find("\"id\":\"d\"");
        return at == std::string::npos || json.find("\"alive\":false", at) < json.find('}', at);
      },
      absl::Seconds(10));
  EXPECT_LT(dead, absl::Seconds(2));
  EXPECT_NE(WaitFor([&] { return cluster_->Converged(1); }, absl::Seconds(10)),
            absl::InfiniteDuration());
  std::printf("crash seen dead in %s\n", absl::FormatDuration(dead).c_str());
}

// With --replicas 1 there is no replica to take a key over: a leaving node sends the states it
// owned to their next owners. 30 keys spent (each to its limit of 400) over three nodes, so each
// node owns some; two leave, and every key stays spent on the one that remains.
TEST_F(ElasticClusterTest, GracefulLeaveWithOneReplicaHandsItsStatesOver) {
  cluster_ = std::make_unique<Cluster>(
      config_dir_, std::vector<std::string>{"--etcd", etcd_->endpoint(), "--cluster-name",
                                            "elastic", "--replicas", "1"});
  ASSERT_LT(StartAndConverge({"a", "b", "c"}, 3), absl::Seconds(5));
  constexpr int kKeys = 30;
  const std::map<std::string, int> live = cluster_->Live();
  for (int k = 0; k < kKeys; ++k) {
    testing::HttpClient client(std::next(live.begin(), k % live.size())->second, 3000);
    ASSERT_EQ(
        client.Request("GET", absl::StrCat("/v1/check?domain=el&hot=k", k, "&hits=400")).status,
        200);
  }
  for (const std::string id : {"a", "b"}) {
    cluster_->StopNode(id, SIGTERM);
  }
  ASSERT_LT(WaitFor([&] { return cluster_->Converged(1); }, absl::Seconds(10)), absl::Seconds(5));
  testing::HttpClient c(cluster_->Live().at("c"), 3000);
  int refused = 0;
  for (int k = 0; k < kKeys; ++k) {
    refused += c.Request("GET", absl::StrCat("/v1/check?domain=el&hot=k", k)).status == 429;
  }
  EXPECT_EQ(refused, kKeys);
  const std::string json = cluster_->ClusterJson("c");
  EXPECT_GT(Field(json, "adopted_states"), 0) << json;
}

// etcd killed and restarted under load: checks go on, membership recovers.
TEST_F(ElasticClusterTest, EtcdDownIsNotAnOutage) {
  ASSERT_LT(StartAndConverge({"a", "b", "c"}, 3), absl::Seconds(5));
  Load load(*cluster_, 3);
  ASSERT_NE(WaitFor([&] { return load.sent() > 300; }, absl::Seconds(20)),
            absl::InfiniteDuration());
  etcd_->Kill();
  ASSERT_NE(
      WaitFor([&] { return absl::StrContains(cluster_->ClusterJson("a"), "\"connected\":false"); },
              absl::Seconds(10)),
      absl::InfiniteDuration());
  const int down = load.sent();
  ASSERT_NE(WaitFor([&] { return load.sent() > down + 300; }, absl::Seconds(20)),
            absl::InfiniteDuration());
  EXPECT_TRUE(cluster_->Converged(3));  // the last membership is kept
  ASSERT_TRUE(etcd_->Restart().ok());
  EXPECT_NE(WaitFor(
                [&] {
                  return absl::StrContains(cluster_->ClusterJson("a"), "\"connected\":true") &&
                         cluster_->Converged(3);
                },
                absl::Seconds(15)),
            absl::InfiniteDuration());
  // A node that joins now is found: the registrations came back.
  EXPECT_LT(StartAndConverge({"d"}, 4), absl::Seconds(5));
  load.Stop();
  EXPECT_EQ(load.failed(), 0);
  ExpectWithinBounds(load);
}

// An admin change on one node reaches every node through etcd and survives a restart of every
// node (each start gets a new, empty state folder: only etcd remembers it).
TEST_F(ElasticClusterTest, ConfigChangesLiveInEtcd) {
  ASSERT_LT(StartAndConverge({"a", "b", "c"}, 3), absl::Seconds(5));
  const std::string yaml =
      "domain: fromadmin\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, "
      "requests_per_unit: 7}\n";
  ASSERT_EQ(cluster_->Send("b", "PUT", "/v1/config/fromadmin", yaml).status, 200);
  auto everywhere = [&] {
    for (const auto& [id, port] : cluster_->Live()) {
      if (!absl::StrContains(cluster_->Send(id, "GET", "/v1/config").body,
                             "requests_per_unit: 7")) {
        return false;
      }
    }
    return true;
  };
  EXPECT_NE(WaitFor(everywhere, absl::Seconds(5)), absl::InfiniteDuration());
  // A bad change is refused where it is made and reaches no one.
  const testing::HttpResponse bad =
      cluster_->Send("a", "PUT", "/v1/config/fromadmin", "domain: fromadmin\ndescriptors: [\n");
  EXPECT_EQ(bad.status, 400) << bad.body;
  // Every node stops, then starts again with an empty state folder.
  for (const std::string id : {"a", "b", "c"}) {
    cluster_->StopNode(id, SIGTERM);
  }
  ASSERT_LT(StartAndConverge({"a", "b", "c"}, 3), absl::Seconds(5));
  EXPECT_NE(WaitFor(everywhere, absl::Seconds(5)), absl::InfiniteDuration());
  // A delete spreads the same way.
  ASSERT_EQ(cluster_->Send("c", "DELETE", "/v1/config/fromadmin").status, 200);
  EXPECT_NE(
      WaitFor(
          [&] {
            for (const auto& [id, port] : cluster_->Live()) {
              if (absl::StrContains(cluster_->Send(id, "GET", "/v1/config").body, "fromadmin")) {
                return false;
              }
            }
            return true;
          },
          absl::Seconds(5)),
      absl::InfiniteDuration());
}

// Two nodes whose config files differ are flagged on both: a bypass, not a detail.
TEST_F(ElasticClusterTest, DifferingFileConfigsAreFlagged) {
  const std::string other = testing::MakeTempDir();
  std::ofstream(other + "/el.yaml") << absl::StrReplaceAll(kYaml, {{"400", "401"}});
  cluster_->SetConfigDir("b", other);
  ASSERT_LT(StartAndConverge({"a", "b", "c"}, 3), absl::Seconds(5));
  EXPECT_NE(WaitFor(
                [&] {
                  return absl::StrContains(cluster_->ClusterJson("a"), "\"config_mismatched\":1") &&
                         absl::StrContains(cluster_->ClusterJson("c"), "\"config_mismatched\":1") &&
                         absl::StrContains(cluster_->ClusterJson("b"), "\"config_mismatched\":2");
                },
                absl::Seconds(5)),
            absl::InfiniteDuration())
      << cluster_->ClusterJson("a") << "\n"
      << cluster_->ClusterJson("b");
  EXPECT_TRUE(absl::StrContains(cluster_->Send("c", "GET", "/metrics").body,
                                "floodgate_cluster_config_mismatched_members 1"));
  cluster_->StopNode("a", SIGTERM);
  EXPECT_TRUE(absl::StrContains(cluster_->AllStderr(), "serves a different config"))
      << cluster_->AllStderr();
  std::filesystem::remove_all(other);
}

// Members from DNS: the A records of a name on a real dnsmasq, followed as they change.
TEST(DnsClusterTest, RecordsAddedAndRemovedAreFollowed) {
  auto dns = testing::DnsmasqServer::Start({{"floodgate.test", {"127.0.0.2", "127.0.0.3"}}});
  ASSERT_TRUE(dns.ok()) << dns.status();
  const std::string dir = MakeConfigDir();
  const int port = FreePort("127.0.0.2");
  Cluster cluster(dir, {"--peers-dns", absl::StrCat("floodgate.test:", port), "--dns-server",
                        (*dns)->address()});
  ASSERT_TRUE(cluster.StartNode("127.0.0.2", "127.0.0.2", port).ok());
  ASSERT_TRUE(cluster.StartNode("127.0.0.3", "127.0.0.3", port).ok());
  EXPECT_NE(WaitFor([&] { return cluster.Converged(2); }, absl::Seconds(10)),
            absl::InfiniteDuration());
  // A third node and its record.
  ASSERT_TRUE(cluster.StartNode("127.0.0.4", "127.0.0.4", port).ok());
  ASSERT_TRUE(
      (*dns)->SetRecords({{"floodgate.test", {"127.0.0.2", "127.0.0.3", "127.0.0.4"}}}).ok());
  EXPECT_NE(WaitFor([&] { return cluster.Converged(3); }, absl::Seconds(10)),
            absl::InfiniteDuration());
  // Its record removed (the pod is terminating): the others drop it.
  ASSERT_TRUE((*dns)->SetRecords({{"floodgate.test", {"127.0.0.2", "127.0.0.3"}}}).ok());
  cluster.StopNode("127.0.0.4", SIGTERM);
  EXPECT_NE(WaitFor([&] { return cluster.Converged(2); }, absl::Seconds(10)),
            absl::InfiniteDuration());
  const std::string json = cluster.ClusterJson("127.0.0.2");
  EXPECT_TRUE(absl::StrContains(json, "\"source\":\"dns\"")) << json;
  if (HasFailure()) {
    std::printf("%s\n", cluster.AllStderr().c_str());
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace floodgate
