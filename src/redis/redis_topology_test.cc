// The pure pieces of the Sentinel and Cluster clients: reply parsers and the parking lot.
// (The clients themselves run against real Redis: redis_sentinel_test.cc, redis_cluster_test.cc.)

#include "src/redis/redis_topology.h"

#include <thread>

#include <gtest/gtest.h>
#include <boost/asio/executor_work_guard.hpp>

#include "absl/synchronization/notification.h"

namespace floodgate::redis::topology_internal {
namespace {

Reply Str(std::string s) { return Reply{Reply::Type::kString, 0, std::move(s), {}}; }
Reply Int(int64_t i) { return Reply{Reply::Type::kInteger, i, "", {}}; }
Reply Nil() { return Reply{}; }
Reply Arr(std::vector<Reply> elements) {
  return Reply{Reply::Type::kArray, 0, "", std::move(elements)};
}

TEST(ParseRedirect, MovedAndAsk) {
  std::optional<Redirect> moved = ParseRedirect("MOVED 3999 127.0.0.1:6381", "h");
  ASSERT_TRUE(moved.has_value());
  EXPECT_EQ(moved->kind, Redirect::Kind::kMoved);
  EXPECT_EQ(moved->slot, 3999);
  EXPECT_EQ(moved->endpoint.host, "127.0.0.1");
  EXPECT_EQ(moved->endpoint.port, 6381);

  std::optional<Redirect> ask = ParseRedirect("-ASK 16383 redis-2.local:7000", "h");
  ASSERT_TRUE(ask.has_value());
  EXPECT_EQ(ask->kind, Redirect::Kind::kAsk);
  EXPECT_EQ(ask->slot, 16383);
  EXPECT_EQ(ask->endpoint.host, "redis-2.local");
}

TEST(ParseRedirect, EmptyHostMeansTheReplyingNode) {
  std::optional<Redirect> moved = ParseRedirect("MOVED 1 :7001", "10.0.0.5");
  ASSERT_TRUE(moved.has_value());
  EXPECT_EQ(moved->endpoint.host, "10.0.0.5");
  EXPECT_EQ(moved->endpoint.port, 7001);
}

TEST(ParseRedirect, Ipv6WithoutBrackets) {
  std::optional<Redirect> moved = ParseRedirect("MOVED 5 ::1:7001", "h");
  ASSERT_TRUE(moved.has_value());
  EXPECT_EQ(moved->endpoint.host, "::1");
  EXPECT_EQ(moved->endpoint.port, 7001);
}

TEST(ParseRedirect, RejectsOtherErrorsAndGarbage) {
  EXPECT_FALSE(ParseRedirect("ERR unknown command", "h").has_value());
  EXPECT_FALSE(ParseRedirect("MOVED", "h").has_value());
  EXPECT_FALSE(ParseRedirect("MOVED 16384 a:1", "h").has_value());
  EXPECT_FALSE(ParseRedirect("MOVED 1 a:0", "h").has_value());
  EXPECT_FALSE(ParseRedirect("MOVED 1 a:70000", "h").has_value());
  EXPECT_FALSE(ParseRedirect("MOVED x a:1", "h").has_value());
  EXPECT_FALSE(ParseRedirect("MOVED 1 nocolon", "h").has_value());
  EXPECT_FALSE(ParseRedirect("MOVED 1 a:1 extra", "h").has_value());
}

TEST(ParseClusterSlots, RangesWithReplicasAndUnknownEndpoints) {
  Reply reply = Arr({
      Arr({Int(0), Int(5460), Arr({Str("127.0.0.1"), Int(7000), Str("id0")}),
           Arr({Str("127.0.0.1"), Int(7003), Str("id3")})}),
      Arr({Int(5461), Int(10922), Arr({Nil(), Int(7001), Str("id1")})}),
      Arr({Int(10923), Int(16383), Arr({Str(""), Int(7002), Str("id2")})}),
      Arr({Int(100), Int(100), Arr({Str("?"), Int(7009), Str("id9")})}),
  });
  absl::StatusOr<std::vector<SlotRange>> ranges = ParseClusterSlots(reply, "seed.local");
  ASSERT_TRUE(ranges.ok()) << ranges.status();
  ASSERT_EQ(ranges->size(), 3u);
  EXPECT_EQ((*ranges)[0].first, 0);
  EXPECT_EQ((*ranges)[0].last, 5460);
  EXPECT_EQ((*ranges)[0].master.host, "127.0.0.1");
  EXPECT_EQ((*ranges)[0].master.port, 7000);
  EXPECT_EQ((*ranges)[1].master.host, "seed.local");  // NULL endpoint
  EXPECT_EQ((*ranges)[2].master.host, "seed.local");  // empty endpoint
  EXPECT_EQ((*ranges)[2].last, 16383);
}

TEST(ParseClusterSlots, RejectsMalformedReplies) {
  EXPECT_FALSE(ParseClusterSlots(Str("x"), "h").ok());
  EXPECT_FALSE(ParseClusterSlots(Arr({Arr({Int(0), Int(1)})}), "h").ok());
  EXPECT_FALSE(ParseClusterSlots(Arr({Arr({Int(5), Int(1), Arr({Str("a"), Int(1)})})}), "h").ok());
  EXPECT_FALSE(
      ParseClusterSlots(Arr({Arr({Int(0), Int(16384), Arr({Str("a"), Int(1)})})}), "h").ok());
  EXPECT_FALSE(ParseClusterSlots(Arr({Arr({Int(0), Int(1), Arr({Str("a"), Int(0)})})}), "h").ok());
  EXPECT_TRUE(ParseClusterSlots(Arr({}), "h").ok());
}

TEST(ParseMasterAddr, AddressNilAndErrors) {
  absl::StatusOr<Endpoint> master = ParseMasterAddr(Arr({Str("10.1.2.3"), Str("6380")}));
  ASSERT_TRUE(master.ok()) << master.status();
  EXPECT_EQ(master->host, "10.1.2.3");
  EXPECT_EQ(master->port, 6380);
  EXPECT_EQ(ParseMasterAddr(Nil()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(ParseMasterAddr(Reply{Reply::Type::kError, 0, "ERR no", {}}).ok());
  EXPECT_FALSE(ParseMasterAddr(Arr({Str("h")})).ok());
  EXPECT_FALSE(ParseMasterAddr(Arr({Str("h"), Str("port")})).ok());
}

TEST(IsMasterRole, MasterOnly) {
  EXPECT_TRUE(IsMasterRole(Arr({Str("master"), Int(0), Arr({})})));
  EXPECT_FALSE(IsMasterRole(Arr({Str("slave"), Str("h"), Int(1), Str("connected"), Int(0)})));
  EXPECT_FALSE(IsMasterRole(Str("master")));
}

TEST(ParseSwitchMaster, OnlyOurMaster) {
  Reply push =
      Arr({Str("message"), Str("+switch-master"), Str("mymaster 127.0.0.1 6379 127.0.0.1 6380")});
  std::optional<Endpoint> moved = ParseSwitchMaster(push, "mymaster");
  ASSERT_TRUE(moved.has_value());
  EXPECT_EQ(moved->host, "127.0.0.1");
  EXPECT_EQ(moved->port, 6380);
  EXPECT_FALSE(ParseSwitchMaster(push, "other").has_value());
  EXPECT_FALSE(ParseSwitchMaster(Arr({Str("subscribe"), Str("+switch-master"), Int(1)}), "mymaster")
                   .has_value());
  EXPECT_FALSE(
      ParseSwitchMaster(Arr({Str("message"), Str("+switch-master"), Str("mymaster 1")}), "mymaster")
          .has_value());
}

TEST(RefreshGapMs, DoublesPerFailureUpToTheCap) {
  TopologyOptions topology{.min_refresh_interval_ms = 100, .max_refresh_backoff_ms = 1000};
  EXPECT_EQ(RefreshGapMs(topology, 0), 100);
  EXPECT_EQ(RefreshGapMs(topology, 1), 200);
  EXPECT_EQ(RefreshGapMs(topology, 3), 800);
  EXPECT_EQ(RefreshGapMs(topology, 4), 1000);
  EXPECT_EQ(RefreshGapMs(topology, 1000), 1000);
  topology.min_refresh_interval_ms = 5000;  // a minimum above the cap wins
  EXPECT_EQ(RefreshGapMs(topology, 3), 5000);
  topology.min_refresh_interval_ms = 0;
  EXPECT_EQ(RefreshGapMs(topology, 0), 0);
  EXPECT_EQ(RefreshGapMs(topology, 2), 2);  // a zero minimum backs off from 1 ms
}

TEST(PendingCommand, KeepsItsOwnArgumentsAndCompletesOnce) {
  int calls = 0;
  std::string a = "SET", b = "key", c = std::string("v\0v", 3);
  const std::string_view args[] = {a, b, c};
  PendingCommand command(
      args, 7, [&calls](absl::StatusOr<Reply>) { ++calls; }, std::chrono::steady_clock::now());
  a = "XXX";
  b.clear();
  ASSERT_EQ(command.args.size(), 3u);
  EXPECT_EQ(command.args[0], "SET");
  EXPECT_EQ(command.args[1], "key");
  EXPECT_EQ(command.args[2], std::string_view("v\0v", 3));
  EXPECT_TRUE(command.Complete(Reply{}));
  EXPECT_FALSE(command.Complete(absl::CancelledError("late")));
  EXPECT_TRUE(command.done());
  EXPECT_EQ(calls, 1);
}

// Runs an io_context on a thread for the test's life.
class IoThread {
 public:
  IoThread() : work_(io_.get_executor()), thread_([this] { io_.run(); }) {}
  ~IoThread() {
    work_.reset();
    io_.stop();
    thread_.join();
  }
  boost::asio::io_context& io() { return io_; }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::thread thread_;
};

std::shared_ptr<PendingCommand> Command(std::chrono::milliseconds timeout, absl::Notification* done,
                                        absl::Status* status) {
  const std::string_view args[] = {"PING"};
  return std::make_shared<PendingCommand>(
      args, 0,
      [done, status](absl::StatusOr<Reply> result) {
        *status = result.status();
        done->Notify();
      },
      std::chrono::steady_clock::now() + timeout);
}

TEST(Parking, WakeAllHandsCommandsBack) {
  IoThread io;
  absl::Notification woken;
  std::shared_ptr<PendingCommand> seen;
  Parking parking(io.io(), 10, [&](std::shared_ptr<PendingCommand> command) {
    seen = std::move(command);
    woken.Notify();
  });
  absl::Notification done;
  absl::Status status;
  auto command = Command(std::chrono::seconds(30), &done, &status);
  ASSERT_TRUE(parking.Park(command, std::nullopt));
  EXPECT_EQ(parking.size(), 1u);
  parking.WakeAll();
  ASSERT_TRUE(woken.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(seen, command);
  EXPECT_EQ(parking.size(), 0u);
  EXPECT_FALSE(done.HasBeenNotified());
}

TEST(Parking, WakesAtItsTimeAndExpiresAtItsDeadline) {
  IoThread io;
  absl::Notification woken;
  Parking parking(io.io(), 10, [&](std::shared_ptr<PendingCommand>) { woken.Notify(); });
  absl::Notification expired_done, woken_done;
  absl::Status expired_status, woken_status;
  ASSERT_TRUE(parking.Park(Command(std::chrono::milliseconds(20), &expired_done, &expired_status),
                           std::nullopt));
  ASSERT_TRUE(parking.Park(Command(std::chrono::seconds(30), &woken_done, &woken_status),
                           std::chrono::steady_clock::now() + std::chrono::milliseconds(40)));
  ASSERT_TRUE(expired_done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(expired_status.code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(woken.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_FALSE(woken_done.HasBeenNotified());
}

TEST(Parking, BoundedAndFailAll) {
  IoThread io;
  Parking parking(io.io(), 1, [](std::shared_ptr<PendingCommand>) {});
  absl::Notification done1, done2;
  absl::Status status1, status2;
  ASSERT_TRUE(parking.Park(Command(std::chrono::seconds(30), &done1, &status1), std::nullopt));
  EXPECT_FALSE(parking.Park(Command(std::chrono::seconds(30), &done2, &status2), std::nullopt));
  parking.FailAll(absl::CancelledError("stop"));
  ASSERT_TRUE(done1.HasBeenNotified());
  EXPECT_EQ(status1.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(parking.size(), 0u);
}

}  // namespace
}  // namespace floodgate::redis::topology_internal
