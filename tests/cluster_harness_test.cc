// The cluster harness itself, with what works before cluster mode exists: plain nodes started
// together, killed with SIGKILL and restarted on the same ports, the cluster flags they are
// given, and (when this process may create network namespaces) partitions between nodes.

#include "testing/cluster_harness.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "testing/http_client.h"
#include "testing/netns.h"
#include "testing/server_process.h"

namespace floodgate::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kConfig[] = R"(domain: web
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 1000}
)";

class ClusterHarnessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir();
    ASSERT_FALSE(dir_.empty());
    std::ofstream(fs::path(dir_) / "web.yaml") << kConfig;
  }
  void TearDown() override { fs::remove_all(dir_); }

  static ClusterOptions Plain(bool namespaces = false) {
    ClusterOptions options;
    options.cluster_flags = false;
    options.network_namespaces = namespaces;
    return options;
  }

  // Returns the status of one check on a loopback node.
  static int Check(const ClusterNode& node) {
    HttpClient client(node.http_port, 5'000);
    return client.Request("GET", "/v1/check?domain=web&user=alice").status;
  }

  std::string dir_;
};

TEST_F(ClusterHarnessTest, PlainNodesKilledAndRestartedOnTheSamePorts) {
  auto started = ClusterHarness::Start(3, dir_, {}, Plain());
  ASSERT_TRUE(started.ok()) << started.status();
  ClusterHarness& cluster = **started;
  ASSERT_EQ(cluster.size(), 3);
  EXPECT_FALSE(cluster.isolated());
  std::set<int> ports;
  for (int i = 0; i < 3; ++i) {
    const ClusterNode& node = cluster.node(i);
    EXPECT_EQ(node.id, absl::StrCat("n", i));
    EXPECT_EQ(node.host, "127.0.0.1");
    EXPECT_TRUE(node.netns.empty());
    ports.insert({node.http_port, node.grpc_port, node.peer_port});
    EXPECT_TRUE(cluster.running(i));
    EXPECT_EQ(Check(node), 200) << cluster.Stderr(i);
  }
  EXPECT_EQ(ports.size(), 9u) << "every port distinct";
  EXPECT_FALSE(ports.contains(0));

  const ClusterNode before = cluster.node(1);
  const pid_t old_pid = cluster.pid(1);
  absl::StatusOr<int> status = cluster.Kill(1, SIGKILL);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL);
  EXPECT_FALSE(cluster.running(1));
  EXPECT_EQ(cluster.pid(1), -1);
  EXPECT_FALSE(TcpConnect("", before.host, before.http_port).ok());
  EXPECT_EQ(Check(cluster.node(0)), 200);
  EXPECT_EQ(Check(cluster.node(2)), 200);
  EXPECT_EQ(cluster.Kill(1).status().code(), absl::StatusCode::kFailedPrecondition);

  ASSERT_TRUE(cluster.Restart(1).ok()) << cluster.Stderr(1);
  EXPECT_TRUE(cluster.running(1));
  EXPECT_NE(cluster.pid(1), old_pid);
  EXPECT_EQ(cluster.node(1).http_port, before.http_port);
  EXPECT_EQ(cluster.node(1).grpc_port, before.grpc_port);
  EXPECT_EQ(cluster.node(1).peer_port, before.peer_port);
  EXPECT_EQ(Check(cluster.node(1)), 200);
  EXPECT_TRUE(TcpConnect("", before.host, before.grpc_port).ok());
  EXPECT_EQ(cluster.Restart(1).code(), absl::StatusCode::kFailedPrecondition);
  const std::string log = cluster.Stderr(1);
  EXPECT_THAT(log, HasSubstr("=== cluster harness: run 1: "));
  EXPECT_THAT(log,
              HasSubstr(absl::StrCat("=== cluster harness: run 2: ", FloodgateBinary(),
                                     " serve --config ", dir_, " --http ", before.HttpAddress())));
  EXPECT_THAT(cluster.Stdout(1), HasSubstr("floodgate: listening"));

  // A graceful stop drains and exits 0; a paused node is continued so that it can.
  ASSERT_TRUE(cluster.Pause(2).ok());
  status = cluster.Kill(2, SIGTERM);
  ASSERT_TRUE(status.ok());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
  EXPECT_THAT(cluster.Stderr(2), HasSubstr("draining"));
  EXPECT_EQ(cluster.Kill(0, SIGSTOP).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ClusterHarnessTest, PassesClusterFlagsNamingEveryPeer) {
  // Until cluster mode exists, serve ignores the flags it does not know; this checks what the
  // harness passes.
  auto started = ClusterHarness::Start(2, dir_, {"--http-threads", "1"});
  ASSERT_TRUE(started.ok()) << started.status();
  ClusterHarness& cluster = **started;
  const std::string peers =
      absl::StrCat("n0=", cluster.node(0).PeerAddress(), ",n1=", cluster.node(1).PeerAddress());
  for (int i = 0; i < 2; ++i) {
    EXPECT_THAT(cluster.Stderr(i),
                HasSubstr(absl::StrCat("--node-id n", i, " --peer ", cluster.node(i).PeerAddress(),
                                       " --peers ", peers, " --http-threads 1 ===")));
  }
}

TEST_F(ClusterHarnessTest, StartFailsWithTheNodesStderr) {
  auto started = ClusterHarness::Start(2, "/nonexistent/floodgate-config", {}, Plain());
  ASSERT_FALSE(started.ok());
  EXPECT_THAT(started.status().message(), HasSubstr("node n0 did not start; stderr:"));
  EXPECT_THAT(started.status().message(), HasSubstr("/nonexistent/floodgate-config"));
}

TEST_F(ClusterHarnessTest, FallsBackToLoopbackWithoutNamespaces) {
  // Without `ip` on the PATH no namespace can be made: the nodes still start, on loopback.
  const std::string path = std::getenv("PATH") != nullptr ? std::getenv("PATH") : "";
  setenv("PATH", "/nonexistent", 1);
  auto started = ClusterHarness::Start(2, dir_, {}, Plain(/*namespaces=*/true));
  setenv("PATH", path.c_str(), 1);
  ASSERT_TRUE(started.ok()) << started.status();
  ClusterHarness& cluster = **started;
  EXPECT_FALSE(cluster.isolated());
  EXPECT_THAT(cluster.network_error(), HasSubstr("cannot run ip"));
  EXPECT_EQ(cluster.node(0).host, "127.0.0.1");
  EXPECT_EQ(Check(cluster.node(1)), 200);
  EXPECT_EQ(cluster.Partition({0}, {1}).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ClusterHarnessTest, PartitionCutsTrafficBetweenNodesNotFromTheTest) {
  auto started = ClusterHarness::Start(3, dir_, {}, Plain(/*namespaces=*/true));
  ASSERT_TRUE(started.ok()) << started.status();
  ClusterHarness& cluster = **started;
  if (!NamespacesSupported().ok()) {
    GTEST_SKIP() << "no network namespaces here: " << cluster.network_error();
  }
  ASSERT_TRUE(cluster.isolated()) << cluster.network_error();
  auto connect = [&](int from, int to) {
    const ClusterNode& target = cluster.node(to);
    return TcpConnect(from < 0 ? "" : cluster.node(from).netns, target.host, target.http_port,
                      absl::Seconds(2));
  };
  std::set<std::string> hosts;
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(cluster.node(i).netns.empty());
    EXPECT_THAT(cluster.node(i).host, ::testing::StartsWith("10."));
    hosts.insert(cluster.node(i).host);
    EXPECT_TRUE(connect(-1, i).ok()) << connect(-1, i);
    for (int j = 0; j < 3; ++j) {
      EXPECT_TRUE(connect(i, j).ok()) << connect(i, j);
    }
  }
  EXPECT_EQ(hosts.size(), 3u);

  ASSERT_TRUE(cluster.Partition({0}, {1, 2}).ok());
  for (const auto& [from, to] : {std::pair{0, 1}, {0, 2}, {1, 0}, {2, 0}}) {
    EXPECT_FALSE(connect(from, to).ok()) << from << " -> " << to;
  }
  EXPECT_TRUE(connect(1, 2).ok()) << connect(1, 2);
  EXPECT_TRUE(connect(2, 1).ok()) << connect(2, 1);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(connect(-1, i).ok()) << connect(-1, i);
  }
  EXPECT_TRUE(cluster.Partition({1}, {0}).ok()) << "repeating a cut is harmless";
  EXPECT_EQ(cluster.Partition({1}, {1}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cluster.Partition({0}, {3}).code(), absl::StatusCode::kInvalidArgument);

  ASSERT_TRUE(cluster.Heal().ok());
  for (const auto& [from, to] : {std::pair{0, 1}, {0, 2}, {1, 0}, {2, 0}}) {
    EXPECT_TRUE(connect(from, to).ok()) << connect(from, to);
  }

  // A node restarted in its namespace is back on the same address.
  const ClusterNode before = cluster.node(0);
  ASSERT_TRUE(cluster.Kill(0).ok());
  EXPECT_FALSE(connect(-1, 0).ok());
  ASSERT_TRUE(cluster.Restart(0).ok()) << cluster.Stderr(0);
  EXPECT_EQ(cluster.node(0).HttpAddress(), before.HttpAddress());
  EXPECT_TRUE(connect(-1, 0).ok()) << connect(-1, 0);
  EXPECT_TRUE(connect(1, 0).ok()) << connect(1, 0);
  EXPECT_THAT(cluster.Stderr(0), HasSubstr(absl::StrCat("run 2 in netns ", before.netns)));
}

TEST(NetnsTest, RemovesOnlyNamespacesOfDeadProcesses) {
  if (geteuid() != 0) {
    GTEST_SKIP() << "needs root";
  }
  const pid_t child = fork();
  if (child == 0) {
    _exit(0);
  }
  ASSERT_GT(child, 0);
  waitpid(child, nullptr, 0);
  const std::string dead = absl::StrCat("fg", child, "-0-0");
  const std::string live = absl::StrCat("fg", getpid(), "-live");
  if (absl::Status supported = NamespacesSupported(); !supported.ok()) {
    GTEST_SKIP() << supported;
  }
  // A concurrent test's cleanup may delete `dead` while `ip` creates it: try again.
  absl::Status added;
  for (int attempt = 0; attempt < 5; ++attempt) {
    if ((added = RunIp({"netns", "add", dead}).status()).ok()) {
      break;
    }
  }
  ASSERT_TRUE(added.ok()) << added;
  ASSERT_TRUE(RunIp({"netns", "add", live}).ok());
  absl::StatusOr<int> removed = RemoveStaleNamespaces();
  ASSERT_TRUE(removed.ok()) << removed.status();  // (a concurrent test may have removed it)
  absl::StatusOr<std::string> list = RunIp({"netns", "list"});
  ASSERT_TRUE(list.ok());
  EXPECT_THAT(*list, Not(HasSubstr(dead)));
  EXPECT_THAT(*list, HasSubstr(live));
  EXPECT_TRUE(RunIp({"netns", "delete", live}).ok());
}

TEST(NetnsTest, NetworkIsRemovedWithItsObject) {
  if (absl::Status supported = NamespacesSupported(); !supported.ok()) {
    GTEST_SKIP() << supported;
  }
  absl::StatusOr<std::unique_ptr<NetnsNetwork>> network = NetnsNetwork::Create(2);
  ASSERT_TRUE(network.ok()) << network.status();
  const std::string ns = (*network)->Namespace(1);
  EXPECT_THAT((*network)->Address(1), ::testing::EndsWith(".2"));
  EXPECT_THAT((*network)->RootAddress(), ::testing::EndsWith(".254"));
  ASSERT_TRUE((*network)->Partition({0}, {1}).ok());
  network->reset();
  absl::StatusOr<std::string> list = RunIp({"netns", "list"});
  ASSERT_TRUE(list.ok());
  EXPECT_THAT(*list, Not(HasSubstr(ns)));
}

}  // namespace
}  // namespace floodgate::testing
