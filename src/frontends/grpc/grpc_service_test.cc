// The gRPC front ends' worker pool (cluster mode), for both implementations: a check past the
// queue bound, or one that waited past max_queue_delay, is shed (decided at once, without
// waiting for other nodes) instead of queueing. GatedStore stands in for the cluster.

#include "src/frontends/grpc/grpc_service.h"

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "floodgate/store.h"
#include "testing/fake_clock.h"
#include "testing/gated_store.h"
#include "testing/h2_client.h"

namespace floodgate::frontends {
namespace {

namespace rls = ::envoy::service::ratelimit::v3;
using ::floodgate::testing::GatedStore;

constexpr char kYaml[] = R"(
domain: api
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 100}
)";

class WorkerQueueTest : public ::testing::TestWithParam<GrpcImpl> {
 protected:
  void Start(size_t max_queued, absl::Duration max_queue_delay) {
    auto domain = core::ParseDomainConfig(kYaml, "api.yaml");
    ASSERT_TRUE(domain.ok()) << domain.status();
    limiter::LimiterOptions options;
    options.clock = &clock_;
    limiter_ = std::make_unique<limiter::Limiter>(&store_, KeyHasher(1, 2),
                                                  *core::BuildConfig({*domain}, 1), options);
    GrpcServerOptions grpc_options;
    grpc_options.impl = GetParam();
    grpc_options.address = "127.0.0.1:0";
    grpc_options.worker_threads = 1;
    grpc_options.max_queued = max_queued;
    grpc_options.max_queue_delay = max_queue_delay;
    grpc_options.request_timeout = request_timeout_;
    service_ = service::NewRateLimitService(limiter_.get(), service::RequestLimits(), &metrics_);
    server_ = NewGrpcServer(grpc_options, service_.get(), &metrics_);
    ASSERT_TRUE(server_->Start().ok());
    stub_ = rls::RateLimitService::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(server_->port()), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    store_.Open();
    if (server_ != nullptr) {
      server_->Shutdown(absl::Seconds(5));
    }
  }

  // Calls ShouldRateLimit; returns the gRPC status code.
  grpc::StatusCode Call(const std::string& user, rls::RateLimitResponse* response,
                        std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    rls::RateLimitRequest request;
    request.set_domain("api");
    auto* entry = request.add_descriptors()->add_entries();
    entry->set_key("user");
    entry->set_value(user);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + timeout);
    return stub_->ShouldRateLimit(&context, request, response).error_code();
  }

  absl::Duration request_timeout_ = absl::Seconds(10);
  testing::FakeClock clock_;
  GatedStore store_;
  service::ServerMetrics metrics_;
  std::unique_ptr<service::RateLimitService> service_;
  std::unique_ptr<limiter::Limiter> limiter_;
  std::unique_ptr<net::Server> server_;
  std::unique_ptr<rls::RateLimitService::Stub> stub_;
};

TEST_P(WorkerQueueTest, PastTheQueueBoundChecksAreDecidedAtOnce) {
  Start(/*max_queued=*/1, /*max_queue_delay=*/absl::Hours(1));
  const floodgate::testing::QueueOverflow seen =
      floodgate::testing::RunQueueOverflow(store_, [&](const std::string& user) {
        rls::RateLimitResponse response;
        return Call(user, &response) == grpc::StatusCode::OK &&
               response.overall_code() == rls::RateLimitResponse::OK;
      });
  EXPECT_EQ(seen.first_waiting, 1);
  EXPECT_EQ(seen.answered_while_shut, 4);  // shed, and answered while the gate is shut
  EXPECT_EQ(seen.shed_while_shut, 4);
  EXPECT_EQ(seen.unshed_while_shut, 0);
  EXPECT_EQ(metrics_.grpc.shed.load(), 4u);
  EXPECT_EQ(seen.answered, 5);
  EXPECT_EQ(seen.unshed, 2);  // the first and the queued one, not shed
}

TEST_P(WorkerQueueTest, ChecksThatWaitedPastTheDelayAreShed) {
  Start(/*max_queued=*/100, /*max_queue_delay=*/absl::ZeroDuration());
  store_.Open();
  // Every check waits some nanoseconds in the queue, which is past a zero delay.
  rls::RateLimitResponse response;
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(Call("d", &response), grpc::StatusCode::OK);
  }
  EXPECT_EQ(store_.shed(), 5);
  EXPECT_EQ(store_.unshed(), 0);
  EXPECT_EQ(metrics_.grpc.shed.load(), 5u);
}

// A caller that gives up while its check waits for a worker: its answer is dropped when it
// comes, and the server keeps serving.
TEST_P(WorkerQueueTest, AnAnswerForACallerThatLeftIsDropped) {
  Start(/*max_queued=*/10, /*max_queue_delay=*/absl::Hours(1));
  rls::RateLimitResponse response;
  EXPECT_EQ(Call("gone", &response, std::chrono::milliseconds(200)),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(store_.waiting(), 1);  // still held at the gate
  store_.Open();
  EXPECT_EQ(Call("next", &response), grpc::StatusCode::OK);
  EXPECT_EQ(response.overall_code(), rls::RateLimitResponse::OK);
  EXPECT_EQ(store_.unshed(), 2);
}

// Both implementations give a connection request_timeout to send the HTTP/2 preface and its
// SETTINGS (grpc++: GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS; its default is 120 s).
TEST_P(WorkerQueueTest, ConnectionsThatNeverFinishTheirPrefaceAreClosed) {
  request_timeout_ = absl::Milliseconds(300);
  Start(/*max_queued=*/10, /*max_queue_delay=*/absl::Hours(1));
  store_.Open();
  const int silent = floodgate::testing::ConnectLoopback(server_->port());
  const int partial = floodgate::testing::ConnectLoopback(server_->port());
  ASSERT_EQ(send(partial, "PRI * HTTP/2.0\r\n", 16, MSG_NOSIGNAL), 16);
  EXPECT_TRUE(floodgate::testing::ClosedByPeer(silent, 5000));
  EXPECT_TRUE(floodgate::testing::ClosedByPeer(partial, 5000));
  close(silent);
  close(partial);
  rls::RateLimitResponse response;
  EXPECT_EQ(Call("after", &response), grpc::StatusCode::OK);
}

INSTANTIATE_TEST_SUITE_P(BothImplementations, WorkerQueueTest,
                         ::testing::Values(GrpcImpl::kGrpcpp, GrpcImpl::kNative),
                         [](const ::testing::TestParamInfo<GrpcImpl>& info) {
                           return std::string(GrpcImplName(info.param));
                         });

}  // namespace
}  // namespace floodgate::frontends
