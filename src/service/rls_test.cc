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

rls::RateLimitRequest UserRequest(const std::string& user) {
  rls::RateLimitRequest request;
  request.set_domain("api");
  auto* entry = request.add_descriptors()->add_entries();
  entry->set_key("user");
  entry->set_value(user);
  return request;
}

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

}  // namespace
}  // namespace floodgate::service
