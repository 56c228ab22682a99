// ShouldRateLimit over the wire, against the real binary: Envoy's matching rules, several
// descriptors, hits_addend, overrides, shadow mode, replaces, unlimited, bad input, health,
// live reload under load and a clean drain on SIGTERM.

#include <arpa/inet.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "testing/server_process.h"

namespace floodgate {
namespace {

namespace rls = ::envoy::service::ratelimit::v3;
namespace fs = std::filesystem;
using Response = rls::RateLimitResponse;

// Long windows so no test crosses a window boundary by accident, whatever the wall clock.
constexpr char kConfig[] = R"(domain: rl
descriptors:
  - key: user
    rate_limit: {unit: day, requests_per_unit: 3}
  - key: path
    value: /login
    rate_limit: {unit: day, requests_per_unit: 2, name: login}
  - key: path
    value: /admin*
    rate_limit: {unit: day, requests_per_unit: 100, name: admin, replaces: [{name: login}]}
  - key: path
    rate_limit: {unit: day, requests_per_unit: 5}
  - key: path
    value: /free
    rate_limit: {unlimited: true}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: day, requests_per_unit: 1}
  - key: team
    value: blue
    descriptors:
      - key: user
        rate_limit: {unit: day, requests_per_unit: 1}
  - key: tiered
    rate_limits:
      - {unit: hour, requests_per_unit: 10, name: hourly}
      - {unit: day, requests_per_unit: 2, name: daily}
)";

class GrpcIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir();
    ASSERT_FALSE(dir_.empty());
    std::ofstream(fs::path(dir_) / "rl.yaml") << kConfig;
    auto server = testing::ServerProcess::Start(testing::FloodgateBinary(), {"--config", dir_});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->grpc_port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = rls::RateLimitService::NewStub(channel_);
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(dir_);
  }

  grpc::Status Call(const rls::RateLimitRequest& request, Response* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return stub_->ShouldRateLimit(&context, request, response);
  }

  Response Decide(const rls::RateLimitRequest& request) {
    Response response;
    grpc::Status status = Call(request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  std::string dir_;
  std::unique_ptr<testing::ServerProcess> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<rls::RateLimitService::Stub> stub_;
};

rls::RateLimitRequest Request(
    std::vector<std::vector<std::pair<std::string, std::string>>> descriptors, uint32_t hits = 0) {
  rls::RateLimitRequest request;
  request.set_domain("rl");
  request.set_hits_addend(hits);
  for (const auto& entries : descriptors) {
    auto* d = request.add_descriptors();
    for (const auto& [k, v] : entries) {
      auto* e = d->add_entries();
      e->set_key(k);
      e->set_value(v);
    }
  }
  return request;
}

TEST_F(GrpcIntegrationTest, PerUserLimitWithStatusFieldsAndHeaders) {
  for (int i = 0; i < 3; ++i) {
    Response r = Decide(Request({{{"user", "alice"}}}));
    ASSERT_EQ(r.overall_code(), Response::OK) << i;
    EXPECT_EQ(r.statuses(0).current_limit().requests_per_unit(), 3u);
    EXPECT_EQ(r.statuses(0).current_limit().unit(), Response::RateLimit::DAY);
    EXPECT_EQ(r.statuses(0).limit_remaining(), 2u - i);
    EXPECT_GT(r.statuses(0).duration_until_reset().seconds(), 0);
  }
  Response refused = Decide(Request({{{"user", "alice"}}}));
  EXPECT_EQ(refused.overall_code(), Response::OVER_LIMIT);
  bool retry_after = false;
  for (const auto& h : refused.response_headers_to_add()) {
    retry_after |= h.key() == "Retry-After";
  }
  EXPECT_TRUE(retry_after);
  EXPECT_EQ(Decide(Request({{{"user", "bob"}}})).overall_code(), Response::OK);
}

TEST_F(GrpcIntegrationTest, MatchingRules) {
  // Exact value beats the wildcard and the key-only default.
  Decide(Request({{{"path", "/login"}}}));
  Decide(Request({{{"path", "/login"}}}));
  EXPECT_EQ(Decide(Request({{{"path", "/login"}}})).overall_code(), Response::OVER_LIMIT);
  // Wildcard prefix.
  Response admin = Decide(Request({{{"path", "/admin/users"}}}));
  EXPECT_EQ(admin.statuses(0).current_limit().requests_per_unit(), 100u);
  // Key alone: the default for any other value, counted per value.
  Response other = Decide(Request({{{"path", "/other"}}}));
  EXPECT_EQ(other.statuses(0).current_limit().requests_per_unit(), 5u);
  EXPECT_EQ(other.statuses(0).limit_remaining(), 4u);
  // Nested: team=blue then user; the parent alone has no limit; another team matches nothing.
  EXPECT_EQ(Decide(Request({{{"team", "blue"}, {"user", "u"}}})).overall_code(), Response::OK);
  EXPECT_EQ(Decide(Request({{{"team", "blue"}, {"user", "u"}}})).overall_code(),
            Response::OVER_LIMIT);
  EXPECT_FALSE(Decide(Request({{{"team", "blue"}}})).statuses(0).has_current_limit());
  EXPECT_FALSE(Decide(Request({{{"team", "red"}, {"user", "u"}}})).statuses(0).has_current_limit());
  // More entries than the config is deep: no limit.
  EXPECT_FALSE(Decide(Request({{{"user", "x"}, {"extra", "y"}}})).statuses(0).has_current_limit());
  // Unknown domain: OK, no limit.
  rls::RateLimitRequest unknown = Request({{{"user", "alice"}}});
  unknown.set_domain("nope");
  Response r = Decide(unknown);
  EXPECT_EQ(r.overall_code(), Response::OK);
  EXPECT_FALSE(r.statuses(0).has_current_limit());
}

TEST_F(GrpcIntegrationTest, SeveralDescriptorsAreAtomicAndReplacesWorks) {
  // user (3/day) and /login (2/day): the third is refused by login and consumes nothing.
  auto both = Request({{{"user", "carol"}}, {{"path", "/login"}}});
  EXPECT_EQ(Decide(both).overall_code(), Response::OK);
  EXPECT_EQ(Decide(both).overall_code(), Response::OK);
  Response refused = Decide(both);
  EXPECT_EQ(refused.overall_code(), Response::OVER_LIMIT);
  ASSERT_EQ(refused.statuses_size(), 2);
  EXPECT_EQ(refused.statuses(0).code(), Response::OK);
  EXPECT_EQ(refused.statuses(1).code(), Response::OVER_LIMIT);
  EXPECT_EQ(Decide(Request({{{"user", "carol"}}})).statuses(0).limit_remaining(), 0u);

  // admin replaces login in the same request: login's spent limit no longer applies.
  Response replaced = Decide(Request({{{"path", "/login"}}, {{"path", "/admin/x"}}}));
  EXPECT_EQ(replaced.overall_code(), Response::OK);
  EXPECT_FALSE(replaced.statuses(0).has_current_limit());
}

TEST_F(GrpcIntegrationTest, HitsAddendOverridesShadowUnlimitedAndSeveralWindows) {
  EXPECT_EQ(Decide(Request({{{"user", "dan"}}}, 3)).statuses(0).limit_remaining(), 0u);
  EXPECT_EQ(Decide(Request({{{"user", "eve"}}}, 4)).overall_code(), Response::OVER_LIMIT);
  // Per-descriptor hits_addend 0 only reads.
  rls::RateLimitRequest peek = Request({{{"user", "eve"}}});
  peek.mutable_descriptors(0)->mutable_hits_addend()->set_value(0);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(Decide(peek).statuses(0).limit_remaining(), 3u);
  }
  // Override: the caller's limit instead of the config's.
  rls::RateLimitRequest over = Request({{{"user", "fay"}}});
  over.mutable_descriptors(0)->mutable_limit()->set_requests_per_unit(1);
  over.mutable_descriptors(0)->mutable_limit()->set_unit(envoy::type::v3::HOUR);
  EXPECT_EQ(Decide(over).statuses(0).current_limit().unit(), Response::RateLimit::HOUR);
  EXPECT_EQ(Decide(over).overall_code(), Response::OVER_LIMIT);
  // Shadow mode: over the limit but never refused.
  Decide(Request({{{"shadow", "s"}}}));
  EXPECT_EQ(Decide(Request({{{"shadow", "s"}}})).overall_code(), Response::OK);
  // Unlimited.
  Response free = Decide(Request({{{"path", "/free"}}}, 1000000));
  EXPECT_EQ(free.overall_code(), Response::OK);
  EXPECT_EQ(free.statuses(0).limit_remaining(), 4294967295u);
  // Two windows on one key: the daily limit of 2 bites first, and is the one reported.
  Decide(Request({{{"tiered", "t"}}}));
  Decide(Request({{{"tiered", "t"}}}));
  Response tiered = Decide(Request({{{"tiered", "t"}}}));
  EXPECT_EQ(tiered.overall_code(), Response::OVER_LIMIT);
  EXPECT_EQ(tiered.statuses(0).current_limit().name(), "daily");
}

TEST_F(GrpcIntegrationTest, BadInputGetsClearErrorsAndServerKeepsServing) {
  Response response;
  rls::RateLimitRequest empty_domain = Request({{{"user", "a"}}});
  empty_domain.clear_domain();
  grpc::Status s = Call(empty_domain, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("domain"), std::string::npos);

  rls::RateLimitRequest none;
  none.set_domain("rl");
  EXPECT_EQ(Call(none, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  rls::RateLimitRequest thousands = Request({});
  for (int i = 0; i < 5000; ++i) {
    auto* e = thousands.add_descriptors()->add_entries();
    e->set_key("user");
    e->set_value(std::to_string(i));
  }
  s = Call(thousands, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("too many descriptors"), std::string::npos);

  rls::RateLimitRequest long_key = Request({{{std::string(10000, 'k'), "v"}}});
  EXPECT_EQ(Call(long_key, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  rls::RateLimitRequest huge = Request({{{"user", std::string(3 << 20, 'x')}}});
  EXPECT_EQ(Call(huge, &response).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  // Garbage bytes on the gRPC port: the connection fails, the server does not.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(server_->grpc_port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const std::string garbage = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\xff\xff\xff garbage";
  ASSERT_GT(write(fd, garbage.data(), garbage.size()), 0);
  char buf[256];
  (void)read(fd, buf, sizeof(buf));
  close(fd);

  EXPECT_EQ(Decide(Request({{{"user", "still-serving"}}})).overall_code(), Response::OK);
}

TEST_F(GrpcIntegrationTest, HealthService) {
  grpc::ClientContext context;
  grpc::ByteBuffer reply;
  // grpc.health.v1.HealthCheckRequest{service: ""} is an empty message.
  grpc::GenericStub generic(channel_);
  grpc::CompletionQueue cq;
  grpc::Slice empty;
  grpc::ByteBuffer request(&empty, 1);
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto call = generic.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(&reply, &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(reply.Dump(&slices).ok());
  std::string bytes;
  for (auto& slice : slices)
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  // HealthCheckResponse{status: SERVING (1)} encodes as field 1 varint 1.
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

TEST_F(GrpcIntegrationTest, ReloadUnderLoadFailsNoRequestAndTakesEffect) {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> failures{0}, calls{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      // Bounded: at most 20000 calls per client, and it stops when told.
      for (int i = 0; i < 20000 && !stop.load(); ++i) {
        Response response;
        grpc::Status s =
            Call(Request({{{"path", "/p" + std::to_string((t * 20000 + i) % 50)}}}), &response);
        calls.fetch_add(1);
        if (!s.ok()) failures.fetch_add(1);
      }
    });
  }
  // Rewrite the file several times, including a bad version, while the clients run.
  const fs::path file = fs::path(dir_) / "rl.yaml";
  std::string config = kConfig;
  for (int round = 0; round < 6; ++round) {
    std::string next = config;
    const size_t at = next.find("requests_per_unit: 5}");
    next.replace(at, 21, "requests_per_unit: " + std::to_string(6 + round) + "}");
    if (round == 3) next += "  - key: broken\n    rate_limit: {unit: fortnight}\n";
    {
      std::ofstream out(file.string() + ".tmp");
      out << next;
    }
    fs::rename(file.string() + ".tmp", file);
    // Wait (bounded) until the server reports the change: the check's limit moves.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    uint32_t want = round == 3 ? 6 + 2 : 6 + round;
    while (std::chrono::steady_clock::now() < deadline) {
      Response r = Decide(Request({{{"path", "/probe" + std::to_string(round)}}}, 1));
      if (r.statuses(0).current_limit().requests_per_unit() == want) break;
    }
    Response r = Decide(Request({{{"path", "/probe-final" + std::to_string(round)}}}));
    EXPECT_EQ(r.statuses(0).current_limit().requests_per_unit(), want) << "round " << round;
  }
  stop = true;
  for (auto& c : clients) c.join();
  EXPECT_GT(calls.load(), 0u);
  EXPECT_EQ(failures.load(), 0u);
}

TEST_F(GrpcIntegrationTest, SigtermDrainsAndExitsCleanly) {
  EXPECT_EQ(Decide(Request({{{"user", "z"}}})).overall_code(), Response::OK);
  const int status = server_->Stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace floodgate
