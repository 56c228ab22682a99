// The Sentinel client against real Redis: a master, its replica and three sentinels (quorum 2,
// down-after-milliseconds 500). Commands reach the master; after the master is killed the
// client writes to the promoted replica, found through the re-query commands' failures trigger,
// or through +switch-master alone when no command runs.

#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "src/redis/redis_client.h"
#include "src/redis/redis_topology.h"
#include "testing/redis_server.h"
#include "testing/wait_for.h"

namespace floodgate::redis {
namespace {

using ::floodgate::testing::RedisServer;
using ::floodgate::testing::RedisServerOptions;
using ::floodgate::testing::WaitFor;

constexpr char kMasterName[] = "mymaster";

absl::StatusOr<Reply> Call(Client& client, std::vector<std::string> args) {
  struct Result {
    absl::Notification done;
    absl::StatusOr<Reply> reply = absl::InternalError("no callback");
  };
  auto result = std::make_shared<Result>();
  std::vector<std::string_view> views(args.begin(), args.end());
  client.Send(views, "", [result](absl::StatusOr<Reply> reply) {
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

// A master, a replica of it, and three sentinels watching it, each ready.
class Deployment {
 public:
  absl::Status Start() {
    RedisServerOptions master_options;
    master_options.args = {"--repl-diskless-sync-delay", "0"};  // sync the replica at once
    absl::StatusOr<std::unique_ptr<RedisServer>> master = RedisServer::Start(master_options);
    if (!master.ok()) {
      return master.status();
    }
    master_ = std::move(*master);
    RedisServerOptions replica_options;
    replica_options.args = {"--replicaof", "127.0.0.1", std::to_string(master_->port())};
    absl::StatusOr<std::unique_ptr<RedisServer>> replica = RedisServer::Start(replica_options);
    if (!replica.ok()) {
      return replica.status();
    }
    replica_ = std::move(*replica);
    // The replica attached first, so the sentinels learn it from their first INFO.
    if (WaitFor(
            [&] {
              absl::StatusOr<std::string> info = master_->Cli({"INFO", "replication"});
              return info.ok() && absl::StrContains(*info, "connected_slaves:1") &&
                     absl::StrContains(*info, "state=online");  // synced, not just attached
            },
            absl::Seconds(20)) == absl::InfiniteDuration()) {
      return absl::DeadlineExceededError("the replica never attached");
    }
    for (int i = 0; i < 3; ++i) {
      RedisServerOptions options;
      options.sentinel = true;
      options.config_text = absl::StrCat(
          "sentinel monitor ", kMasterName, " 127.0.0.1 ", master_->port(), " 2\n",
          "sentinel down-after-milliseconds ", kMasterName, " 500\n", "sentinel failover-timeout ",
          kMasterName, " 5000\n", "sentinel parallel-syncs ", kMasterName, " 1\n");
      absl::StatusOr<std::unique_ptr<RedisServer>> sentinel = RedisServer::Start(options);
      if (!sentinel.ok()) {
        return sentinel.status();
      }
      sentinels_.push_back(std::move(*sentinel));
    }
    // A failover needs the sentinels to know each other (hello messages, every 2 s) and the
    // replica.
    if (WaitFor(
            [&] {
              for (const auto& sentinel : sentinels_) {
                absl::StatusOr<std::string> state =
                    sentinel->Cli({"SENTINEL", "MASTER", kMasterName});
                if (!state.ok() || !absl::StrContains(*state, "num-other-sentinels\n2\n") ||
                    !absl::StrContains(*state, "num-slaves\n1\n")) {
                  return false;
                }
              }
              return true;
            },
            absl::Seconds(30)) == absl::InfiniteDuration()) {
      return absl::DeadlineExceededError(
          absl::StrCat("the sentinels never met: ",
                       sentinels_[0]->Cli({"SENTINEL", "MASTER", kMasterName}).value_or("?")));
    }
    return absl::OkStatus();
  }

  ClientOptions Options(bool with_dead_sentinel_first) const {
    ClientOptions options;
    options.mode = ClientOptions::Mode::kSentinel;
    options.master_name = kMasterName;
    if (with_dead_sentinel_first) {
      options.endpoints.push_back(Endpoint{"127.0.0.1", 1});  // nothing listens on port 1
    }
    for (const auto& sentinel : sentinels_) {
      options.endpoints.push_back(Endpoint{"127.0.0.1", static_cast<uint16_t>(sentinel->port())});
    }
    options.timeout_ms = 2000;  // a loaded test machine; failures come fast (RST, breaker)
    options.connect_timeout_ms = 1000;
    options.reconnect_max_ms = 200;
    options.breaker_open_ms = 200;
    return options;
  }

  RedisServer& master() { return *master_; }
  RedisServer& replica() { return *replica_; }

 private:
  std::unique_ptr<RedisServer> master_;
  std::unique_ptr<RedisServer> replica_;
  std::vector<std::unique_ptr<RedisServer>> sentinels_;
};

TEST(RedisSentinelTest, CommandsGoToTheMaster) {
  Deployment deployment;
  ASSERT_TRUE(deployment.Start().ok());
  absl::StatusOr<std::unique_ptr<Client>> client =
      NewSentinelClient(deployment.Options(/*with_dead_sentinel_first=*/true));
  ASSERT_TRUE(client.ok()) << client.status();
  // Send works at once: the command waits for the master to be found.
  absl::StatusOr<Reply> set = Call(**client, {"SET", "where", "master"});
  ASSERT_TRUE(set.ok() && set->type == Reply::Type::kStatus) << Describe(set);
  absl::StatusOr<std::string> direct = deployment.master().Cli({"GET", "where"});
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ(absl::StripAsciiWhitespace(*direct), "master");
  EXPECT_TRUE((*client)->Healthy());
  absl::StatusOr<Reply> role = Call(**client, {"ROLE"});
  ASSERT_TRUE(role.ok()) << Describe(role);
  ASSERT_FALSE(role->elements.empty());
  EXPECT_EQ(role->elements[0].str, "master");
}

TEST(RedisSentinelTest, ReachedThroughAStoreUrl) {
  Deployment deployment;
  ASSERT_TRUE(deployment.Start().ok());
  const ClientOptions direct = deployment.Options(false);
  std::string sentinels;
  for (const Endpoint& sentinel : direct.endpoints) {
    absl::StrAppend(&sentinels, sentinels.empty() ? "" : ",", sentinel.host, ":", sentinel.port);
  }
  absl::StatusOr<ClientOptions> options = ParseStoreUrl(
      absl::StrCat("redis-sentinel://", sentinels, "/", kMasterName, "/3?timeout_ms=2000"));
  ASSERT_TRUE(options.ok()) << options.status();
  absl::StatusOr<std::unique_ptr<Client>> client = NewClient(*options);
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<Reply> set = Call(**client, {"SET", "in-db-3", "yes"});
  ASSERT_TRUE(set.ok() && set->type == Reply::Type::kStatus) << Describe(set);
  // The master's database 3 (SELECT on the master; the sentinels have none).
  absl::StatusOr<std::string> check = deployment.master().Cli({"-n", "3", "GET", "in-db-3"});
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_EQ(absl::StripAsciiWhitespace(*check), "yes");
}

TEST(RedisSentinelTest, BadOptionsAreRefused) {
  ClientOptions options;
  options.mode = ClientOptions::Mode::kSentinel;
  EXPECT_EQ(NewSentinelClient(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.endpoints = {Endpoint{"127.0.0.1", 1}};
  EXPECT_EQ(NewSentinelClient(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RedisSentinelTest, NoMasterKnownMeansUnhealthyAndTimeouts) {
  ClientOptions options;
  options.mode = ClientOptions::Mode::kSentinel;
  options.master_name = kMasterName;
  options.endpoints = {Endpoint{"127.0.0.1", 1}};
  options.timeout_ms = 100;
  absl::StatusOr<std::unique_ptr<Client>> client = NewSentinelClient(options);
  ASSERT_TRUE(client.ok());
  absl::StatusOr<Reply> ping = Call(**client, {"PING"});
  EXPECT_EQ(ping.status().code(), absl::StatusCode::kDeadlineExceeded) << Describe(ping);
  EXPECT_FALSE((*client)->Healthy());
}

// Kills the master with commands running: their failures make the client ask again (bounded
// rate) until the sentinels name the promoted replica.
TEST(RedisSentinelTest, WritesGoToThePromotedReplicaAfterTheMasterDies) {
  Deployment deployment;
  ASSERT_TRUE(deployment.Start().ok());
  absl::StatusOr<std::unique_ptr<Client>> client = NewSentinelClient(deployment.Options(false));
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE(Call(**client, {"SET", "counter", "10"}).ok());
  absl::StatusOr<Reply> synced = Call(**client, {"WAIT", "1", "2000"});
  ASSERT_TRUE(synced.ok() && synced->integer == 1) << Describe(synced);

  deployment.master().Kill();
  const auto killed = std::chrono::steady_clock::now();
  absl::StatusOr<Reply> incr = absl::UnavailableError("not tried");
  ASSERT_NE(WaitFor(
                [&] {
                  incr = Call(**client, {"INCR", "counter"});
                  return incr.ok() && incr->type == Reply::Type::kInteger;
                },
                absl::Seconds(30)),
            absl::InfiniteDuration())
      << Describe(incr);
  EXPECT_EQ(incr->integer, 11);  // the replicated value, on the promoted replica
  absl::StatusOr<std::string> role = deployment.replica().Cli({"ROLE"});
  ASSERT_TRUE(role.ok());
  EXPECT_TRUE(absl::StartsWith(*role, "master")) << *role;
  EXPECT_TRUE((*client)->Healthy());
  std::cerr << "sentinel failover: writing again "
            << std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - killed)
                   .count()
            << " ms after the kill\n";
}

// No command runs during the failover, and every re-query but +switch-master's (which skips
// the rate limit) is held back for ten minutes: only the message can tell the client.
TEST(RedisSentinelTest, SwitchMasterMessageAloneMovesTheClient) {
  Deployment deployment;
  ASSERT_TRUE(deployment.Start().ok());
  absl::StatusOr<std::unique_ptr<Client>> client = NewSentinelClient(
      deployment.Options(false),
      TopologyOptions{.refresh_interval_ms = 600000, .min_refresh_interval_ms = 600000});
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE(Call(**client, {"SET", "counter", "20"}).ok());
  absl::StatusOr<Reply> synced = Call(**client, {"WAIT", "1", "2000"});
  ASSERT_TRUE(synced.ok() && synced->integer == 1) << Describe(synced);

  deployment.master().Kill();
  // Unhealthy while the old master is gone; healthy again once it follows the promotion.
  ASSERT_NE(WaitFor([&] { return !(*client)->Healthy(); }, absl::Seconds(10)),
            absl::InfiniteDuration());
  ASSERT_NE(WaitFor([&] { return (*client)->Healthy(); }, absl::Seconds(30)),
            absl::InfiniteDuration());
  absl::StatusOr<Reply> incr = Call(**client, {"INCR", "counter"});
  ASSERT_TRUE(incr.ok()) << Describe(incr);
  EXPECT_EQ(incr->integer, 21);
}

}  // namespace
}  // namespace floodgate::redis
