// The Prometheus exporter: after real checks through a Limiter, envoyproxy/ratelimit's metric
// names (as its Prometheus mapping gives them) carry the right values, beside our own names.

#include "src/service/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "floodgate/store.h"
#include "src/service/rate_limit_service.h"
#include "testing/fake_clock.h"
#include "testing/limiter_helpers.h"
#include "testing/service_harness.h"

namespace floodgate::service {
namespace {

namespace rls = ::envoy::service::ratelimit::v3;
using ::testing::HasSubstr;
using ::testing::Not;

// Two a minute per user; a nested rule, so that its stats key has a second part (key2).
constexpr char kYaml[] =
    "domain: api\n"
    "descriptors:\n"
    "  - {key: user, rate_limit: {unit: minute, requests_per_unit: 2}}\n"
    "  - key: client\n"
    "    value: mobile\n"
    "    descriptors:\n"
    "      - {key: op, rate_limit: {unit: minute, requests_per_unit: 5}}\n";

rls::RateLimitRequest EnvoyRequest(const std::string& key, const std::string& value) {
  return floodgate::testing::EnvoyRequest("api", {{{key, value}}});
}

class MetricsTest : public ::testing::Test, protected floodgate::testing::ServiceHarness {
 protected:
  MetricsTest() { StartService(kYaml); }

  // Returns the value of the sample `series` (name and labels) in `text`, or -1 when absent.
  static int64_t Sample(const std::string& text, const std::string& series) {
    const std::string prefix = series + " ";
    size_t at = 0;
    while ((at = text.find(prefix, at)) != std::string::npos) {
      if (at == 0 || text[at - 1] == '\n') {
        return std::stoll(text.substr(at + prefix.size()));
      }
      ++at;
    }
    return -1;
  }
};

TEST_F(MetricsTest, PerRuleCountersUnderEnvoysPrometheusNames) {
  rls::RateLimitResponse response;
  for (int i = 0; i < 4; ++i) {  // 2 allowed, then 2 refused (the second from the fast path)
    ASSERT_TRUE(service_
                    ->ShouldRateLimit(CallContext{Frontend::kGrpc}, EnvoyRequest("user", "alice"),
                                      &response)
                    .ok());
  }
  const std::string text = RenderPrometheus(*limiter_, metrics_, ConfigStats{});
  const std::string labels = "{domain=\"api\",key=\"api.user\",key1=\"user\"}";
  EXPECT_EQ(Sample(text, "ratelimit_service_rate_limit_total_hits" + labels), 4);
  EXPECT_EQ(Sample(text, "ratelimit_service_rate_limit_within_limit" + labels), 2);
  EXPECT_EQ(Sample(text, "ratelimit_service_rate_limit_over_limit" + labels), 2);
  // The second hit used 2 of 2, past the 0.8 near-limit ratio.
  EXPECT_EQ(Sample(text, "ratelimit_service_rate_limit_near_limit" + labels), 1);
  EXPECT_EQ(Sample(text, "ratelimit_service_rate_limit_shadow_mode" + labels), 0);
  const uint64_t fast = limiter_->GetStats().fast_refusals;
  EXPECT_EQ(fast, 1u);
  EXPECT_EQ(Sample(text, "ratelimit_service_rate_limit_over_limit_with_local_cache" + labels),
            static_cast<int64_t>(fast));
  EXPECT_THAT(text, HasSubstr("# TYPE ratelimit_service_rate_limit_total_hits counter\n"));
}

TEST_F(MetricsTest, NestedRulesHaveKey2) {
  limiter::CheckRequest request =
      floodgate::testing::MakeRequest("api", {{{"client", "mobile"}, {"op", "read"}}});
  ASSERT_TRUE(service_->Check(CallContext{Frontend::kHttp}, request).ok());
  const std::string text = RenderPrometheus(*limiter_, metrics_, ConfigStats{});
  EXPECT_EQ(Sample(text,
                   "ratelimit_service_rate_limit_total_hits{domain=\"api\",key=\"api."
                   "client_mobile.op\",key1=\"client_mobile\",key2=\"op\"}"),
            1);
}

TEST_F(MetricsTest, ServiceCountersUnderEnvoysPrometheusNames) {
  rls::RateLimitResponse response;
  ASSERT_TRUE(
      service_
          ->ShouldRateLimit(CallContext{Frontend::kGrpc}, EnvoyRequest("user", "bob"), &response)
          .ok());
  rls::RateLimitRequest no_domain = EnvoyRequest("user", "bob");
  no_domain.clear_domain();
  EXPECT_FALSE(service_->ShouldRateLimit(CallContext{Frontend::kGrpc}, no_domain, &response).ok());
  metrics_.global_shadow_mode.store(3);
  metrics_.http.errors.store(2);
  metrics_.grpc.errors.store(1);
  ConfigStats config;
  config.reload_success = 5;
  config.reload_failure = 7;

  const std::string text = RenderPrometheus(*limiter_, metrics_, config);
  EXPECT_EQ(Sample(text, "ratelimit_service_config_load_success"), 5);
  EXPECT_EQ(Sample(text, "ratelimit_service_config_load_error"), 7);
  EXPECT_EQ(Sample(text, "ratelimit_service_global_shadow_mode"), 3);
  EXPECT_EQ(Sample(text, "floodgate_envoy_global_shadow_mode_total"), 3);
  EXPECT_EQ(Sample(text, "ratelimit_service_should_rate_limit_error{err_type=\"redis_error\"}"), 3);
  EXPECT_EQ(Sample(text, "ratelimit_service_should_rate_limit_error{err_type=\"service_error\"}"),
            1);
  EXPECT_EQ(Sample(text, "ratelimit_service_total_requests{grpc_method=\"ShouldRateLimit\"}"), 2);
  EXPECT_EQ(Sample(text,
                   "ratelimit_service_response_time_seconds_count{grpc_method="
                   "\"ShouldRateLimit\"}"),
            2);
  // Our own names are still there, with the same values.
  EXPECT_EQ(Sample(text, "floodgate_requests_total{frontend=\"grpc\"}"), 2);
  EXPECT_EQ(Sample(text, "floodgate_config_reload_success_total"), 5);
  EXPECT_EQ(Sample(text, "floodgate_statsd_send_errors_total"), 0);
  EXPECT_THAT(text, Not(HasSubstr("{err_type=\"redis_error\"} 0")));
}

TEST(EnvoyStatNameTest, SanitizesAsEnvoyDoes) {
  EXPECT_EQ(EnvoyStatName("api.user"), "api.user");
  EXPECT_EQ(EnvoyStatName("api.path_/a:b|c"), "api.path_/a_b_c");
  EXPECT_EQ(EnvoyStatName("api.remote_address_10.0.12.255"), "api.remote_address_10_0_12_255");
  // Four groups of at most three digits: the run starts where such a group can start.
  EXPECT_EQ(EnvoyStatName("d.k_1234.5.6.7"), "d.k_1234_5_6_7");
  EXPECT_EQ(EnvoyStatName("d.k_1.2.3"), "d.k_1.2.3");
  EXPECT_EQ(EnvoyStatName("d.v_1.2.3.4.5.6"), "d.v_1_2_3_4.5.6");
  EXPECT_EQ(EnvoyStatName("d.k_a\nb"), "d.k_a_b");
}

TEST_F(MetricsTest, UnknownDomainsPerDomainWithBoundedNames) {
  for (int i = 0; i < 3; ++i) {
    rls::RateLimitResponse response;
    ASSERT_TRUE(service_
                    ->ShouldRateLimit(CallContext{Frontend::kGrpc},
                                      floodgate::testing::EnvoyRequest("typo", {{{"k", "v"}}}),
                                      &response)
                    .ok());
  }
  std::string text = RenderPrometheus(*limiter_, metrics_, ConfigStats{});
  EXPECT_EQ(Sample(text, "ratelimit_service_rate_limit_domain_not_found{domain=\"typo\"}"), 3);
  EXPECT_EQ(Sample(text, "ratelimit_service_rate_limit_domain_not_found{domain=\"api\"}"), -1);
  // Made-up names past the bound count together.
  for (size_t i = 0; i < DomainCounts::kMaxDomains + 4; ++i) {
    metrics_.domain_not_found.Add(absl::StrCat("d", i));
  }
  size_t names = 0;
  uint64_t other = 0;
  metrics_.domain_not_found.ForEach([&](const std::string& domain, uint64_t count) {
    ++names;
    if (domain == DomainCounts::kOtherDomains) {
      other = count;
    }
  });
  EXPECT_EQ(names, DomainCounts::kMaxDomains + 1);
  EXPECT_EQ(other, 5u);  // 1004 new names, 999 kept beside "typo"
}

// What the alert rules compare (deploy/prometheus/floodgate-alerts.yml): memory use against the
// caps, whether the last config change was refused, and the process metrics beside ours.
TEST_F(MetricsTest, MemoryCapsLastReloadAndProcessMetrics) {
  metrics_.max_memory_bytes = 256u << 20;
  metrics_.store_max_bytes = 224u << 20;
  ConfigStats config;
  config.reload_success = 1;
  std::string text = RenderPrometheus(*limiter_, metrics_, config);
  EXPECT_EQ(Sample(text, "floodgate_max_memory_bytes"), 256 << 20);
  EXPECT_EQ(Sample(text, "floodgate_store_max_bytes"), 224 << 20);
  EXPECT_EQ(Sample(text, "floodgate_config_last_reload_successful"), 1);
  EXPECT_GT(Sample(text, "process_resident_memory_bytes"), 0);
  EXPECT_THAT(text, HasSubstr("# TYPE floodgate_build_info gauge\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE floodgate_shed_checks_total counter\n"));
  metrics_.shed_checks.Add("api");
  metrics_.shed_checks.Add("api");
  text = RenderPrometheus(*limiter_, metrics_, config);
  EXPECT_EQ(Sample(text, "floodgate_shed_checks_total{domain=\"api\"}"), 2);

  config.reload_failure = 1;
  config.last_error = "bad YAML";
  text = RenderPrometheus(*limiter_, metrics_, config);
  EXPECT_EQ(Sample(text, "floodgate_config_last_reload_successful"), 0);
}

}  // namespace
}  // namespace floodgate::service
