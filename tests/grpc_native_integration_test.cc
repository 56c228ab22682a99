// The native gRPC front end (the default on a single node) against the real binary: hostile
// input (garbage, HTTP/1, oversized and malformed gRPC frames, slow clients) never stops it
// serving others, and it carries many concurrent streams on one connection and many
// connections, with grpc++ clients and a raw HTTP/2 client.

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "testing/h2_client.h"
#include "testing/server_process.h"

namespace floodgate {
namespace {

namespace rls = ::envoy::service::ratelimit::v3;
namespace fs = std::filesystem;
using testing::ClosedByPeer;
using testing::GrpcFrame;
using testing::H2Client;
using testing::H2Request;

constexpr char kConfig[] = R"(domain: rl
descriptors:
  - key: user
    rate_limit: {unit: second, requests_per_unit: 1000000}
)";

rls::RateLimitRequest Request(const std::string& user) {
  rls::RateLimitRequest request;
  request.set_domain("rl");
  auto* e = request.add_descriptors()->add_entries();
  e->set_key("user");
  e->set_value(user);
  return request;
}

class GrpcNativeIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir();
    std::ofstream(fs::path(dir_) / "rl.yaml") << kConfig;
    auto server = testing::ServerProcess::Start(testing::FloodgateBinary(),
                                                {"--config", dir_, "--grpc-impl", "native"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    port_ = server_->grpc_port();
  }
  void TearDown() override {
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Stop(), 0) << server_->Stderr();
    }
    fs::remove_all(dir_);
  }

  std::unique_ptr<rls::RateLimitService::Stub> NewStub(int channel_id = 0) {
    grpc::ChannelArguments args;
    args.SetInt("grpc.channel_id", channel_id);  // distinct channels, distinct connections
    return rls::RateLimitService::NewStub(grpc::CreateCustomChannel(
        "127.0.0.1:" + std::to_string(port_), grpc::InsecureChannelCredentials(), args));
  }
  grpc::Status Call(rls::RateLimitService::Stub& stub, const std::string& user) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    rls::RateLimitResponse response;
    grpc::Status status = stub.ShouldRateLimit(&context, Request(user), &response);
    if (status.ok() && response.overall_code() != rls::RateLimitResponse::OK) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "not OK");
    }
    return status;
  }

  std::string dir_;
  std::unique_ptr<testing::ServerProcess> server_;
  int port_ = 0;
};

// Every request with invalid UTF-8 in a string field makes protobuf log a line; the binary routes
// those through its rate-limited log (10 lines per 10 s), so a flood of them cannot flood it.
TEST_F(GrpcNativeIntegrationTest, InvalidUtf8FloodWritesAtMostABurstOfLogLines) {
  H2Client raw(port_);
  H2Request bad;
  bad.body = GrpcFrame(Request("\xc3\x28 not UTF-8").SerializeAsString());
  for (int i = 0; i < 200; ++i) {
    const testing::H2Response r = raw.Call(bad);
    ASSERT_EQ(r.grpc_status(), 3) << i;
    ASSERT_NE(r.grpc_message().find("not valid UTF-8"), std::string::npos) << r.grpc_message();
  }
  ASSERT_TRUE(Call(*NewStub(), "after").ok());
  const std::string err = server_->Stderr();
  size_t lines = 0;
  for (size_t at = err.find("ERROR protobuf "); at != std::string::npos;
       at = err.find("ERROR protobuf ", at + 1)) {
    ++lines;
  }
  EXPECT_GE(lines, 1u) << err;
  EXPECT_LE(lines, 10u) << err;
  EXPECT_EQ(err.find("[libprotobuf"), std::string::npos) << err;
}

TEST_F(GrpcNativeIntegrationTest, HostileInputNeverStopsServingOthers) {
  auto stub = NewStub();
  ASSERT_TRUE(Call(*stub, "before").ok());
  // Garbage, HTTP/1 and a broken HTTP/2 preface: each connection is closed.
  for (const std::string bytes :
       {std::string(4096, '\x17'), std::string("POST / HTTP/1.1\r\nHost: x\r\n\r\n"),
        std::string("PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")}) {
    const int fd = testing::ConnectLoopback(port_);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    EXPECT_TRUE(ClosedByPeer(fd, 5000));
    close(fd);
  }
  // Malformed gRPC on a live connection: a status each, the connection stays up.
  H2Client raw(port_);
  H2Request bad;
  bad.body = std::string("\x00\x00\x00\x00\x10", 5) + "short";  // truncated
  EXPECT_EQ(raw.Call(bad).grpc_status(), 13);
  bad.body = GrpcFrame("\x0a\xff\xff\xff\xff\xff");  // not a protobuf
  EXPECT_EQ(raw.Call(bad).grpc_status(), 3);
  bad.body = GrpcFrame(Request("z").SerializeAsString(), 1);  // compressed
  EXPECT_EQ(raw.Call(bad).grpc_status(), 12);
  bad.body = GrpcFrame(std::string(2 << 20, 'x'));  // over the 1 MiB limit
  EXPECT_EQ(raw.Call(bad).grpc_status(), 8);
  bad.path = "/some.Other/Service";
  bad.body = GrpcFrame("");
  EXPECT_EQ(raw.Call(bad).grpc_status(), 12);

  // Slow clients: connections that send nothing, half a preface, or headers and half a
  // message, and then stall. Others are served meanwhile.
  std::vector<int> stalled;
  for (int i = 0; i < 50; ++i) {
    const int fd = testing::ConnectLoopback(port_);
    ASSERT_GE(fd, 0);
    if (i % 2 == 1) {
      ASSERT_EQ(write(fd, "PRI * HTTP/2.0\r\n", 16), 16);
    }
    stalled.push_back(fd);
  }
  std::vector<std::unique_ptr<H2Client>> half_sent;
  for (int i = 0; i < 20; ++i) {
    half_sent.push_back(std::make_unique<H2Client>(port_));
    H2Request slow;
    slow.body = GrpcFrame(Request("slow").SerializeAsString()).substr(0, 7);
    slow.end_stream = false;
    half_sent.back()->Start({slow});
  }
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(Call(*stub, "during-" + std::to_string(i)).ok());
  }
  for (int fd : stalled) {
    close(fd);
  }
  EXPECT_TRUE(Call(*NewStub(7), "after").ok());
}

TEST_F(GrpcNativeIntegrationTest, ThousandConcurrentStreamsOnOneConnection) {
  auto stub = NewStub();
  grpc::CompletionQueue cq;
  struct AsyncCall {
    grpc::ClientContext context;
    rls::RateLimitResponse response;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<rls::RateLimitResponse>> reader;
  };
  constexpr int kCalls = 1000;
  std::vector<std::unique_ptr<AsyncCall>> calls;
  for (int i = 0; i < kCalls; ++i) {
    auto call = std::make_unique<AsyncCall>();
    call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    call->reader = stub->AsyncShouldRateLimit(&call->context, Request(std::to_string(i)), &cq);
    call->reader->Finish(&call->response, &call->status, call.get());
    calls.push_back(std::move(call));
  }
  int ok = 0;
  for (int i = 0; i < kCalls; ++i) {
    void* tag;
    bool got;
    ASSERT_TRUE(cq.Next(&tag, &got));
    auto* call = static_cast<AsyncCall*>(tag);
    ok += call->status.ok() && call->response.overall_code() == rls::RateLimitResponse::OK;
  }
  EXPECT_EQ(ok, kCalls);
  cq.Shutdown();
  void* tag;
  bool got;
  while (cq.Next(&tag, &got)) {
  }
}

TEST_F(GrpcNativeIntegrationTest, ManyConnectionsFromManyThreads) {
  constexpr int kThreads = 8;
  constexpr int kChannelsPerThread = 25;  // 200 connections
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::unique_ptr<rls::RateLimitService::Stub>> stubs;
      for (int c = 0; c < kChannelsPerThread; ++c) {
        stubs.push_back(NewStub(t * kChannelsPerThread + c + 1));
      }
      for (int round = 0; round < 10; ++round) {
        for (auto& stub : stubs) {
          if (!Call(*stub, "t" + std::to_string(t)).ok()) {
            failures.fetch_add(1);
          }
        }
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace floodgate
