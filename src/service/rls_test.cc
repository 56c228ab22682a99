#include "src/service/rls.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "testing/fake_clock.h"

namespace floodgate::service {
namespace {

namespace rls = ::envoy::service::ratelimit::v3;
using ::testing::Contains;
using ::testing::Pair;

constexpr char kYaml[] = R"(
domain: api
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 2, name: per-user}
  - key: path
    value: /free
    rate_limit: {unlimited: true}
  - key: path
    value: /upload
    rate_limit: {algorithm: token_bucket, unit: second, requests_per_unit: 5, burst: 20}
  - key: ip
    value: 50.0.0.5
    rate_limit: {unit: second, requests_per_unit: 0, name: banned}
)";

class RlsTest : public ::testing::Test {
 protected:
  RlsTest() {
    store_ = *NewShardedStore({});
    limiter::LimiterOptions options;
    options.clock = &clock_;
    clock_.Set(1'700'000'040LL * 1'000'000'000);  // start of a minute
    auto domain = core::ParseDomainConfig(kYaml, "api.yaml");
    EXPECT_TRUE(domain.ok()) << domain.status();
    limiter_ = std::make_unique<limiter::Limiter>(store_.get(), KeyHasher(3, 4),
                                                  *core::BuildConfig({*domain}, 1), options);
  }

  rls::RateLimitResponse Decide(const rls::RateLimitRequest& request) {
    auto check = FromEnvoy(request);
    EXPECT_TRUE(check.ok());
    auto response = limiter_->Check(*check);
    EXPECT_TRUE(response.ok());
    rls::RateLimitResponse out;
    ToEnvoy(*response, &out);
    return out;
  }

  testing::FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<limiter::Limiter> limiter_;
};

rls::RateLimitRequest Request(const std::string& key, const std::string& value) {
  rls::RateLimitRequest request;
  request.set_domain("api");
  auto* entry = request.add_descriptors()->add_entries();
  entry->set_key(key);
  entry->set_value(value);
  return request;
}

rls::RateLimitRequest UserRequest(const std::string& user) { return Request("user", user); }

std::vector<std::pair<std::string, std::string>> Headers(const rls::RateLimitResponse& r) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& h : r.response_headers_to_add()) out.emplace_back(h.key(), h.value());
  return out;
}

TEST_F(RlsTest, FillsEnvoyStatusAndHeaders) {
  rls::RateLimitResponse first = Decide(UserRequest("u"));
  EXPECT_EQ(first.overall_code(), rls::RateLimitResponse::OK);
  ASSERT_EQ(first.statuses_size(), 1);
  const auto& status = first.statuses(0);
  EXPECT_EQ(status.code(), rls::RateLimitResponse::OK);
  EXPECT_EQ(status.current_limit().requests_per_unit(), 2u);
  EXPECT_EQ(status.current_limit().unit(), rls::RateLimitResponse::RateLimit::MINUTE);
  EXPECT_EQ(status.current_limit().name(), "per-user");
  EXPECT_EQ(status.limit_remaining(), 1u);
  EXPECT_EQ(status.duration_until_reset().seconds(), 60);
  EXPECT_THAT(Headers(first), Contains(Pair("RateLimit-Policy", "\"per-user\";q=2;w=60")));
  EXPECT_THAT(Headers(first), Contains(Pair("RateLimit", "\"per-user\";r=1;t=60")));

  Decide(UserRequest("u"));
  clock_.Advance(20'000'000'000);
  rls::RateLimitResponse refused = Decide(UserRequest("u"));
  EXPECT_EQ(refused.overall_code(), rls::RateLimitResponse::OVER_LIMIT);
  EXPECT_EQ(refused.statuses(0).code(), rls::RateLimitResponse::OVER_LIMIT);
  EXPECT_EQ(refused.statuses(0).limit_remaining(), 0u);
  EXPECT_EQ(refused.statuses(0).duration_until_reset().seconds(), 40);
  EXPECT_THAT(Headers(refused), Contains(Pair("Retry-After", "40")));
}

TEST_F(RlsTest, NoMatchHasNoCurrentLimitAndUnlimitedHasMaxRemaining) {
  rls::RateLimitRequest request;
  request.set_domain("api");
  auto* none = request.add_descriptors()->add_entries();
  none->set_key("nothing");
  none->set_value("x");
  auto* free = request.add_descriptors()->add_entries();
  free->set_key("path");
  free->set_value("/free");
  rls::RateLimitResponse r = Decide(request);
  EXPECT_EQ(r.overall_code(), rls::RateLimitResponse::OK);
  ASSERT_EQ(r.statuses_size(), 2);
  EXPECT_FALSE(r.statuses(0).has_current_limit());
  EXPECT_FALSE(r.statuses(1).has_current_limit());
  EXPECT_EQ(r.statuses(1).limit_remaining(), 4294967295u);
  EXPECT_EQ(r.response_headers_to_add_size(), 0);
}

TEST_F(RlsTest, ConvertsOverridesAndHits) {
  rls::RateLimitRequest request = UserRequest("v");
  request.set_hits_addend(7);
  auto* d = request.mutable_descriptors(0);
  d->mutable_limit()->set_requests_per_unit(10);
  d->mutable_limit()->set_unit(envoy::type::v3::HOUR);
  d->mutable_hits_addend()->set_value(0);
  auto check = FromEnvoy(request);
  ASSERT_TRUE(check.ok());
  EXPECT_EQ(check->hits_addend, 7u);
  ASSERT_TRUE(check->descriptors[0].limit.has_value());
  EXPECT_EQ(check->descriptors[0].limit->unit, core::TimeUnit::kHour);
  ASSERT_TRUE(check->descriptors[0].hits_addend.has_value());
  EXPECT_EQ(*check->descriptors[0].hits_addend, 0u);

  d->mutable_limit()->set_unit(envoy::type::v3::UNKNOWN);
  EXPECT_EQ(FromEnvoy(request).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FromEnvoy(request).status().message(),
            "`descriptors[0].limit.unit` must be one of SECOND, MINUTE, HOUR, DAY, MONTH, YEAR, "
            "WEEK (1 to 7), got 0");
}

TEST_F(RlsTest, NativeResponseListsEveryLimit) {
  floodgate::v1::CheckRequest request;
  request.set_domain("api");
  auto* e = request.add_descriptors()->add_entries();
  e->set_key("user");
  e->set_value("w");
  auto response = limiter_->Check(FromNative(request));
  ASSERT_TRUE(response.ok());
  floodgate::v1::CheckResponse out;
  ToNative(*response, &out);
  EXPECT_TRUE(out.allowed());
  EXPECT_EQ(out.code(), "OK");
  ASSERT_EQ(out.descriptors_size(), 1);
  ASSERT_EQ(out.descriptors(0).limits_size(), 1);
  EXPECT_EQ(out.descriptors(0).limits(0).name(), "per-user");
  EXPECT_EQ(out.descriptors(0).limits(0).algorithm(), "fixed_window");
  EXPECT_EQ(out.descriptors(0).limits(0).remaining(), 1u);
  EXPECT_DOUBLE_EQ(out.descriptors(0).limits(0).window_seconds(), 60.0);
}

bool HasHeader(const std::vector<Header>& headers, const std::string& name) {
  for (const Header& h : headers) {
    if (h.first == name) return true;
  }
  return false;
}

// A token bucket's quota is its rate, not its capacity: 5/s with bursts of 20 is q=5;w=1, and
// the burst is a parameter of its own.
TEST_F(RlsTest, TokenBucketPolicyIsItsRateWithTheBurstAsAParameter) {
  rls::RateLimitResponse r = Decide(Request("path", "/upload"));
  EXPECT_EQ(r.overall_code(), rls::RateLimitResponse::OK);
  EXPECT_THAT(Headers(r), Contains(Pair("RateLimit-Policy",
                                        "\"api.path_/upload\";q=5;w=1;floodgate-burst=20")));
  EXPECT_THAT(Headers(r), Contains(Pair("RateLimit", "\"api.path_/upload\";r=19;t=1")));
}

// A limit of 0, or more hits than a limit holds, can never pass: no Retry-After (waiting does
// not help), retryAfterSeconds -1, and the refusal says so.
TEST_F(RlsTest, HitsThatCanNeverPassGetNoRetryAfter) {
  auto zero = limiter_->Check(*FromEnvoy(Request("ip", "50.0.0.5")));
  ASSERT_TRUE(zero.ok());
  EXPECT_EQ(RefusalOf(*zero), Refusal::kNever);
  EXPECT_EQ(RetryAfterSeconds(*zero), kNeverSeconds);
  EXPECT_FALSE(HasHeader(RateLimitHeaders(*zero), "Retry-After"));
  EXPECT_TRUE(HasHeader(RateLimitHeaders(*zero), "RateLimit-Policy"));
  floodgate::v1::CheckResponse native;
  ToNative(*zero, &native);
  EXPECT_EQ(native.code(), "OVER_LIMIT");
  EXPECT_EQ(native.retry_after_seconds(), -1);

  rls::RateLimitRequest too_many = Request("path", "/upload");
  too_many.set_hits_addend(21);  // the bucket holds 20
  auto above = limiter_->Check(*FromEnvoy(too_many));
  ASSERT_TRUE(above.ok());
  EXPECT_EQ(RefusalOf(*above), Refusal::kNever);
  EXPECT_FALSE(HasHeader(RateLimitHeaders(*above), "Retry-After"));

  // 20 hits fit an empty bucket; once it is spent they wait, and Retry-After says how long.
  too_many.set_hits_addend(20);
  ASSERT_EQ(limiter_->Check(*FromEnvoy(too_many))->overall, limiter::Code::kOk);
  auto spent = limiter_->Check(*FromEnvoy(too_many));
  ASSERT_TRUE(spent.ok());
  EXPECT_EQ(RefusalOf(*spent), Refusal::kOverLimit);
  EXPECT_EQ(RetryAfterSeconds(*spent), 4);
  EXPECT_THAT(RateLimitHeaders(*spent), Contains(Pair("Retry-After", "4")));
}

// A limit refused by its failure mode (`closed`: its counter's owner could not be asked) is not
// an over-limit: the native code says UNAVAILABLE, for the descriptor and the request, unless
// another limit refused on its own.
TEST_F(RlsTest, AClosedFailureModeRefusalIsUnavailableNotOverLimit) {
  auto spent = limiter_->Check(*FromEnvoy(UserRequest("z")));
  ASSERT_TRUE(spent.ok());
  limiter::CheckResponse response = *std::move(spent);
  limiter::LimitResult& only = response.descriptors[0].limits[0];
  only.decision = Decision{.allowed = false, .unavailable = true, .retry_after_ns = 2'000'000'000};
  response.descriptors[0].code = limiter::Code::kOverLimit;
  response.overall = limiter::Code::kOverLimit;
  EXPECT_EQ(RefusalOf(response), Refusal::kUnavailable);
  EXPECT_EQ(NativeCode(response), "UNAVAILABLE");
  EXPECT_EQ(NativeCode(response.descriptors[0]), "UNAVAILABLE");
  EXPECT_THAT(RateLimitHeaders(response), Contains(Pair("Retry-After", "2")));
  floodgate::v1::CheckResponse native;
  ToNative(response, &native);
  EXPECT_FALSE(native.allowed());
  EXPECT_EQ(native.code(), "UNAVAILABLE");
  EXPECT_EQ(native.descriptors(0).code(), "UNAVAILABLE");
  // Envoy's answer stays Envoy's.
  rls::RateLimitResponse envoy;
  ToEnvoy(response, &envoy);
  EXPECT_EQ(envoy.overall_code(), rls::RateLimitResponse::OVER_LIMIT);

  // With a limit refusing on its own as well, the request is over the limit.
  limiter::LimitResult spent_limit = only;
  spent_limit.decision.unavailable = false;
  response.descriptors[0].limits.push_back(spent_limit);
  EXPECT_EQ(RefusalOf(response), Refusal::kOverLimit);
  EXPECT_EQ(NativeCode(response), "OVER_LIMIT");
}

}  // namespace
}  // namespace floodgate::service
