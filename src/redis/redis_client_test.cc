// Integration tests (label `integration` + `redis`): the client against a real redis-server
// started by testing/redis_server.h, and a fake TCP server that answers garbage.

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "src/redis/redis_client.h"
#include "src/redis/redis_node.h"
#include "testing/redis_server.h"
#include "testing/temp_dir.h"
#include "testing/tls_certs.h"
#include "testing/wait_for.h"

namespace floodgate::redis {
namespace {

using testing::RedisServer;
using testing::RedisServerOptions;

struct Outcome {
  absl::Notification done;
  absl::StatusOr<Reply> result = absl::UnknownError("no callback");
  absl::Time at;
};

// Sends `args` and returns the outcome holder (shared: a late callback finds it alive).
std::shared_ptr<Outcome> SendAsync(Client& client, std::vector<std::string> args) {
  auto outcome = std::make_shared<Outcome>();
  std::vector<std::string_view> views(args.begin(), args.end());
  client.Send(views, "", [outcome](absl::StatusOr<Reply> result) {
    outcome->result = std::move(result);
    outcome->at = absl::Now();
    outcome->done.Notify();
  });
  return outcome;
}

absl::StatusOr<Reply> Wait(const std::shared_ptr<Outcome>& outcome,
                           absl::Duration timeout = absl::Seconds(10)) {
  if (!outcome->done.WaitForNotificationWithTimeout(timeout)) {
    return absl::InternalError("test: the callback did not run in time");
  }
  return outcome->result;
}

absl::StatusOr<Reply> Call(Client& client, std::vector<std::string> args) {
  return Wait(SendAsync(client, std::move(args)));
}

ClientOptions OptionsFor(const RedisServer& server) {
  ClientOptions options;
  options.endpoints = {Endpoint{"127.0.0.1", static_cast<uint16_t>(server.port())}};
  options.timeout_ms = 2000;
  options.reconnect_min_ms = 10;
  options.reconnect_max_ms = 100;
  return options;
}

std::unique_ptr<Client> MustClient(const ClientOptions& options) {
  absl::StatusOr<std::unique_ptr<Client>> client = NewClient(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

std::unique_ptr<RedisServer> MustServer(RedisServerOptions options = {}) {
  absl::StatusOr<std::unique_ptr<RedisServer>> server = RedisServer::Start(std::move(options));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

// Waits until the client answers PING (reconnects are in the background).
bool ServesSoon(Client& client, absl::Duration timeout = absl::Seconds(10)) {
  return testing::WaitFor(
             [&] {
               absl::StatusOr<Reply> reply = Call(client, {"PING"});
               return reply.ok() && reply->str == "PONG";
             },
             timeout) != absl::InfiniteDuration();
}

// One connection keeps the order of every command; a pool keeps it per connection only, so with
// two the per-thread order is not checked (the total is).
class PipelineTest : public ::testing::TestWithParam<int> {};

TEST_P(PipelineTest, ManyThreadsAllAnswered) {
  auto server = MustServer();
  ASSERT_NE(server, nullptr);
  ClientOptions options = OptionsFor(*server);
  options.connections_per_node = GetParam();
  options.timeout_ms = 10000;
  options.max_pending_per_node = 100000;  // all 80,000 may be pending at once
  auto client = MustClient(options);
  ASSERT_NE(client, nullptr);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 10000;
  absl::Mutex mu;
  int answered = 0;
  int out_of_order = 0;
  int failed = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Each thread's own counter tells whether its replies came in its order.
      auto expected = std::make_shared<int64_t>(1);
      const std::string own = absl::StrCat("own:", t);
      for (int i = 0; i < kPerThread; ++i) {
        const std::string_view shared[] = {"INCR", "shared"};
        client->Send(shared, "", [&](absl::StatusOr<Reply> reply) {
          absl::MutexLock lock(&mu);
          failed += reply.ok() && reply->type == Reply::Type::kInteger ? 0 : 1;
          ++answered;
        });
        const std::string_view mine[] = {"INCR", own};
        client->Send(mine, "", [&, expected](absl::StatusOr<Reply> reply) {
          absl::MutexLock lock(&mu);
          if (!reply.ok() || reply->integer != (*expected)++) {
            ++out_of_order;
          }
          ++answered;
        });
      }
    });
  }
  for (std::thread& thread : threads) {
    thread.join();
  }
  {
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(
        mu.AwaitWithTimeout(absl::Condition(
                                +[](int* n) { return *n == kThreads * kPerThread * 2; }, &answered),
                            absl::Seconds(60)));
    EXPECT_EQ(failed, 0);
    if (GetParam() == 1) {
      EXPECT_EQ(out_of_order, 0);
    }
  }
  absl::StatusOr<Reply> total = Call(*client, {"GET", "shared"});
  ASSERT_TRUE(total.ok()) << total.status();
  EXPECT_EQ(total->str, "40000");
  const ClientStats stats = client->GetStats();
  EXPECT_EQ(stats.replies, stats.commands);
  EXPECT_EQ(stats.pending, 0u);
  EXPECT_EQ(stats.connected_nodes, 1u);
  EXPECT_TRUE(client->Healthy());
}

INSTANTIATE_TEST_SUITE_P(Connections, PipelineTest, ::testing::Values(1, 2));

TEST(RedisClientTest, ReplyTypesAndBinaryValues) {
  auto server = MustServer();
  ASSERT_NE(server, nullptr);
  auto client = MustClient(OptionsFor(*server));
  ASSERT_NE(client, nullptr);
  const std::string binary("a\0b\r\nc", 6);
  EXPECT_EQ(Call(*client, {"SET", "k", binary})->str, "OK");
  EXPECT_EQ(Call(*client, {"GET", "k"})->str, binary);
  EXPECT_EQ(Call(*client, {"GET", "missing"})->type, Reply::Type::kNil);
  absl::StatusOr<Reply> error = Call(*client, {"INCR", "k"});
  ASSERT_TRUE(error.ok()) << error.status();
  EXPECT_EQ(error->type, Reply::Type::kError);
  Call(*client, {"RPUSH", "list", "x", "y"});
  absl::StatusOr<Reply> list = Call(*client, {"LRANGE", "list", "0", "-1"});
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->elements.size(), 2u);
  EXPECT_EQ(list->elements[1].str, "y");
}

TEST(RedisClientTest, AuthAndWrongPassword) {
  auto server = MustServer({.args = {"--requirepass", "s3cret@x"}});
  ASSERT_NE(server, nullptr);
  ClientOptions options = OptionsFor(*server);
  options.password = "s3cret@x";
  auto client = MustClient(options);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(Call(*client, {"PING"})->str, "PONG");

  options.password = "wrong";
  auto wrong = MustClient(options);
  ASSERT_NE(wrong, nullptr);
  absl::StatusOr<Reply> refused = Call(*wrong, {"PING"});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
  EXPECT_NE(refused.status().message().find("refused AUTH: WRONGPASS"), std::string::npos)
      << refused.status();
  EXPECT_FALSE(wrong->Healthy());

  options.password.clear();
  auto none = MustClient(options);
  ASSERT_NE(none, nullptr);
  absl::StatusOr<Reply> noauth = Call(*none, {"PING"});
  ASSERT_TRUE(noauth.ok()) << noauth.status();
  EXPECT_EQ(noauth->type, Reply::Type::kError);
  EXPECT_EQ(noauth->str.rfind("NOAUTH", 0), 0u) << noauth->str;
}

TEST(RedisClientTest, SelectsTheDatabase) {
  auto server = MustServer();
  ASSERT_NE(server, nullptr);
  ClientOptions options = OptionsFor(*server);
  options.db = 3;
  auto client = MustClient(options);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(Call(*client, {"SET", "in3", "yes"})->str, "OK");
  absl::StatusOr<std::string> in3 = server->Cli({"-n", "3", "GET", "in3"});
  ASSERT_TRUE(in3.ok()) << in3.status();
  EXPECT_EQ(*in3, "yes\n");
  absl::StatusOr<std::string> in0 = server->Cli({"GET", "in3"});
  ASSERT_TRUE(in0.ok()) << in0.status();
  EXPECT_EQ(*in0, "\n");

  options.db = 99;  // past `databases 16`
  auto bad = MustClient(options);
  ASSERT_NE(bad, nullptr);
  absl::StatusOr<Reply> refused = Call(*bad, {"PING"});
  EXPECT_NE(refused.status().message().find("refused SELECT"), std::string::npos)
      << refused.status();
}

TEST(RedisClientTest, StalledServerTimesOutOpensBreakerAndRecovers) {
  auto server = MustServer();
  ASSERT_NE(server, nullptr);
  ClientOptions options = OptionsFor(*server);
  options.timeout_ms = 100;
  options.breaker_failures = 3;
  options.breaker_open_ms = 300;
  auto client = MustClient(options);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(ServesSoon(*client));
  server->Pause();
  for (int i = 0; i < 3; ++i) {
    const absl::Time start = absl::Now();
    auto outcome = SendAsync(*client, {"PING"});
    absl::StatusOr<Reply> reply = Wait(outcome);
    EXPECT_EQ(reply.status().code(), absl::StatusCode::kDeadlineExceeded) << reply.status();
    EXPECT_GE(outcome->at - start, absl::Milliseconds(90));
    EXPECT_LT(outcome->at - start, absl::Milliseconds(100 + 400));
  }
  // Open: refused at once, counted.
  const absl::Time start = absl::Now();
  auto refused = SendAsync(*client, {"PING"});
  absl::StatusOr<Reply> reply = Wait(refused);
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kUnavailable) << reply.status();
  EXPECT_LT(refused->at - start, absl::Milliseconds(50));
  EXPECT_FALSE(client->Healthy());
  ClientStats stats = client->GetStats();
  EXPECT_GE(stats.timeouts, 3u);
  EXPECT_GE(stats.breaker_open, 1u);
  server->Resume();
  EXPECT_TRUE(ServesSoon(*client));
  EXPECT_TRUE(testing::WaitFor([&] { return client->Healthy(); }, absl::Seconds(5)) !=
              absl::InfiniteDuration());
}

TEST(RedisClientTest, KilledServerFailsThenReconnectsOnRestart) {
  auto server = MustServer();
  ASSERT_NE(server, nullptr);
  ClientOptions options = OptionsFor(*server);
  options.breaker_open_ms = 100;
  auto client = MustClient(options);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(ServesSoon(*client));
  server->Kill();
  absl::StatusOr<Reply> lost = Call(*client, {"PING"});
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kUnavailable) << lost.status();
  EXPECT_TRUE(testing::WaitFor([&] { return !client->Healthy(); }, absl::Seconds(5)) !=
              absl::InfiniteDuration());
  ASSERT_TRUE(server->Restart().ok());
  EXPECT_TRUE(ServesSoon(*client));
  EXPECT_GE(client->GetStats().reconnects, 1u);
}

// A TCP server that answers whatever it reads with bytes that are not RESP.
class GarbageServer {
 public:
  GarbageServer() : acceptor_(io_, {boost::asio::ip::make_address("127.0.0.1"), 0}) {
    thread_ = std::thread([this] {
      while (true) {
        boost::system::error_code ec;
        boost::asio::ip::tcp::socket socket(io_);
        acceptor_.accept(socket, ec);
        if (ec || stop_) {
          return;
        }
        char buffer[256];
        socket.read_some(boost::asio::buffer(buffer), ec);
        boost::asio::write(socket, boost::asio::buffer(std::string("garbage\r\n")), ec);
        socket.read_some(boost::asio::buffer(buffer), ec);  // until the client closes
      }
    });
  }
  ~GarbageServer() {
    stop_ = true;
    boost::system::error_code ec;
    boost::asio::ip::tcp::socket poke(io_);
    poke.connect(acceptor_.local_endpoint(), ec);
    thread_.join();
  }
  uint16_t port() const { return acceptor_.local_endpoint().port(); }

 private:
  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(RedisClientTest, GarbageClosesTheConnectionWithAClearError) {
  GarbageServer garbage;
  ClientOptions options;
  options.endpoints = {Endpoint{"127.0.0.1", garbage.port()}};
  options.connections_per_node = 1;
  options.timeout_ms = 2000;
  options.reconnect_min_ms = 1000;
  options.reconnect_max_ms = 1000;
  auto client = MustClient(options);
  ASSERT_NE(client, nullptr);
  absl::StatusOr<Reply> reply = Call(*client, {"PING"});
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kUnavailable) << reply.status();
  EXPECT_NE(reply.status().message().find("malformed reply"), std::string::npos) << reply.status();
  EXPECT_NE(reply.status().message().find("'g'"), std::string::npos) << reply.status();
}

TEST(RedisClientTest, PendingBoundAndStopCancels) {
  auto server = MustServer();
  ASSERT_NE(server, nullptr);
  ClientOptions options = OptionsFor(*server);
  options.max_pending_per_node = 10;
  options.timeout_ms = 5000;
  auto client = MustClient(options);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(ServesSoon(*client));
  server->Pause();
  std::vector<std::shared_ptr<Outcome>> outcomes;
  for (int i = 0; i < 15; ++i) {
    outcomes.push_back(SendAsync(*client, {"PING"}));
  }
  for (int i = 10; i < 15; ++i) {
    EXPECT_EQ(Wait(outcomes[i]).status().code(), absl::StatusCode::kResourceExhausted);
  }
  EXPECT_EQ(client->GetStats().pending, 10u);
  client->Stop();
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(Wait(outcomes[i]).status().code(), absl::StatusCode::kCancelled);
  }
  client->Stop();  // idempotent
  EXPECT_EQ(Call(*client, {"PING"}).status().code(), absl::StatusCode::kCancelled);
  server->Resume();
}

// The Node API the Sentinel and Cluster clients build on: ASKING's reply is swallowed.
TEST(RedisNodeTest, AskingIsSwallowed) {
  auto server = MustServer();
  ASSERT_NE(server, nullptr);
  boost::asio::io_context io;
  auto work = boost::asio::make_work_guard(io);
  std::thread runner([&] { io.run(); });
  {
    Node node(io, Endpoint{"127.0.0.1", static_cast<uint16_t>(server->port())},
              OptionsFor(*server));
    absl::Notification done;
    absl::StatusOr<Reply> result;
    const std::string_view ping[] = {"PING"};
    node.Send(
        ping,
        [&](absl::StatusOr<Reply> reply) {
          result = std::move(reply);
          done.Notify();
        },
        /*asking=*/true);
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->str, "PONG");
    EXPECT_EQ(node.endpoint().port, server->port());
    node.Stop();
  }
  work.reset();
  io.stop();
  runner.join();
}

TEST(RedisClientTest, Tls) {
  testing::TempDir dir("floodgate-redis-tls");
  absl::StatusOr<testing::TestPki> pki = testing::MakeTestPki(dir.path());
  ASSERT_TRUE(pki.ok()) << pki.status();
  auto server = MustServer({.tls_cert_file = pki->server_cert,
                            .tls_key_file = pki->server_key,
                            .tls_ca_file = pki->ca_cert});
  ASSERT_NE(server, nullptr);
  absl::StatusOr<ClientOptions> options = ParseStoreUrl(absl::StrCat(
      "rediss://127.0.0.1:", server->tls_port(), "?tls_ca=", pki->ca_cert, "&timeout_ms=5000"));
  ASSERT_TRUE(options.ok()) << options.status();
  auto client = MustClient(*options);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(Call(*client, {"SET", "tls", "on"})->str, "OK");
  EXPECT_EQ(Call(*client, {"GET", "tls"})->str, "on");

  // A CA the server's certificate does not chain to: the handshake fails, clearly.
  options->tls_ca_file = pki->other_ca_cert;
  auto untrusted = MustClient(*options);
  ASSERT_NE(untrusted, nullptr);
  absl::StatusOr<Reply> refused = Call(*untrusted, {"PING"});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("TLS handshake"), std::string::npos)
      << refused.status();
}

}  // namespace
}  // namespace floodgate::redis
