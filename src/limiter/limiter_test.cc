#include "src/limiter/limiter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "testing/fake_clock.h"
#include "testing/limiter_helpers.h"

namespace floodgate::limiter {
namespace {

using testing::CheckOk;
using testing::kMinute;
using testing::kMinuteStartNs;
using testing::kSecond;
using testing::MakeConfig;
using testing::MakeRequest;

constexpr char kYaml[] = R"(
domain: api
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: path
    value: /login
    rate_limit: {unit: minute, requests_per_unit: 2, name: login}
  - key: path
    value: /admin*
    rate_limit: {unit: hour, requests_per_unit: 5, name: admin, replaces: [{name: login}]}
  - key: path
    value: /free
    rate_limit: {unlimited: true}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: tiered
    rate_limits:
      - {unit: second, requests_per_unit: 10}
      - {unit: minute, requests_per_unit: 4}
  - key: conc
    rate_limit: {algorithm: concurrency, unit: minute, requests_per_unit: 2}
  - key: team
    descriptors:
      - key: user
        rate_limit: {unit: minute, requests_per_unit: 1}
)";

CheckRequest Req(std::vector<std::vector<core::DescriptorEntry>> descriptors, uint64_t hits = 0) {
  return MakeRequest("api", std::move(descriptors), hits);
}

class LimiterTest : public ::testing::Test {
 protected:
  LimiterTest() {
    StoreOptions options;
    options.shards = 4;
    store_ = *NewShardedStore(options);
    LimiterOptions lo;
    lo.clock = &clock_;
    // Start at the beginning of a minute so window arithmetic below is simple.
    clock_.Set(kMinuteStartNs);
    limiter_ = std::make_unique<Limiter>(store_.get(), KeyHasher(1, 2), MakeConfig(kYaml), lo);
  }

  CheckResponse Check(const CheckRequest& request) { return CheckOk(*limiter_, request); }

  testing::FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Limiter> limiter_;
};

// A domain the config does not define (a typo) applies no limit, and says so; a known domain
// does not, whether or not a descriptor matched.
TEST_F(LimiterTest, UnknownDomainIsFlagged) {
  CheckResponse unknown = Check(MakeRequest("apii", {{{"user", "alice"}}}));
  EXPECT_EQ(unknown.overall, Code::kOk);
  EXPECT_TRUE(unknown.unknown_domain);
  EXPECT_TRUE(unknown.descriptors[0].limits.empty());
  EXPECT_FALSE(Check(Req({{{"user", "alice"}}})).unknown_domain);
  EXPECT_FALSE(Check(Req({{{"nomatch", "x"}}})).unknown_domain);
}

TEST_F(LimiterTest, PerUserLimitRefusesAfterLimitAndResetsNextWindow) {
  for (int i = 0; i < 3; ++i) {
    CheckResponse r = Check(Req({{{"user", "alice"}}}));
    EXPECT_EQ(r.overall, Code::kOk) << i;
    ASSERT_EQ(r.descriptors[0].limits.size(), 1u);
    EXPECT_EQ(r.descriptors[0].limits[0].decision.remaining, 2u - i);
  }
  CheckResponse refused = Check(Req({{{"user", "alice"}}}));
  EXPECT_EQ(refused.overall, Code::kOverLimit);
  EXPECT_EQ(refused.descriptors[0].code, Code::kOverLimit);
  EXPECT_GT(refused.descriptors[0].limits[0].decision.retry_after_ns, 0);
  // Another user has their own counter.
  EXPECT_EQ(Check(Req({{{"user", "bob"}}})).overall, Code::kOk);
  clock_.Advance(kMinute);
  EXPECT_EQ(Check(Req({{{"user", "alice"}}})).overall, Code::kOk);
}

TEST_F(LimiterTest, UnknownDomainAndUnmatchedDescriptorHaveNoLimit) {
  CheckRequest request = Req({{{"nothing", "here"}}});
  CheckResponse r = Check(request);
  EXPECT_EQ(r.overall, Code::kOk);
  EXPECT_TRUE(r.descriptors[0].limits.empty());
  EXPECT_EQ(r.descriptors[0].primary, -1);
  request.domain = "other";
  request.descriptors[0].entries = {{"user", "alice"}};
  EXPECT_TRUE(Check(request).descriptors[0].limits.empty());
}

TEST_F(LimiterTest, RejectsMalformedRequests) {
  CheckRequest empty_domain = Req({{{"user", "a"}}});
  empty_domain.domain.clear();
  EXPECT_EQ(limiter_->Check(empty_domain).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(limiter_->Check(Req({})).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(limiter_->Check(Req({{}})).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(limiter_->Check(Req({{{"", "x"}}})).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(LimiterTest, RequestUnderSeveralLimitsIsAtomic) {
  // user allows 3 per minute, /login 2 per minute: the third request is refused by /login and
  // must not consume from the user's limit.
  auto both = [] { return Req({{{"user", "carol"}}, {{"path", "/login"}}}); };
  EXPECT_EQ(Check(both()).overall, Code::kOk);
  EXPECT_EQ(Check(both()).overall, Code::kOk);
  CheckResponse refused = Check(both());
  EXPECT_EQ(refused.overall, Code::kOverLimit);
  EXPECT_EQ(refused.descriptors[0].code, Code::kOk);
  EXPECT_EQ(refused.descriptors[1].code, Code::kOverLimit);
  // carol used 2 of 3: one left, then refused.
  CheckResponse alone = Check(Req({{{"user", "carol"}}}));
  EXPECT_EQ(alone.overall, Code::kOk);
  EXPECT_EQ(alone.descriptors[0].limits[0].decision.remaining, 0u);
  EXPECT_EQ(Check(Req({{{"user", "carol"}}})).overall, Code::kOverLimit);
}

TEST_F(LimiterTest, SeveralWindowsOnOneKeyAllMustPass) {
  for (int i = 0; i < 4; ++i) {
    CheckResponse r = Check(Req({{{"tiered", "t"}}}));
    EXPECT_EQ(r.overall, Code::kOk);
    EXPECT_EQ(r.descriptors[0].limits.size(), 2u);
  }
  CheckResponse refused = Check(Req({{{"tiered", "t"}}}));
  EXPECT_EQ(refused.overall, Code::kOverLimit);
  // The minute limit refused; it is the one reported.
  const LimitResult& primary = refused.descriptors[0].limits[refused.descriptors[0].primary];
  EXPECT_EQ(primary.rule->spec.period_ns, kMinute);
  EXPECT_FALSE(primary.decision.allowed);
}

TEST_F(LimiterTest, ReplacesDropsTheNamedLimitFromTheSameRequest) {
  for (int i = 0; i < 3; ++i) {
    CheckResponse r = Check(Req({{{"path", "/login"}}, {{"path", "/admin/x"}}}));
    EXPECT_EQ(r.overall, Code::kOk) << i;  // login's 2/min is replaced by admin's 5/hour
    EXPECT_TRUE(r.descriptors[0].limits.empty());
    EXPECT_EQ(r.descriptors[1].limits.size(), 1u);
  }
}

TEST_F(LimiterTest, UnlimitedNeverRefuses) {
  for (int i = 0; i < 10; ++i) {
    CheckResponse r = Check(Req({{{"path", "/free"}}}, 1000));
    EXPECT_EQ(r.overall, Code::kOk);
    EXPECT_TRUE(r.descriptors[0].unlimited);
    EXPECT_TRUE(r.descriptors[0].limits.empty());
  }
}

TEST_F(LimiterTest, ShadowModeCountsButNeverRefuses) {
  EXPECT_EQ(Check(Req({{{"shadow", "s"}}})).overall, Code::kOk);
  CheckResponse r = Check(Req({{{"shadow", "s"}}}));
  EXPECT_EQ(r.overall, Code::kOk);
  EXPECT_EQ(r.descriptors[0].code, Code::kOk);
  ASSERT_EQ(r.descriptors[0].limits.size(), 1u);
  EXPECT_TRUE(r.descriptors[0].limits[0].shadow);
  uint64_t shadow = 0, over = 0;
  limiter_->ForEachRuleCounters([&](const std::string& key, const RuleCounters& c) {
    if (key == "api.shadow") {
      shadow = c.shadow_mode.load();
      over = c.over_limit.load();
    }
  });
  EXPECT_EQ(shadow, 1u);
  EXPECT_EQ(over, 1u);
}

TEST_F(LimiterTest, HitsAddendAndReadOnlyDescriptors) {
  CheckResponse r = Check(Req({{{"user", "dave"}}}, 2));
  EXPECT_EQ(r.descriptors[0].limits[0].decision.remaining, 1u);
  // Per-descriptor hits 0 only reads.
  CheckRequest read = Req({{{"user", "dave"}}}, 5);
  read.descriptors[0].hits_addend = 0;
  for (int i = 0; i < 3; ++i) {
    CheckResponse peek = Check(read);
    EXPECT_EQ(peek.overall, Code::kOk);
    EXPECT_EQ(peek.descriptors[0].limits[0].decision.remaining, 1u);
  }
  // More hits than remain: refused, nothing consumed.
  EXPECT_EQ(Check(Req({{{"user", "dave"}}}, 2)).overall, Code::kOverLimit);
  EXPECT_EQ(Check(Req({{{"user", "dave"}}}, 1)).overall, Code::kOk);
}

TEST_F(LimiterTest, DescriptorLimitOverrideReplacesConfig) {
  CheckRequest request = Req({{{"user", "erin"}}});
  request.descriptors[0].limit = LimitOverride{1, core::TimeUnit::kHour};
  EXPECT_EQ(Check(request).overall, Code::kOk);
  CheckResponse refused = Check(request);
  EXPECT_EQ(refused.overall, Code::kOverLimit);
  EXPECT_EQ(refused.descriptors[0].limits[0].rule->unit, core::TimeUnit::kHour);
  // The override also works for descriptors the config does not know.
  CheckRequest unknown = Req({{{"whatever", "x"}}});
  unknown.descriptors[0].limit = LimitOverride{1, core::TimeUnit::kSecond};
  EXPECT_EQ(Check(unknown).overall, Code::kOk);
  EXPECT_EQ(Check(unknown).overall, Code::kOverLimit);
}

TEST_F(LimiterTest, NestedDescriptorsUseTheLastEntry) {
  EXPECT_EQ(Check(Req({{{"team", "a"}, {"user", "u"}}})).overall, Code::kOk);
  EXPECT_EQ(Check(Req({{{"team", "a"}, {"user", "u"}}})).overall, Code::kOverLimit);
  // Different team value: its own counter.
  EXPECT_EQ(Check(Req({{{"team", "b"}, {"user", "u"}}})).overall, Code::kOk);
  // The team alone has no limit.
  EXPECT_TRUE(Check(Req({{{"team", "a"}}})).descriptors[0].limits.empty());
}

TEST_F(LimiterTest, ConcurrencySlotsAreReleased) {
  CheckRequest request = Req({{{"conc", "job"}}});
  const CheckResponse first = Check(request);
  EXPECT_EQ(first.overall, Code::kOk);
  EXPECT_GT(first.lease, 0);
  EXPECT_NE(first.lease, first.decided_at_ns) << "the token is not the check's time";
  clock_.Advance(kSecond);
  EXPECT_EQ(Check(request).overall, Code::kOk);
  EXPECT_EQ(Check(request).overall, Code::kOverLimit);
  ASSERT_TRUE(limiter_->Release(request, first.lease).ok());
  EXPECT_EQ(Check(request).overall, Code::kOk);
  EXPECT_EQ(Check(request).overall, Code::kOverLimit);
  // Checks that acquired nothing carry no lease.
  EXPECT_EQ(Check(request).lease, 0) << "refused";
  EXPECT_EQ(Check(Req({{{"user", "nobody"}}})).lease, 0) << "no concurrency limit";
}

// Issue 11: a made-up token freed a held slot, and a replayed release freed another caller's.
TEST_F(LimiterTest, ForgedReplayedAndExpiredLeasesFreeNothing) {
  CheckRequest request = Req({{{"conc", "job"}}});
  const CheckResponse a = Check(request);
  const CheckResponse b = Check(request);
  ASSERT_EQ(a.overall, Code::kOk);
  ASSERT_EQ(b.overall, Code::kOk);
  EXPECT_NE(a.lease, b.lease);
  ASSERT_EQ(Check(request).overall, Code::kOverLimit);
  // Forged: a made-up token, and the old kind of token (the check's time).
  for (int64_t forged : {int64_t{9000000000000000000}, a.decided_at_ns, a.lease ^ 1}) {
    const absl::Status released = limiter_->Release(request, forged);
    EXPECT_EQ(released.code(), absl::StatusCode::kFailedPrecondition) << forged;
    EXPECT_EQ(released.message(), "the lease is unknown, already released or expired");
  }
  EXPECT_EQ(Check(request).overall, Code::kOverLimit) << "both slots still held";
  // Another descriptor's lease does not free this one's slots.
  const CheckResponse other = Check(Req({{{"conc", "other"}}}));
  ASSERT_EQ(other.overall, Code::kOk);
  EXPECT_EQ(limiter_->Release(request, other.lease).code(), absl::StatusCode::kFailedPrecondition);
  // Real: frees exactly its slot, once.
  ASSERT_TRUE(limiter_->Release(request, a.lease).ok());
  EXPECT_EQ(limiter_->Release(request, a.lease).code(), absl::StatusCode::kFailedPrecondition)
      << "replayed";
  const CheckResponse c = Check(request);
  EXPECT_EQ(c.overall, Code::kOk) << "a's slot was freed";
  EXPECT_EQ(Check(request).overall, Code::kOverLimit) << "the replay did not free b's slot";
  // Expired: b's slot ages out within two lease periods (1 minute); its release then frees
  // nothing, and certainly not the slot of the check that took its place.
  clock_.Advance(2 * kMinute);
  const CheckResponse d = Check(request);
  ASSERT_EQ(d.overall, Code::kOk);
  EXPECT_EQ(limiter_->Release(request, b.lease).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(Check(request).overall, Code::kOk);
  EXPECT_EQ(Check(request).overall, Code::kOverLimit) << "d and the last check hold both slots";
  EXPECT_TRUE(limiter_->Release(request, d.lease).ok());
  // A request without a concurrency limit has nothing to release.
  EXPECT_EQ(limiter_->Release(Req({{{"user", "nobody"}}}), d.lease).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(LimiterTest, ReloadKeepsCountersOfUnchangedLimits) {
  for (int i = 0; i < 3; ++i) {
    Check(Req({{{"user", "frank"}}}));
  }
  limiter_->SetConfig(MakeConfig(kYaml, 2));
  EXPECT_EQ(limiter_->GetStats().config_version, 2u);
  EXPECT_EQ(Check(Req({{{"user", "frank"}}})).overall, Code::kOverLimit);
  uint64_t total = 0;
  limiter_->ForEachRuleCounters([&](const std::string& key, const RuleCounters& c) {
    if (key == "api.user") total = c.total_hits.load();
  });
  EXPECT_EQ(total, 4u);
}

TEST(StateKeyTest, LengthPrefixingSeparatesAmbiguousDescriptors) {
  core::RateLimitRule rule;
  rule.spec.period_ns = kMinute;
  std::vector<core::DescriptorEntry> a = {{"ab", "c"}};
  std::vector<core::DescriptorEntry> b = {{"a", "bc"}};
  EXPECT_NE(StateKey("d", a, rule), StateKey("d", b, rule));
  core::RateLimitRule other = rule;
  other.slot = 1;
  EXPECT_NE(StateKey("d", a, rule), StateKey("d", a, other));
  other = rule;
  other.spec.requests_per_period = 99;  // the count is not part of the key
  EXPECT_EQ(StateKey("d", a, rule), StateKey("d", a, other));
}

// A store that keeps state outside the process (WantsStateKeys) and records the keys it is given.
class KeyRecordingStore : public Store {
 public:
  KeyRecordingStore() : inner_(*NewShardedStore(StoreOptions{.shards = 4})) {}
  bool Apply(absl::Span<const StoreOp> ops, int64_t now_ns,
             absl::Span<Decision> decisions) override {
    for (const StoreOp& op : ops) {
      keys.emplace_back(op.state_key);
      descriptor_sizes.push_back(op.descriptor_size);
    }
    return inner_->Apply(ops, now_ns, decisions);
  }
  bool WantsStateKeys() const override { return true; }
  StoreStats GetStats() const override { return inner_->GetStats(); }
  void ReclaimExpired(int64_t now_ns) override { inner_->ReclaimExpired(now_ns); }

  std::vector<std::string> keys;
  std::vector<uint32_t> descriptor_sizes;

 private:
  std::unique_ptr<LocalStore> inner_;
};

// The keys a Redis store names its state with: the same on every node (whatever the hasher's
// secret), one descriptor's limits sharing the descriptor part, a block its limit's key + 'B',
// and a release the acquire's key.
TEST(StateKeyTest, StoresThatAskGetTheSameKeysOnEveryNode) {
  constexpr char kBlocks[] = R"(
domain: api
descriptors:
  - key: tiered
    rate_limits:
      - {unit: second, requests_per_unit: 10}
      - {unit: minute, requests_per_unit: 4, block_duration: 1m}
  - key: conc
    rate_limit: {algorithm: concurrency, unit: minute, requests_per_unit: 2}
)";
  testing::FakeClock clock;
  clock.Set(kMinuteStartNs);
  LimiterOptions lo;
  lo.clock = &clock;
  KeyRecordingStore a_store;
  KeyRecordingStore b_store;
  Limiter a(&a_store, KeyHasher(1, 2), MakeConfig(kBlocks), lo);
  Limiter b(&b_store, KeyHasher(3, 4), MakeConfig(kBlocks), lo);
  const CheckRequest tiered = MakeRequest("api", {{{"tiered", "x"}}}, 0);
  CheckOk(a, tiered);
  CheckOk(b, tiered);
  ASSERT_EQ(a_store.keys.size(), 3u);  // two limits and the block
  EXPECT_EQ(a_store.keys, b_store.keys);
  const uint32_t descriptor = a_store.descriptor_sizes[0];
  EXPECT_EQ(a_store.keys[0].substr(0, descriptor),
            StateKey("api", {{"tiered", "x"}}, core::RateLimitRule{}).substr(0, descriptor));
  EXPECT_LT(descriptor, a_store.keys[0].size());
  EXPECT_EQ(a_store.keys[0].substr(0, descriptor), a_store.keys[1].substr(0, descriptor));
  EXPECT_NE(a_store.keys[0], a_store.keys[1]);
  EXPECT_EQ(a_store.keys[2], a_store.keys[1] + "B");
  EXPECT_EQ(a_store.descriptor_sizes, std::vector<uint32_t>(3, descriptor));

  const CheckRequest conc = MakeRequest("api", {{{"conc", "y"}}}, 0);
  const CheckResponse acquired = CheckOk(a, conc);
  ASSERT_NE(acquired.lease, 0);
  ASSERT_TRUE(a.Release(conc, acquired.lease).ok());
  ASSERT_EQ(a_store.keys.size(), 5u);
  EXPECT_EQ(a_store.keys[3], a_store.keys[4]);  // acquired and released under one key
}

}  // namespace
}  // namespace floodgate::limiter
