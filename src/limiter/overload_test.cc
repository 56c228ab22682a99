// The limiter's overload mechanisms: the over-limit fast path (refusal_cache.h) and
// block_duration.

#include <atomic>

#include <gtest/gtest.h>

#include "src/limiter/limiter.h"
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
  - key: login
    rate_limit: {unit: minute, requests_per_unit: 2, block_duration: 10m}
  - key: conc
    rate_limit: {algorithm: concurrency, unit: minute, requests_per_unit: 1}
)";

constexpr char kRaisedYaml[] = R"(
domain: api
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: login
    rate_limit: {unit: minute, requests_per_unit: 2, block_duration: 10m}
  - key: conc
    rate_limit: {algorithm: concurrency, unit: minute, requests_per_unit: 1}
)";

CheckRequest Req(const std::string& key, const std::string& value) {
  return MakeRequest("api", {{{key, value}}});
}

// A store that counts the transactions it is asked to apply.
class CountingStore final : public Store {
 public:
  explicit CountingStore(Store* inner) : inner_(inner) {}
  bool Apply(absl::Span<const StoreOp> ops, int64_t now_ns,
             absl::Span<Decision> decisions) override {
    applies.fetch_add(1);
    if (unavailable.load()) {
      // As a cluster store whose owners cannot be asked, every limit failing closed.
      for (Decision& d : decisions) {
        d = Decision{.allowed = false, .unavailable = true, .retry_after_ns = 2 * kSecond};
      }
      return false;
    }
    return inner_->Apply(ops, now_ns, decisions);
  }
  StoreStats GetStats() const override { return inner_->GetStats(); }
  void ReclaimExpired(int64_t now_ns) override { inner_->ReclaimExpired(now_ns); }
  std::atomic<int> applies{0};
  std::atomic<bool> unavailable{false};

 private:
  Store* inner_;
};

class OverloadTest : public ::testing::Test {
 protected:
  OverloadTest() : store_(*NewShardedStore({})), counting_(store_.get()) {
    clock_.Set(kMinuteStartNs);
    LimiterOptions options;
    options.clock = &clock_;
    limiter_ = std::make_unique<Limiter>(&counting_, KeyHasher(1, 2), MakeConfig(kYaml), options);
  }

  CheckResponse Check(const CheckRequest& request) { return CheckOk(*limiter_, request); }

  testing::FakeClock clock_;
  std::unique_ptr<Store> store_;
  CountingStore counting_;
  std::unique_ptr<Limiter> limiter_;
};

TEST_F(OverloadTest, RefusedKeyIsRefusedWithoutTheStoreUntilItMayPass) {
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Check(Req("user", "alice")).overall, Code::kOk);
  }
  CheckResponse refused = Check(Req("user", "alice"));
  ASSERT_EQ(refused.overall, Code::kOverLimit);
  const int64_t retry = refused.descriptors[0].limits[0].decision.retry_after_ns;
  EXPECT_EQ(retry, kMinute);
  const int applies = counting_.applies.load();

  clock_.Advance(10 * kSecond);
  CheckResponse fast = Check(Req("user", "alice"));
  EXPECT_EQ(counting_.applies.load(), applies);  // the store was not asked
  EXPECT_EQ(fast.overall, Code::kOverLimit);
  const Decision& d = fast.descriptors[0].limits[0].decision;
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.remaining, 0u);
  EXPECT_EQ(d.limit, 3u);
  EXPECT_EQ(d.retry_after_ns, 50 * kSecond);
  EXPECT_EQ(limiter_->GetStats().fast_refusals, 1u);
  // Counted like any refusal.
  EXPECT_EQ(limiter_->GetStats().over_limit_checks, 2u);

  // Another key still goes to the store.
  EXPECT_EQ(Check(Req("user", "bob")).overall, Code::kOk);
  EXPECT_EQ(counting_.applies.load(), applies + 1);

  // When the window ends the key passes again (asked of the store).
  clock_.Advance(50 * kSecond);
  EXPECT_EQ(Check(Req("user", "alice")).overall, Code::kOk);
}

TEST_F(OverloadTest, ConfigReloadForgetsCachedRefusals) {
  for (int i = 0; i < 4; ++i) {
    Check(Req("user", "carol"));
  }
  ASSERT_EQ(Check(Req("user", "carol")).overall, Code::kOverLimit);
  // The limit is raised from 3 to 10: carol may pass again at once.
  limiter_->SetConfig(MakeConfig(kRaisedYaml, 2));
  EXPECT_EQ(Check(Req("user", "carol")).overall, Code::kOk);
}

TEST_F(OverloadTest, ConcurrencyRefusalsAreNotCached) {
  auto first = limiter_->Check(Req("conc", "job"));
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->overall, Code::kOk);
  ASSERT_EQ(Check(Req("conc", "job")).overall, Code::kOverLimit);
  // A release frees the slot before any retry_after: the next check must see it.
  ASSERT_TRUE(limiter_->Release(Req("conc", "job"), first->lease).ok());
  EXPECT_EQ(Check(Req("conc", "job")).overall, Code::kOk);
}

// A shed check (a front end past its in-flight bounds, in a cluster decided by failure mode)
// reaches the store marked, and its refusal is not the owner's: it is not cached.
TEST_F(OverloadTest, ShedRefusalsAreNotCached) {
  CheckRequest shed = Req("user", "dave");
  shed.shed = true;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Check(shed).overall, Code::kOk);
  }
  ASSERT_EQ(Check(shed).overall, Code::kOverLimit);
  const int applies = counting_.applies.load();
  EXPECT_EQ(Check(Req("user", "dave")).overall, Code::kOverLimit);
  EXPECT_EQ(counting_.applies.load(), applies + 1);  // asked the store again
  EXPECT_EQ(limiter_->GetStats().fast_refusals, 0u);
}

// A closed failure mode's refusal is not the limit's: it neither starts a block nor is cached,
// and it stays marked unavailable in the response, so the next check asks again.
TEST_F(OverloadTest, UnavailableRefusalsNeitherBlockNorAreCached) {
  counting_.unavailable = true;
  CheckResponse refused = Check(Req("login", "erin"));
  ASSERT_EQ(refused.overall, Code::kOverLimit);
  ASSERT_EQ(refused.descriptors[0].limits.size(), 1u);
  EXPECT_TRUE(refused.descriptors[0].limits[0].decision.unavailable);
  const int applies = counting_.applies.load();
  EXPECT_EQ(Check(Req("login", "erin")).overall, Code::kOverLimit);
  EXPECT_EQ(counting_.applies.load(), applies + 1);  // asked the store again
  EXPECT_EQ(limiter_->GetStats().fast_refusals, 0u);
  // The owners are back: no block was started, the login passes.
  counting_.unavailable = false;
  CheckResponse passed = Check(Req("login", "erin"));
  EXPECT_EQ(passed.overall, Code::kOk);
  EXPECT_FALSE(passed.descriptors[0].limits[0].decision.unavailable);
}

TEST_F(OverloadTest, BlockDurationRefusesForTheWholeBlockAfterARefusal) {
  EXPECT_EQ(Check(Req("login", "mallory")).overall, Code::kOk);
  EXPECT_EQ(Check(Req("login", "mallory")).overall, Code::kOk);
  CheckResponse refused = Check(Req("login", "mallory"));
  ASSERT_EQ(refused.overall, Code::kOverLimit);
  EXPECT_EQ(refused.descriptors[0].limits[0].decision.retry_after_ns, 10 * kMinute);
  ASSERT_EQ(refused.descriptors[0].limits.size(), 1u);  // the block is not a limit of its own

  // The window ends after a minute, but the block holds for ten.
  clock_.Advance(2 * kMinute);
  CheckResponse blocked = Check(Req("login", "mallory"));
  EXPECT_EQ(blocked.overall, Code::kOverLimit);
  EXPECT_EQ(blocked.descriptors[0].limits[0].decision.retry_after_ns, 8 * kMinute);
  // Without the cache too: the block is in the store.
  LimiterOptions no_cache;
  no_cache.clock = &clock_;
  no_cache.refusal_cache_slots = 0;
  Limiter uncached(&counting_, KeyHasher(1, 2), MakeConfig(kYaml), no_cache);
  auto direct = uncached.Check(Req("login", "mallory"));
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ(direct->overall, Code::kOverLimit);
  EXPECT_EQ(direct->descriptors[0].limits[0].decision.retry_after_ns, 8 * kMinute);
  // Blocked checks consume nothing: after the block the full limit is there.
  clock_.Advance(8 * kMinute);
  EXPECT_EQ(Check(Req("login", "mallory")).overall, Code::kOk);
  EXPECT_EQ(Check(Req("login", "mallory")).overall, Code::kOk);
  EXPECT_EQ(Check(Req("login", "mallory")).overall, Code::kOverLimit);
  // Other callers were never blocked.
  EXPECT_EQ(Check(Req("login", "alice")).overall, Code::kOk);
}

// More hits than the limit can ever admit are refused (retry never) without starting a block:
// one oversized request must not lock a key out for everyone else.
TEST_F(OverloadTest, HitsThatCanNeverPassDoNotStartABlock) {
  CheckRequest huge = Req("login", "trent");
  huge.hits_addend = 3;  // the limit is 2 a minute
  CheckResponse refused = Check(huge);
  ASSERT_EQ(refused.overall, Code::kOverLimit);
  EXPECT_EQ(refused.descriptors[0].limits[0].decision.retry_after_ns, Decision::kNever);
  EXPECT_EQ(Check(Req("login", "trent")).overall, Code::kOk);
  EXPECT_EQ(Check(Req("login", "trent")).overall, Code::kOk);
  // The third is an ordinary refusal: that one blocks.
  CheckResponse blocked = Check(Req("login", "trent"));
  EXPECT_EQ(blocked.overall, Code::kOverLimit);
  EXPECT_EQ(blocked.descriptors[0].limits[0].decision.retry_after_ns, 10 * kMinute);
}

}  // namespace
}  // namespace floodgate::limiter
