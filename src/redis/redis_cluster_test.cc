// The Cluster client against a real Redis Cluster (3 masters, 3 replicas, one per test binary):
// routing to every master, MOVED and ASK around a slot migration, and a master's failover.
// Tests run in order; the failover test (it kills a master) comes last.

#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "src/redis/redis_client.h"
#include "src/redis/redis_topology.h"
#include "testing/redis_cluster.h"
#include "testing/wait_for.h"

namespace floodgate::redis {
namespace {

using ::floodgate::testing::RedisCluster;
using ::floodgate::testing::WaitFor;

// Sends one command and waits for its callback (bounded: the client's timeout is far shorter).
absl::StatusOr<Reply> Call(Client& client, std::vector<std::string> args, const std::string& key) {
  struct Result {
    absl::Notification done;
    absl::StatusOr<Reply> reply = absl::InternalError("no callback");
  };
  auto result = std::make_shared<Result>();
  std::vector<std::string_view> views(args.begin(), args.end());
  client.Send(views, key, [result](absl::StatusOr<Reply> reply) {
    result->reply = std::move(reply);
    result->done.Notify();
  });
  if (!result->done.WaitForNotificationWithTimeout(absl::Seconds(30))) {
    return absl::InternalError("no callback within 30 s");
  }
  return result->reply;
}

std::string Describe(const absl::StatusOr<Reply>& reply) {
  if (!reply.ok()) {
    return reply.status().ToString();
  }
  return absl::StrCat("type ", static_cast<int>(reply->type), " '", reply->str, "' ",
                      reply->integer);
}

// A key whose slot the node `master` owns, made from `prefix`.
std::string KeyOn(RedisCluster& cluster, size_t master, const std::string& prefix) {
  for (int i = 0; i < 100000; ++i) {
    std::string key = absl::StrCat(prefix, i);
    absl::StatusOr<size_t> owner = cluster.MasterOf(HashSlot(key));
    if (owner.ok() && *owner == master) {
      return key;
    }
  }
  ADD_FAILURE() << "no key for master " << master;
  return prefix;
}

class RedisClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<RedisCluster>> started =
        RedisCluster::Start({.masters = 3, .replicas_per_master = 1, .node_timeout_ms = 1000});
    ASSERT_TRUE(started.ok()) << started.status();
    cluster_ = std::move(*started).release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }

  void SetUp() override { ASSERT_NE(cluster_, nullptr); }

  std::unique_ptr<Client> NewTestClient(TopologyOptions topology = {}) {
    ClientOptions options;
    options.mode = ClientOptions::Mode::kCluster;
    options.endpoints = {Endpoint{"127.0.0.1", static_cast<uint16_t>(cluster_->node(0).port())}};
    options.timeout_ms = 2000;  // a loaded test machine; failures come fast (breaker, RST)
    options.connect_timeout_ms = 1000;
    options.reconnect_max_ms = 200;
    options.breaker_open_ms = 200;
    absl::StatusOr<std::unique_ptr<Client>> client = NewClusterClient(options, topology);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : nullptr;
  }

  std::vector<size_t> Masters() {
    std::vector<size_t> masters;
    for (size_t i = 0; i < cluster_->size(); ++i) {
      absl::StatusOr<std::string> role = cluster_->node(i).Cli({"ROLE"});
      if (cluster_->node(i).running() && role.ok() && role->starts_with("master")) {
        masters.push_back(i);
      }
    }
    return masters;
  }

  static RedisCluster* cluster_;
};

RedisCluster* RedisClusterTest::cluster_ = nullptr;

TEST_F(RedisClusterTest, CommandsReachEveryMaster) {
  std::unique_ptr<Client> client = NewTestClient();
  ASSERT_NE(client, nullptr);
  // Send works before the topology is known: the first commands wait for it.
  ASSERT_TRUE(Call(*client, {"SET", "early", "1"}, "early").ok());
  EXPECT_NE(WaitFor([&] { return client->Healthy(); }, absl::Seconds(10)),
            absl::InfiniteDuration());

  const std::vector<size_t> masters = Masters();
  ASSERT_EQ(masters.size(), 3u);
  for (size_t master : masters) {
    const std::string key = KeyOn(*cluster_, master, absl::StrCat("every-", master, "-"));
    absl::StatusOr<Reply> set = Call(*client, {"SET", key, absl::StrCat("v", master)}, key);
    ASSERT_TRUE(set.ok() && set->type == Reply::Type::kStatus) << Describe(set);
    absl::StatusOr<Reply> get = Call(*client, {"GET", key}, key);
    ASSERT_TRUE(get.ok()) << Describe(get);
    EXPECT_EQ(get->str, absl::StrCat("v", master));
    // It really lives on that master.
    absl::StatusOr<std::string> direct = cluster_->node(master).Cli({"GET", key});
    ASSERT_TRUE(direct.ok());
    EXPECT_EQ(absl::StripAsciiWhitespace(*direct), absl::StrCat("v", master));
  }
  // Many keys, all slots' ranges: every answer right, and no redirect with a fresh table.
  for (int i = 0; i < 300; ++i) {
    const std::string key = absl::StrCat("spread-", i);
    absl::StatusOr<Reply> incr = Call(*client, {"INCRBY", key, std::to_string(i)}, key);
    ASSERT_TRUE(incr.ok() && incr->type == Reply::Type::kInteger) << key << Describe(incr);
    EXPECT_EQ(incr->integer, i);
  }
  const ClientStats stats = client->GetStats();
  EXPECT_EQ(stats.redirects, 0u);
  EXPECT_EQ(stats.connected_nodes, 3u);
}

TEST_F(RedisClusterTest, ReachedThroughAStoreUrl) {
  absl::StatusOr<ClientOptions> options = ParseStoreUrl(absl::StrCat(
      "redis-cluster://127.0.0.1:1,", cluster_->node(1).address(), "?timeout_ms=2000"));
  ASSERT_TRUE(options.ok()) << options.status();
  absl::StatusOr<std::unique_ptr<Client>> client = NewClient(*options);
  ASSERT_TRUE(client.ok()) << client.status();
  for (int i = 0; i < 20; ++i) {
    const std::string key = absl::StrCat("url-", i);
    absl::StatusOr<Reply> set = Call(**client, {"SET", key, "1"}, key);
    ASSERT_TRUE(set.ok() && set->type == Reply::Type::kStatus) << Describe(set);
  }
  EXPECT_EQ((*client)->GetStats().redirects, 0u);
}

TEST_F(RedisClusterTest, FollowsAskDuringMigrationAndMovedAfter) {
  // Long periodic refreshes and no redirect-triggered refresh before our checks run: the
  // client's table stays stale unless a redirect teaches it.
  std::unique_ptr<Client> client =
      NewTestClient({.refresh_interval_ms = 600000, .min_refresh_interval_ms = 600000});
  ASSERT_NE(client, nullptr);
  ASSERT_NE(WaitFor([&] { return client->Healthy(); }, absl::Seconds(10)),
            absl::InfiniteDuration());

  const std::vector<size_t> masters = Masters();
  ASSERT_EQ(masters.size(), 3u);
  const size_t from = masters[0];
  const size_t to = masters[1];
  // Two keys in one slot (a hash tag) that `from` owns.
  std::string tag = KeyOn(*cluster_, from, "tag");
  const std::string moved_key = absl::StrCat("{", tag, "}moved");
  const std::string stays_key = absl::StrCat("{", tag, "}stays");
  const int slot = HashSlot(moved_key);
  ASSERT_EQ(slot, HashSlot(stays_key));
  ASSERT_TRUE(Call(*client, {"SET", moved_key, "m"}, moved_key).ok());
  ASSERT_TRUE(Call(*client, {"SET", stays_key, "s"}, stays_key).ok());

  ASSERT_TRUE(cluster_->BeginMigration(slot, from, to).ok());
  ASSERT_TRUE(cluster_->MigrateKey(moved_key, from, to).ok());

  // The moved key: `from` answers ASK, the client asks `to` with ASKING.
  absl::StatusOr<Reply> get = Call(*client, {"GET", moved_key}, moved_key);
  ASSERT_TRUE(get.ok()) << Describe(get);
  EXPECT_EQ(get->type, Reply::Type::kString) << Describe(get);
  EXPECT_EQ(get->str, "m");
  EXPECT_EQ(client->GetStats().redirects, 1u);
  // A key still on `from` is served there, no redirect; ASK taught the table nothing.
  get = Call(*client, {"GET", stays_key}, stays_key);
  ASSERT_TRUE(get.ok()) << Describe(get);
  EXPECT_EQ(get->str, "s");
  get = Call(*client, {"GET", moved_key}, moved_key);
  ASSERT_TRUE(get.ok()) << Describe(get);
  EXPECT_EQ(get->str, "m");
  EXPECT_EQ(client->GetStats().redirects, 2u);

  ASSERT_TRUE(cluster_->MigrateKey(stays_key, from, to).ok());
  ASSERT_TRUE(cluster_->FinishMigration(slot, from, to).ok());

  // The slot is `to`'s now; the client still thinks `from`: MOVED, followed, table updated.
  get = Call(*client, {"GET", stays_key}, stays_key);
  ASSERT_TRUE(get.ok()) << Describe(get);
  EXPECT_EQ(get->str, "s");
  EXPECT_EQ(client->GetStats().redirects, 3u);
  get = Call(*client, {"GET", moved_key}, moved_key);
  ASSERT_TRUE(get.ok()) << Describe(get);
  EXPECT_EQ(get->str, "m");
  EXPECT_EQ(client->GetStats().redirects, 3u);  // the table knows now

  // A new client reads the new owner from CLUSTER SLOTS: no redirect at all.
  ASSERT_TRUE(cluster_->WaitOk(std::chrono::seconds(10), slot).ok());
  std::unique_ptr<Client> fresh = NewTestClient();
  get = Call(*fresh, {"GET", moved_key}, moved_key);
  ASSERT_TRUE(get.ok()) << Describe(get);
  EXPECT_EQ(get->str, "m");
  EXPECT_EQ(fresh->GetStats().redirects, 0u);
}

TEST_F(RedisClusterTest, RedirectsAreBoundedByTheCommandTimeout) {
  // A slot left MIGRATING on its owner and IMPORTING nowhere: a missing key gets ASK to a node
  // that answers MOVED back: a loop the client must cut.
  std::unique_ptr<Client> client = NewTestClient({.max_redirects = 5});
  ASSERT_NE(client, nullptr);
  const std::vector<size_t> masters = Masters();
  ASSERT_EQ(masters.size(), 3u);
  const size_t from = masters[2];
  const size_t to = masters[0];
  const std::string key = KeyOn(*cluster_, from, "loop");
  const int slot = HashSlot(key);
  absl::StatusOr<std::string> to_id = cluster_->NodeId(to);
  ASSERT_TRUE(to_id.ok());
  ASSERT_TRUE(cluster_->node(from)
                  .Cli({"CLUSTER", "SETSLOT", std::to_string(slot), "MIGRATING", *to_id})
                  .ok());
  absl::StatusOr<Reply> get = Call(*client, {"GET", key}, key);
  EXPECT_FALSE(get.ok()) << Describe(get);
  EXPECT_EQ(get.status().code(), absl::StatusCode::kUnavailable) << Describe(get);
  EXPECT_EQ(client->GetStats().redirects, 5u);
  ASSERT_TRUE(
      cluster_->node(from).Cli({"CLUSTER", "SETSLOT", std::to_string(slot), "STABLE"}).ok());
  get = Call(*client, {"GET", key}, key);
  EXPECT_TRUE(get.ok()) << Describe(get);
}

TEST_F(RedisClusterTest, RecoversWhenAMasterFailsOver) {
  std::unique_ptr<Client> client = NewTestClient({.refresh_interval_ms = 1000});
  ASSERT_NE(client, nullptr);
  ASSERT_NE(WaitFor([&] { return client->Healthy(); }, absl::Seconds(10)),
            absl::InfiniteDuration());
  const std::vector<size_t> masters = Masters();
  ASSERT_EQ(masters.size(), 3u);
  const size_t victim = masters[1];
  const std::string key = KeyOn(*cluster_, victim, "failover-");
  ASSERT_TRUE(Call(*client, {"SET", key, "41"}, key).ok());
  absl::StatusOr<Reply> synced = Call(*client, {"WAIT", "1", "2000"}, key);
  ASSERT_TRUE(synced.ok() && synced->integer == 1) << Describe(synced);

  cluster_->node(victim).Kill();
  const auto killed = std::chrono::steady_clock::now();
  // Commands for that slot fail until the replica is promoted and the client has learnt it;
  // then they go to the new master, which has the replicated value.
  absl::StatusOr<Reply> incr = absl::UnavailableError("not tried");
  const absl::Duration took = WaitFor(
      [&] {
        incr = Call(*client, {"INCR", key}, key);
        return incr.ok() && incr->type == Reply::Type::kInteger;
      },
      absl::Seconds(30));
  ASSERT_NE(took, absl::InfiniteDuration()) << Describe(incr);
  EXPECT_EQ(incr->integer, 42);
  absl::StatusOr<size_t> promoted = cluster_->MasterOf(HashSlot(key));
  ASSERT_TRUE(promoted.ok());
  EXPECT_NE(*promoted, victim);
  EXPECT_NE(WaitFor([&] { return client->Healthy(); }, absl::Seconds(10)),
            absl::InfiniteDuration());
  std::cerr << "failover: served again "
            << std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - killed)
                   .count()
            << " ms after the kill\n";
  // Every other master still served.
  for (int i = 0; i < 100; ++i) {
    const std::string k = absl::StrCat("after-", i);
    absl::StatusOr<Reply> set = Call(*client, {"SET", k, "x"}, k);
    ASSERT_TRUE(set.ok()) << k << Describe(set);
  }
}

}  // namespace
}  // namespace floodgate::redis
