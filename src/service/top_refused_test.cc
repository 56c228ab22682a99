// The top refused keys as the pipeline feeds them, and the shed count per domain.

#include "src/service/top_refused.h"

#include <gtest/gtest.h>

#include <memory>

#include "floodgate/store.h"
#include "src/service/rate_limit_service.h"
#include "testing/fake_clock.h"
#include "testing/limiter_helpers.h"

namespace floodgate::service {
namespace {

using floodgate::testing::MakeConfig;
using floodgate::testing::MakeRequest;

constexpr int64_t kSec = 1'000'000'000;

// Two requests a minute per user; `plan` in shadow mode (refusals pass).
constexpr char kYaml[] =
    "domain: api\n"
    "descriptors:\n"
    "  - {key: user, rate_limit: {unit: minute, requests_per_unit: 2}}\n"
    "  - {key: plan, shadow_mode: true, rate_limit: {unit: minute, requests_per_unit: 0}}\n";

class TopRefusedTest : public ::testing::Test {
 protected:
  TopRefusedTest() : top_(&clock_) {
    store_ = *NewShardedStore({});
    clock_.Set(floodgate::testing::kMinuteStartNs);
    limiter::LimiterOptions options;
    options.clock = &clock_;
    limiter_ = std::make_unique<limiter::Limiter>(store_.get(), KeyHasher(1, 2), MakeConfig(kYaml),
                                                  options);
    service_ = NewRateLimitService(limiter_.get(), RequestLimits{}, &metrics_, {}, &top_);
  }

  limiter::Code Check(const std::string& domain, const std::string& key, const std::string& value,
                      bool shed = false) {
    limiter::CheckRequest request = MakeRequest(domain, {{{key, value}}});
    auto decided = service_->Check(CallContext{Frontend::kHttp, shed}, request);
    EXPECT_TRUE(decided.ok()) << decided.status();
    return decided.ok() ? decided->overall : limiter::Code::kOk;
  }

  floodgate::testing::FakeClock clock_;
  TopRefused top_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<limiter::Limiter> limiter_;
  ServerMetrics metrics_;
  std::unique_ptr<RateLimitService> service_;
};

TEST_F(TopRefusedTest, CountsOnlyRefusalsByDomainAndDescriptor) {
  for (int i = 0; i < 5; ++i) {
    Check("api", "user", "alice");  // 2 allowed, 3 refused
  }
  for (int i = 0; i < 3; ++i) {
    Check("api", "user", "bob");  // 2 allowed, 1 refused
  }
  Check("api", "plan", "free");   // refused in shadow mode: passes, not counted
  Check("other", "user", "eve");  // unknown domain: no limit
  const core::TopSnapshot top = top_.Snapshot();
  EXPECT_EQ(top.total, 4u);
  ASSERT_EQ(top.keys.size(), 2u);
  const RefusedKey first = RefusedKeyOf(top.keys[0]);
  EXPECT_EQ(first.domain, "api");
  EXPECT_EQ(first.descriptor, "user=alice");
  EXPECT_EQ(first.refused, 3u);
  EXPECT_EQ(first.error, 0u);
  EXPECT_EQ(RefusedKeyOf(top.keys[1]).descriptor, "user=bob");
  EXPECT_EQ(RefusedKeyOf(top.keys[1]).refused, 1u);

  // A minute later the window has moved on.
  clock_.Advance(61 * kSec);
  EXPECT_EQ(top_.Snapshot().total, 0u);
}

TEST_F(TopRefusedTest, ShedChecksCountPerConfiguredDomainOnly) {
  Check("api", "user", "carol", /*shed=*/true);
  Check("api", "user", "carol", /*shed=*/true);
  Check("made-up", "user", "carol", /*shed=*/true);
  Check("api", "user", "dave");  // not shed
  absl::flat_hash_map<std::string, uint64_t> shed;
  metrics_.shed_checks.ForEach(
      [&shed](const std::string& domain, uint64_t count) { shed[domain] = count; });
  EXPECT_EQ(shed.size(), 2u);
  EXPECT_EQ(shed["api"], 2u);
  EXPECT_EQ(shed[DomainCounts::kOtherDomains], 1u);
  EXPECT_NE(RenderPrometheus(*limiter_, metrics_, {})
                .find("floodgate_shed_checks_total{domain=\"api\"} 2\n"),
            std::string::npos);
}

TEST(RefusalKeyTest, RoundTripsAndStaysBounded) {
  const std::vector<core::DescriptorEntry> entries = {{"user", "alice"}, {"path", "/a:b"}};
  const std::string key = RefusalKey("my:domain", entries);
  const RefusedKey back = RefusedKeyOf(core::TopKey{key, 7, 1});
  EXPECT_EQ(back.domain, "my:domain");
  EXPECT_EQ(back.descriptor, "user=alice,path=/a:b");
  EXPECT_EQ(back.refused, 7u);
  EXPECT_EQ(back.error, 1u);

  const std::string huge = RefusalKey("api", {{"user", std::string(10'000, 'x')}});
  EXPECT_EQ(huge.size(), core::WindowedTopKeys::kMaxKeyBytes);
  EXPECT_EQ(RefusedKeyOf(core::TopKey{huge, 1, 0}).domain, "api");
  // A malformed key from a peer is shown whole.
  EXPECT_EQ(RefusedKeyOf(core::TopKey{"99:x", 1, 0}).descriptor, "99:x");
}

}  // namespace
}  // namespace floodgate::service
