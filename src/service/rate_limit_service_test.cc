// The check pipeline on its own: what it answers and what it counts, per front end.

#include "src/service/rate_limit_service.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "floodgate/store.h"
#include "testing/fake_clock.h"
#include "testing/limiter_helpers.h"

namespace floodgate::service {
namespace {

namespace rls = ::envoy::service::ratelimit::v3;
using floodgate::testing::MakeConfig;
using floodgate::testing::MakeRequest;

// One request a minute per user; one concurrency slot per slot.
constexpr char kYaml[] =
    "domain: api\n"
    "descriptors:\n"
    "  - {key: user, rate_limit: {unit: minute, requests_per_unit: 1}}\n"
    "  - {key: slot, rate_limit: {unit: minute, requests_per_unit: 1, algorithm: concurrency}}\n";

// Returns an Envoy request of one descriptor {key: value} in `domain`.
rls::RateLimitRequest EnvoyRequest(const std::string& domain, const std::string& key,
                                   const std::string& value) {
  rls::RateLimitRequest request;
  request.set_domain(domain);
  auto* entry = request.add_descriptors()->add_entries();
  entry->set_key(key);
  entry->set_value(value);
  return request;
}

class RateLimitServiceTest : public ::testing::Test {
 protected:
  RateLimitServiceTest() {
    store_ = *NewShardedStore({});
    clock_.Set(floodgate::testing::kMinuteStartNs);
    limiter::LimiterOptions options;
    options.clock = &clock_;
    limiter_ = std::make_unique<limiter::Limiter>(store_.get(), KeyHasher(1, 2), MakeConfig(kYaml),
                                                  options);
    RequestLimits limits;
    limits.max_descriptors = 2;
    service_ = NewRateLimitService(limiter_.get(), limits, &metrics_);
  }

  floodgate::testing::FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<limiter::Limiter> limiter_;
  ServerMetrics metrics_;
  std::unique_ptr<RateLimitService> service_;
};

TEST_F(RateLimitServiceTest, ChecksAndCountsInTheCallersFrontEnd) {
  limiter::CheckRequest request = MakeRequest("api", {{{"user", "alice"}}});
  auto first = service_->Check(CallContext{Frontend::kHttp}, request);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->overall, limiter::Code::kOk);
  auto second = service_->Check(CallContext{Frontend::kHttp}, request);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->overall, limiter::Code::kOverLimit);

  EXPECT_EQ(metrics_.http.requests.load(), 2u);
  EXPECT_EQ(metrics_.http.over_limit.load(), 1u);
  EXPECT_EQ(metrics_.http.bad_requests.load(), 0u);
  EXPECT_EQ(metrics_.grpc.requests.load(), 0u);
}

TEST_F(RateLimitServiceTest, BadInputIsInvalidArgumentAndABadRequest) {
  limiter::CheckRequest too_many =
      MakeRequest("api", {{{"user", "a"}}, {{"user", "b"}}, {{"user", "c"}}});
  auto refused = service_->Check(CallContext{Frontend::kGrpc}, too_many);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("descriptors"), std::string::npos) << refused.status();

  rls::RateLimitRequest envoy;
  envoy.set_domain("api");
  auto* descriptor = envoy.add_descriptors();
  auto* entry = descriptor->add_entries();
  entry->set_key("user");
  entry->set_value("bob");
  descriptor->mutable_limit()->set_requests_per_unit(5);
  descriptor->mutable_limit()->set_unit(static_cast<envoy::type::v3::RateLimitUnit>(42));
  rls::RateLimitResponse response;
  EXPECT_EQ(service_->ShouldRateLimit(CallContext{Frontend::kGrpc}, envoy, &response).code(),
            absl::StatusCode::kInvalidArgument);

  service_->CountMalformed(Frontend::kGrpc);
  EXPECT_EQ(metrics_.grpc.requests.load(), 3u);
  EXPECT_EQ(metrics_.grpc.bad_requests.load(), 3u);
  EXPECT_EQ(metrics_.grpc.errors.load(), 0u);
}

TEST_F(RateLimitServiceTest, EnvoyCallsAreConvertedDecidedAndAnswered) {
  const rls::RateLimitRequest envoy = EnvoyRequest("api", "user", "carol");
  rls::RateLimitResponse response;
  ASSERT_TRUE(service_->ShouldRateLimit(CallContext{Frontend::kGrpc}, envoy, &response).ok());
  EXPECT_EQ(response.overall_code(), rls::RateLimitResponse::OK);
  response.Clear();
  ASSERT_TRUE(service_->ShouldRateLimit(CallContext{Frontend::kGrpc}, envoy, &response).ok());
  EXPECT_EQ(response.overall_code(), rls::RateLimitResponse::OVER_LIMIT);
  EXPECT_EQ(metrics_.grpc.over_limit.load(), 1u);
  EXPECT_EQ(metrics_.grpc.requests.load(), 2u);
}

// Checks of a domain the config does not define are answered (no limit applies) and counted
// per front end, whichever protocol they came in; Envoy's answer itself is unchanged.
TEST_F(RateLimitServiceTest, UnknownDomainsAreCounted) {
  limiter::CheckRequest typo = MakeRequest("apii", {{{"user", "erin"}}});
  auto decided = service_->Check(CallContext{Frontend::kHttp}, typo);
  ASSERT_TRUE(decided.ok()) << decided.status();
  EXPECT_TRUE(decided->unknown_domain);
  limiter::CheckRequest known = MakeRequest("api", {{{"user", "erin"}}});
  ASSERT_TRUE(service_->Check(CallContext{Frontend::kHttp}, known).ok());
  EXPECT_EQ(metrics_.http.unknown_domain.load(), 1u);

  const rls::RateLimitRequest envoy = EnvoyRequest("apii", "user", "erin");
  rls::RateLimitResponse response;
  ASSERT_TRUE(service_->ShouldRateLimit(CallContext{Frontend::kGrpc}, envoy, &response).ok());
  EXPECT_EQ(response.overall_code(), rls::RateLimitResponse::OK);
  EXPECT_EQ(response.response_headers_to_add_size(), 0);
  EXPECT_EQ(metrics_.grpc.unknown_domain.load(), 1u);
  EXPECT_EQ(metrics_.http.unknown_domain.load(), 1u);
}

TEST_F(RateLimitServiceTest, ShedCallsAreMarkedAndCounted) {
  limiter::CheckRequest request = MakeRequest("api", {{{"user", "dave"}}});
  auto decided = service_->Check(CallContext{Frontend::kGrpc, /*shed=*/true}, request);
  ASSERT_TRUE(decided.ok()) << decided.status();
  EXPECT_TRUE(request.shed);  // what the limiter was asked
  EXPECT_EQ(metrics_.grpc.shed.load(), 1u);
  std::vector<std::pair<std::string, uint64_t>> by_domain;
  metrics_.shed_checks.ForEach(
      [&](const std::string& domain, uint64_t n) { by_domain.emplace_back(domain, n); });
  EXPECT_EQ(by_domain, (std::vector<std::pair<std::string, uint64_t>>{{"api", 1}}));
  // A check that is not shed is not counted there.
  limiter::CheckRequest calm = MakeRequest("api", {{{"user", "erin"}}});
  ASSERT_TRUE(service_->Check(CallContext{Frontend::kGrpc}, calm).ok());
  metrics_.shed_checks.ForEach([&](const std::string&, uint64_t n) { EXPECT_EQ(n, 1u); });
}

TEST_F(RateLimitServiceTest, ReleaseNeedsALeaseAndIsNotShed) {
  limiter::CheckRequest request = MakeRequest("api", {{{"slot", "s"}}});
  auto held = service_->Check(CallContext{Frontend::kHttp}, request);
  ASSERT_TRUE(held.ok());
  ASSERT_EQ(held->overall, limiter::Code::kOk);
  EXPECT_EQ(service_->Check(CallContext{Frontend::kHttp}, request)->overall,
            limiter::Code::kOverLimit);

  EXPECT_EQ(service_->Release(CallContext{Frontend::kHttp}, request, 0).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      service_->Release(CallContext{Frontend::kHttp, /*shed=*/true}, request, held->lease).code(),
      absl::StatusCode::kUnavailable);
  // Neither freed the slot.
  EXPECT_EQ(service_->Check(CallContext{Frontend::kHttp}, request)->overall,
            limiter::Code::kOverLimit);
  ASSERT_TRUE(service_->Release(CallContext{Frontend::kHttp}, request, held->lease).ok());
  EXPECT_EQ(service_->Check(CallContext{Frontend::kHttp}, request)->overall, limiter::Code::kOk);

  EXPECT_EQ(metrics_.http.shed.load(), 1u);
  EXPECT_EQ(metrics_.http.bad_requests.load(), 1u);
  EXPECT_EQ(metrics_.http.errors.load(), 1u);  // the shed release: ours, not the caller's
}

// Issue 11: a made-up or replayed lease answered OK (and freed a held slot); now it frees
// nothing and says so, as the caller's error.
TEST_F(RateLimitServiceTest, ForgedAndReplayedLeasesAreRefused) {
  limiter::CheckRequest request = MakeRequest("api", {{{"slot", "s"}}});
  auto held = service_->Check(CallContext{Frontend::kHttp}, request);
  ASSERT_TRUE(held.ok());
  ASSERT_EQ(held->overall, limiter::Code::kOk);
  const absl::Status forged =
      service_->Release(CallContext{Frontend::kHttp}, request, 9000000000000000000);
  EXPECT_EQ(forged.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(forged.message(), "the lease is unknown, already released or expired");
  EXPECT_EQ(service_->Check(CallContext{Frontend::kHttp}, request)->overall,
            limiter::Code::kOverLimit)
      << "the forged release freed nothing";
  ASSERT_TRUE(service_->Release(CallContext{Frontend::kHttp}, request, held->lease).ok());
  EXPECT_EQ(service_->Release(CallContext{Frontend::kHttp}, request, held->lease).code(),
            absl::StatusCode::kFailedPrecondition)
      << "replayed";
  EXPECT_EQ(metrics_.http.bad_requests.load(), 2u);
  EXPECT_EQ(metrics_.http.errors.load(), 0u);
}

}  // namespace
}  // namespace floodgate::service
