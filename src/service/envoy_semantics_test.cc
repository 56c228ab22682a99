// envoyproxy/ratelimit's answers, as an Envoy caller sees them through the pipeline: wildcards
// anywhere, share_threshold, quota_mode and the overall code, overrides only on known domains,
// the stats keys, and the switches of EnvoyCompat (global shadow mode, limit headers, dynamic
// metadata). docs/config.md says what each does; these check it.

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>

#include "src/service/rate_limit_service.h"
#include "testing/service_harness.h"

namespace floodgate::service {
namespace {

namespace rls = ::envoy::service::ratelimit::v3;

constexpr char kYaml[] = R"(domain: api
descriptors:
  - key: path
    value: /v1/*/orders
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: files
    value: /f*
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: own
    value: /o*
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: plan
    value: free
    quota_mode: true
    metadata: {tier: free, nested: {a: 1}}
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: plan
    value: trial
    quota_mode: true
    metadata: {tier: trial, nested: {b: 2}}
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: user
    value_to_metric: true
    rate_limit: {unit: minute, requests_per_unit: 1, name: per_user}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: big
    rate_limit: {unit: minute, requests_per_unit: 10}
)";

using floodgate::testing::EnvoyRequest;
using Entries = floodgate::testing::EnvoyEntries;

// A request of one descriptor per entry list.
rls::RateLimitRequest Request(const std::string& domain, const std::vector<Entries>& descriptors,
                              uint32_t hits = 0) {
  return EnvoyRequest(domain, descriptors, hits);
}

class EnvoySemanticsTest : public ::testing::Test, protected floodgate::testing::ServiceHarness {
 protected:
  void Start(EnvoyCompat compat = {}, limiter::LimiterOptions options = {}) {
    StartService(kYaml, std::move(compat), options);
  }

  rls::RateLimitResponse Ask(const rls::RateLimitRequest& request) {
    rls::RateLimitResponse response;
    absl::Status status = service_->ShouldRateLimit(CallContext{}, request, &response);
    EXPECT_TRUE(status.ok()) << status;
    return response;
  }

  // Returns the per-rule counters by stats key.
  std::map<std::string, uint64_t> Counter(std::atomic<uint64_t> limiter::RuleCounters::*field) {
    std::map<std::string, uint64_t> out;
    limiter_->ForEachRuleCounters([&](const std::string& key, const limiter::RuleCounters& c) {
      out[key] = (c.*field).load();
    });
    return out;
  }
};

TEST_F(EnvoySemanticsTest, AMiddleWildcardMatches) {
  Start();
  EXPECT_EQ(Ask(Request("api", {{{"path", "/v1/7/orders"}}}))
                .statuses(0)
                .current_limit()
                .requests_per_unit(),
            2u);
  EXPECT_FALSE(Ask(Request("api", {{{"path", "/v1/7/orderz"}}})).statuses(0).has_current_limit());
}

TEST_F(EnvoySemanticsTest, ShareThresholdSharesOneCounterAndOtherwiseEachValueHasItsOwn) {
  Start();
  EXPECT_EQ(Ask(Request("api", {{{"files", "/f1"}}})).overall_code(), rls::RateLimitResponse::OK);
  EXPECT_EQ(Ask(Request("api", {{{"files", "/f2"}}})).overall_code(), rls::RateLimitResponse::OK);
  // The third value of the wildcard finds the shared counter spent.
  EXPECT_EQ(Ask(Request("api", {{{"files", "/f3"}}})).overall_code(),
            rls::RateLimitResponse::OVER_LIMIT);
  for (const char* value : {"/o1", "/o2", "/o3"}) {
    EXPECT_EQ(Ask(Request("api", {{{"own", value}}})).overall_code(), rls::RateLimitResponse::OK)
        << value;
  }
  EXPECT_EQ(Counter(&limiter::RuleCounters::total_hits)["api.files_/f*"], 3u);
}

TEST_F(EnvoySemanticsTest, QuotaModeIsOverOnlyWhenEveryQuotaDescriptorIs) {
  Start();
  const rls::RateLimitRequest both = Request("api", {{{"plan", "free"}}, {{"plan", "trial"}}});
  // Spend the free quota alone: the answer to it alone is then OVER_LIMIT (all quota over).
  EXPECT_EQ(Ask(Request("api", {{{"plan", "free"}}})).overall_code(), rls::RateLimitResponse::OK);
  rls::RateLimitResponse alone = Ask(Request("api", {{{"plan", "free"}}}));
  EXPECT_EQ(alone.overall_code(), rls::RateLimitResponse::OVER_LIMIT);
  // With the trial quota still open, the request passes and trial is charged, free says over.
  rls::RateLimitResponse mixed = Ask(both);
  EXPECT_EQ(mixed.overall_code(), rls::RateLimitResponse::OK);
  EXPECT_EQ(mixed.statuses(0).code(), rls::RateLimitResponse::OVER_LIMIT);
  EXPECT_EQ(mixed.statuses(1).code(), rls::RateLimitResponse::OK);
  // Now both are spent.
  EXPECT_EQ(Ask(both).overall_code(), rls::RateLimitResponse::OVER_LIMIT);
  // A non-quota descriptor over its limit makes the answer OVER_LIMIT whatever the quotas say.
  EXPECT_EQ(Ask(Request("api", {{{"user", "u"}}})).overall_code(), rls::RateLimitResponse::OK);
  EXPECT_EQ(Ask(Request("api", {{{"user", "u"}}, {{"plan", "other"}}})).overall_code(),
            rls::RateLimitResponse::OVER_LIMIT);
}

TEST_F(EnvoySemanticsTest, AQuotaRefusalDoesNotUndoTheOtherLimits) {
  Start();
  Ask(Request("api", {{{"plan", "free"}}}));  // free spent
  // Its only quota descriptor is over, so the answer is OVER_LIMIT (as Envoy), but big
  // (10/min) is charged all the same: quota refusals do not make the request atomic.
  rls::RateLimitResponse r = Ask(Request("api", {{{"plan", "free"}}, {{"big", "b"}}}));
  EXPECT_EQ(r.overall_code(), rls::RateLimitResponse::OVER_LIMIT);
  EXPECT_EQ(r.statuses(1).code(), rls::RateLimitResponse::OK);
  EXPECT_EQ(Ask(Request("api", {{{"big", "b"}}})).statuses(0).limit_remaining(), 8u);
}

TEST_F(EnvoySemanticsTest, GlobalQuotaModeCountsEveryDescriptorAsQuota) {
  limiter::LimiterOptions options;
  options.global_quota_mode = true;
  EnvoyCompat compat;
  compat.global_quota_mode = true;
  Start(compat, options);
  Ask(Request("api", {{{"user", "u"}}}));
  // user is over, but the other descriptor (matching nothing) is a quota descriptor not over.
  EXPECT_EQ(Ask(Request("api", {{{"user", "u"}}, {{"nothing", "x"}}})).overall_code(),
            rls::RateLimitResponse::OK);
  EXPECT_EQ(Ask(Request("api", {{{"user", "u"}}})).overall_code(),
            rls::RateLimitResponse::OVER_LIMIT);
}

TEST_F(EnvoySemanticsTest, OverridesApplyOnlyToKnownDomainsAndNeverInShadowMode) {
  Start();
  auto with_limit = [](rls::RateLimitRequest request) {
    auto* limit = request.mutable_descriptors(0)->mutable_limit();
    limit->set_requests_per_unit(1);
    limit->set_unit(envoy::type::v3::MINUTE);
    return request;
  };
  // Unknown domain: no limit at all, the override included.
  for (int i = 0; i < 3; ++i) {
    rls::RateLimitResponse r = Ask(with_limit(Request("nowhere", {{{"k", "v"}}})));
    EXPECT_EQ(r.overall_code(), rls::RateLimitResponse::OK);
    EXPECT_FALSE(r.statuses(0).has_current_limit());
  }
  // Known domain: the override replaces the config's limit, even on a shadow-mode descriptor.
  EXPECT_EQ(Ask(with_limit(Request("api", {{{"shadow", "s"}}}))).overall_code(),
            rls::RateLimitResponse::OK);
  rls::RateLimitResponse second = Ask(with_limit(Request("api", {{{"shadow", "s"}}})));
  EXPECT_EQ(second.overall_code(), rls::RateLimitResponse::OVER_LIMIT);
  EXPECT_EQ(Counter(&limiter::RuleCounters::over_limit)["api.shadow_s"], 1u);
}

TEST_F(EnvoySemanticsTest, StatsKeysAsEnvoyNamesThem) {
  Start();
  Ask(Request("api", {{{"user", "alice"}}}));
  Ask(Request("api", {{{"user", "alice"}}}));
  Ask(Request("api", {{{"user", "bob"}}}));
  std::map<std::string, uint64_t> total = Counter(&limiter::RuleCounters::total_hits);
  EXPECT_EQ(total["api.user_alice"], 2u);  // value_to_metric: the request's value
  EXPECT_EQ(total["api.user_bob"], 1u);
  EXPECT_EQ(total.count("api.user"), 0u);
  EXPECT_EQ(Counter(&limiter::RuleCounters::over_limit)["api.user_alice"], 1u);
  Ask(Request("api", {{{"path", "/v1/9/orders"}}}));
  EXPECT_EQ(Counter(&limiter::RuleCounters::total_hits)["api.path_/v1/*/orders"], 1u);
}

TEST_F(EnvoySemanticsTest, StatsKeysFromRequestValuesAreBounded) {
  limiter::LimiterOptions options;
  options.max_request_stats_keys = 2;
  Start({}, options);
  for (const char* user : {"u1", "u2", "u3", "u4", "u1"}) {
    Ask(Request("api", {{{"user", user}}}));
  }
  std::map<std::string, uint64_t> total = Counter(&limiter::RuleCounters::total_hits);
  EXPECT_EQ(total["api.user_u1"], 2u);  // kept: u1 and u2
  EXPECT_EQ(total["api.user_u2"], 1u);
  EXPECT_EQ(total.count("api.user_u3"), 0u);  // past the bound: under the rule's own key
  EXPECT_EQ(total["api.user"], 2u);
  // A caller's limit makes its key from the request too.
  rls::RateLimitRequest own = Request("api", {{{"anything", "x"}}});
  own.mutable_descriptors(0)->mutable_limit()->set_requests_per_unit(5);
  own.mutable_descriptors(0)->mutable_limit()->set_unit(envoy::type::v3::MINUTE);
  Ask(own);
  total = Counter(&limiter::RuleCounters::total_hits);
  EXPECT_EQ(total.count("api.anything_x"), 0u);
  EXPECT_EQ(total["api"], 1u);
}

TEST_F(EnvoySemanticsTest, NearLimitCountsTheHitsPastTheRatio) {
  Start();
  // big: 10/min, near from 8 (floor(10 * 0.8)): hits 1..7 are not near, 9 and 10 are, and
  // a 3-hit request from 7 to 10 counts 2.
  Ask(Request("api", {{{"big", "n"}}}, 7));
  EXPECT_EQ(Counter(&limiter::RuleCounters::near_limit)["api.big"], 0u);
  Ask(Request("api", {{{"big", "n"}}}, 3));
  EXPECT_EQ(Counter(&limiter::RuleCounters::near_limit)["api.big"], 2u);
  EXPECT_EQ(Counter(&limiter::RuleCounters::within_limit)["api.big"], 10u);
}

TEST_F(EnvoySemanticsTest, OverLimitWithLocalCacheCountsFastPathRefusals) {
  Start();
  Ask(Request("api", {{{"user", "carol"}}}));
  for (int i = 0; i < 3; ++i) {
    Ask(Request("api", {{{"user", "carol"}}}));
  }
  // The first refusal asked the store; the next two came from the over-limit cache.
  EXPECT_EQ(Counter(&limiter::RuleCounters::over_limit)["api.user_carol"], 3u);
  EXPECT_EQ(Counter(&limiter::RuleCounters::over_limit_with_local_cache)["api.user_carol"], 2u);
}

TEST_F(EnvoySemanticsTest, GlobalShadowModeAnswersOkAndCountsIt) {
  EnvoyCompat compat;
  compat.global_shadow_mode = true;
  Start(compat);
  Ask(Request("api", {{{"user", "dan"}}}));
  rls::RateLimitResponse r = Ask(Request("api", {{{"user", "dan"}}}));
  EXPECT_EQ(r.overall_code(), rls::RateLimitResponse::OK);
  EXPECT_EQ(r.statuses(0).code(), rls::RateLimitResponse::OVER_LIMIT);
  EXPECT_EQ(metrics_.global_shadow_mode.load(), 1u);
}

TEST_F(EnvoySemanticsTest, LimitHeadersNameTheDescriptorClosestToItsLimit) {
  EnvoyCompat compat;
  compat.limit_headers = true;
  compat.limit_header = "X-Limit";
  compat.remaining_header = "X-Remaining";
  compat.reset_header = "X-Reset";
  Start(compat);
  clock_.Set(floodgate::testing::kMinuteStartNs + 15 * floodgate::testing::kSecond);
  rls::RateLimitResponse r = Ask(Request("api", {{{"big", "h"}}, {{"path", "/v1/1/orders"}}}));
  std::map<std::string, std::string> headers;
  for (const auto& h : r.response_headers_to_add()) {
    headers[h.key()] = h.value();
  }
  EXPECT_EQ(headers.size(), 3u);
  EXPECT_EQ(headers["X-Limit"], "2");  // path: 1 left of 2, closer than big's 9 of 10
  EXPECT_EQ(headers["X-Remaining"], "1");
  EXPECT_EQ(headers["X-Reset"], "45");
}

TEST_F(EnvoySemanticsTest, DynamicMetadataCarriesTheRequestAndWhatPassed) {
  EnvoyCompat compat;
  compat.response_dynamic_metadata = true;
  Start(compat);
  Ask(Request("api", {{{"plan", "trial"}}}));  // trial spent: its metadata is not returned
  rls::RateLimitResponse r =
      Ask(Request("api", {{{"plan", "free"}}, {{"plan", "trial"}}}, /*hits=*/1));
  const auto& fields = r.dynamic_metadata().fields();
  EXPECT_EQ(fields.at("domain").string_value(), "api");
  ASSERT_EQ(fields.at("descriptors").list_value().values_size(), 2);
  EXPECT_EQ(fields.at("descriptors")
                .list_value()
                .values(0)
                .struct_value()
                .fields()
                .at("entries")
                .list_value()
                .values(0)
                .string_value(),
            "plan=free");
  EXPECT_EQ(fields.at("hitsAddend").number_value(), 1);
  const auto& metadata = fields.at("metadata").struct_value().fields();
  EXPECT_EQ(metadata.at("tier").string_value(), "free");
  EXPECT_EQ(metadata.at("nested").struct_value().fields().size(), 1u);
  EXPECT_EQ(metadata.at("nested").struct_value().fields().at("a").number_value(), 1);
}

TEST_F(EnvoySemanticsTest, SwitchesOffChangeNothing) {
  Start();
  Ask(Request("api", {{{"user", "erin"}}}));
  rls::RateLimitResponse r = Ask(Request("api", {{{"user", "erin"}}}));
  EXPECT_EQ(r.overall_code(), rls::RateLimitResponse::OVER_LIMIT);
  EXPECT_FALSE(r.has_dynamic_metadata());
  bool ours = false;
  for (const auto& h : r.response_headers_to_add()) {
    ours = ours || h.key() == "RateLimit-Policy";
  }
  EXPECT_TRUE(ours);
}

}  // namespace
}  // namespace floodgate::service
