// CheckAsync and ReleaseAsync over a store that suspends (testing::HeldStore, standing in for a
// cluster whose owners answer late): the same decisions as Check, leases that ReleaseAsync
// frees, and a callback that runs exactly once, on the io_context it was given.

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "src/limiter/limiter.h"
#include "testing/fake_clock.h"
#include "testing/held_store.h"
#include "testing/limiter_helpers.h"

namespace floodgate::limiter {
namespace {

using testing::HeldStore;
using testing::kMinuteStartNs;
using testing::kSecond;
using testing::MakeConfig;
using testing::MakeRequest;

// Returns the config of domain "d" with every limit under `algorithm`: one limit on "k", two on
// "pair" (the second a fixed window), and, except for concurrency, one with a block on "blk".
std::string YamlFor(const std::string& algorithm) {
  std::string yaml =
      "domain: d\ndescriptors:\n"
      "  - key: k\n"
      "    rate_limit: {unit: minute, requests_per_unit: 3, algorithm: " +
      algorithm +
      "}\n"
      "  - key: pair\n"
      "    rate_limits:\n"
      "      - {unit: minute, requests_per_unit: 4, algorithm: " +
      algorithm +
      "}\n"
      "      - {unit: hour, requests_per_unit: 5}\n";
  if (algorithm != "concurrency") {
    yaml +=
        "  - key: blk\n"
        "    rate_limit: {unit: minute, requests_per_unit: 2, block_duration: 2m, "
        "algorithm: " +
        algorithm + "}\n";
  }
  return yaml;
}

// Runs the handlers posted to `loop` so far (and those they post), on this thread.
void RunLoop(boost::asio::io_context& loop) {
  loop.restart();
  loop.poll();
}

// What CheckAsync delivered: the status its callback got, and how often it ran.
struct Delivered {
  absl::Status status = absl::UnknownError("not delivered");
  int calls = 0;
  bool on_loop = false;  // the last call ran on a thread running the check's loop
};

// Expects two responses to say the same: codes, limits and every decision's fields.
void ExpectSameResponse(const CheckResponse& want, const CheckResponse& got,
                        const std::string& where) {
  EXPECT_EQ(got.overall, want.overall) << where;
  EXPECT_EQ(got.decided_at_ns, want.decided_at_ns) << where;
  EXPECT_EQ(got.lease != 0, want.lease != 0) << where;
  ASSERT_EQ(got.descriptors.size(), want.descriptors.size()) << where;
  for (size_t i = 0; i < want.descriptors.size(); ++i) {
    const DescriptorStatus& w = want.descriptors[i];
    const DescriptorStatus& g = got.descriptors[i];
    EXPECT_EQ(g.code, w.code) << where << " descriptor " << i;
    EXPECT_EQ(g.primary, w.primary) << where << " descriptor " << i;
    ASSERT_EQ(g.limits.size(), w.limits.size()) << where << " descriptor " << i;
    for (size_t k = 0; k < w.limits.size(); ++k) {
      const Decision& wd = w.limits[k].decision;
      const Decision& gd = g.limits[k].decision;
      const std::string at =
          where + " descriptor " + std::to_string(i) + " limit " + std::to_string(k);
      EXPECT_EQ(g.limits[k].rule->stats_key, w.limits[k].rule->stats_key) << at;
      EXPECT_EQ(gd.allowed, wd.allowed) << at;
      EXPECT_EQ(gd.unavailable, wd.unavailable) << at;
      EXPECT_EQ(gd.limit, wd.limit) << at;
      EXPECT_EQ(gd.remaining, wd.remaining) << at;
      EXPECT_EQ(gd.retry_after_ns, wd.retry_after_ns) << at;
      EXPECT_EQ(gd.reset_after_ns, wd.reset_after_ns) << at;
      EXPECT_EQ(gd.delay_ns, wd.delay_ns) << at;
    }
  }
}

class LimiterAsyncTest : public ::testing::Test {
 protected:
  void Build(const std::string& yaml) {
    clock_.Set(kMinuteStartNs);
    LimiterOptions options;
    options.clock = &clock_;
    reference_store_ = *NewShardedStore(StoreOptions{.shards = 4});
    reference_ = std::make_unique<Limiter>(reference_store_.get(), KeyHasher(1, 2),
                                           MakeConfig(yaml.c_str()), options);
    limiter_ =
        std::make_unique<Limiter>(&store_, KeyHasher(1, 2), MakeConfig(yaml.c_str()), options);
  }

  // Starts CheckAsync of `request` into `response`, recording into `delivered`.
  void StartCheck(const CheckRequest& request, CheckResponse& response, Delivered& delivered,
                  boost::asio::io_context& loop) {
    limiter_->CheckAsync(request, response, loop, [&delivered, &loop](absl::Status status) {
      delivered.status = std::move(status);
      ++delivered.calls;
      delivered.on_loop = loop.get_executor().running_in_this_thread();
    });
  }
  // Releases every held transaction and runs the loop until nothing is held (a check's block
  // write may be held in turn).
  void ReleaseEverything() {
    do {
      store_.ReleaseAll();
      RunLoop(loop_);
    } while (store_.held() > 0);
  }

  testing::FakeClock clock_;
  HeldStore store_;
  std::unique_ptr<Store> reference_store_;
  std::unique_ptr<Limiter> reference_;  // over a store that never suspends, asked with Check
  std::unique_ptr<Limiter> limiter_;    // over store_, asked with CheckAsync
  boost::asio::io_context loop_;
};

class LimiterAsyncAlgorithmTest : public LimiterAsyncTest,
                                  public ::testing::WithParamInterface<const char*> {};

// A sequence of checks (hits 0 to 3, one and two descriptors, time passing, a block) gets the
// same answers from a held and released CheckAsync as from Check.
TEST_P(LimiterAsyncAlgorithmTest, SameDecisionsAsCheck) {
  const std::string algorithm = GetParam();
  Build(YamlFor(algorithm));
  store_.HoldAll();
  struct Step {
    std::vector<std::vector<core::DescriptorEntry>> descriptors;
    uint64_t hits;
    int64_t advance_ns;  // before the check
  };
  std::vector<Step> steps = {
      {{{{"k", "a"}}}, 1, 0},
      {{{{"k", "a"}}}, 1, kSecond},
      {{{{"k", "a"}}, {{"pair", "b"}}}, 1, kSecond},
      {{{{"k", "a"}}}, 2, 7 * kSecond},
      {{{{"k", "a"}}}, 0, kSecond},  // a read
      {{{{"pair", "b"}}}, 3, 2 * kSecond},
      {{{{"pair", "b"}}}, 1, 0},
      {{{{"k", "a"}}, {{"pair", "b"}}}, 1, 20 * kSecond},
      {{{{"k", "a"}}}, 1, 61 * kSecond},
      {{{{"k", "other"}}}, 4, 0},  // more than the limit at once
  };
  if (algorithm != "concurrency") {
    for (int i = 0; i < 4; ++i) {  // the third is refused and starts the block
      steps.push_back({{{{"blk", "c"}}}, 1, kSecond});
    }
    steps.push_back({{{{"blk", "c"}}}, 1, 61 * kSecond});  // a new window, still blocked
    steps.push_back({{{{"blk", "c"}}}, 1, 60 * kSecond});  // the block is over
  }
  int suspended_steps = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    clock_.Advance(steps[i].advance_ns);
    const CheckRequest request = MakeRequest("d", steps[i].descriptors, steps[i].hits);
    const CheckResponse want = testing::CheckOk(*reference_, request);
    CheckResponse got;
    Delivered delivered;
    StartCheck(request, got, delivered, loop_);
    // Suspended, unless the over-limit fast path refused it without asking the store.
    const bool suspended = store_.held() > 0;
    EXPECT_EQ(delivered.calls, suspended ? 0 : 1) << "step " << i;
    suspended_steps += suspended ? 1 : 0;
    ReleaseEverything();
    ASSERT_EQ(delivered.calls, 1) << "step " << i;
    ASSERT_TRUE(delivered.status.ok()) << "step " << i << ": " << delivered.status;
    EXPECT_EQ(delivered.on_loop, suspended) << "step " << i;
    ExpectSameResponse(want, got, algorithm + " step " + std::to_string(i));
  }
  EXPECT_GE(suspended_steps, static_cast<int>(steps.size()) - 3);
  // The sequence refused something, so the comparison covered refusals too; the fast path
  // answered as often.
  const LimiterStats async_stats = limiter_->GetStats();
  const LimiterStats reference_stats = reference_->GetStats();
  EXPECT_GT(async_stats.over_limit_checks, 0u);
  EXPECT_EQ(async_stats.over_limit_checks, reference_stats.over_limit_checks);
  EXPECT_EQ(async_stats.fast_refusals, reference_stats.fast_refusals);
}

INSTANTIATE_TEST_SUITE_P(Algorithms, LimiterAsyncAlgorithmTest,
                         ::testing::Values("fixed_window", "sliding_window", "token_bucket",
                                           "leaky_bucket", "concurrency"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return std::string(info.param);
                         });

// The callback runs once, on a thread running the loop CheckAsync was given, and only there:
// polling another io_context does not run it.
TEST_F(LimiterAsyncTest, CallbackRunsExactlyOnceOnTheGivenLoop) {
  Build(YamlFor("fixed_window"));
  store_.HoldAll();
  const CheckRequest request = MakeRequest("d", {{{"k", "a"}}});
  CheckResponse response;
  Delivered delivered;
  StartCheck(request, response, delivered, loop_);
  ASSERT_EQ(store_.held(), 1u);
  boost::asio::io_context other;
  RunLoop(other);
  RunLoop(loop_);
  EXPECT_EQ(delivered.calls, 0) << "nothing was released yet";
  ASSERT_EQ(store_.ReleaseAll(), 1u);
  RunLoop(other);
  EXPECT_EQ(delivered.calls, 0) << "ran on a loop it was not given";
  RunLoop(loop_);
  EXPECT_EQ(delivered.calls, 1);
  EXPECT_TRUE(delivered.on_loop);
  EXPECT_TRUE(delivered.status.ok()) << delivered.status;
  EXPECT_EQ(response.overall, Code::kOk);
  ASSERT_EQ(response.descriptors.size(), 1u);
  ASSERT_EQ(response.descriptors[0].limits.size(), 1u);
  EXPECT_EQ(response.descriptors[0].limits[0].decision.remaining, 2u);
  RunLoop(loop_);
  EXPECT_EQ(delivered.calls, 1);
}

// Checks that need no store answer inline even over a store that may suspend: a bad request
// (InvalidArgument), an unknown domain and an unmatched descriptor (no limit).
TEST_F(LimiterAsyncTest, ChecksWithoutStoreWorkAnswerInline) {
  Build(YamlFor("fixed_window"));
  store_.HoldAll();
  EXPECT_TRUE(limiter_->may_suspend());
  for (const CheckRequest& request :
       {MakeRequest("", {{{"k", "a"}}}), MakeRequest("d", {}), MakeRequest("nope", {{{"k", "a"}}}),
        MakeRequest("d", {{{"unmatched", "x"}}})}) {
    CheckResponse response;
    Delivered delivered;
    StartCheck(request, response, delivered, loop_);
    EXPECT_EQ(delivered.calls, 1) << request.domain;
    EXPECT_EQ(delivered.status.ok(), !request.domain.empty() && !request.descriptors.empty())
        << request.domain << ": " << delivered.status;
  }
  EXPECT_EQ(store_.async_applies(), 0);
  EXPECT_EQ(store_.held(), 0u);
}

// Several checks suspended at once each get their own answer, in whatever order the store
// releases them; the limit is shared as when they run one after another.
TEST_F(LimiterAsyncTest, SuspendedChecksCompleteInTheOrderReleased) {
  Build(YamlFor("fixed_window"));
  store_.HoldAll();
  const CheckRequest request = MakeRequest("d", {{{"k", "a"}}});
  constexpr int kChecks = 4;
  std::vector<CheckResponse> responses(kChecks);
  std::vector<Delivered> delivered(kChecks);
  for (int i = 0; i < kChecks; ++i) {
    StartCheck(request, responses[i], delivered[i], loop_);
  }
  ASSERT_EQ(store_.held(), static_cast<size_t>(kChecks));
  // The newest first: it is decided first and takes the first of the three hits.
  ASSERT_TRUE(store_.Release(kChecks - 1));
  RunLoop(loop_);
  EXPECT_EQ(delivered[kChecks - 1].calls, 1);
  EXPECT_EQ(responses[kChecks - 1].descriptors[0].limits[0].decision.remaining, 2u);
  for (int i = 0; i < kChecks - 1; ++i) {
    EXPECT_EQ(delivered[i].calls, 0) << i;
  }
  ReleaseEverything();
  std::vector<Code> codes;
  for (int i = 0; i < kChecks; ++i) {
    EXPECT_EQ(delivered[i].calls, 1) << i;
    codes.push_back(responses[i].overall);
  }
  EXPECT_EQ(codes, (std::vector<Code>{Code::kOk, Code::kOk, Code::kOverLimit, Code::kOk}));
}

// A concurrency slot taken through CheckAsync is freed through ReleaseAsync, each held by the
// store until released: the slot stays taken until the release is answered, and a lease frees
// its slot once.
TEST_F(LimiterAsyncTest, LeaseTakenByCheckAsyncIsFreedByReleaseAsync) {
  Build(
      "domain: d\ndescriptors:\n"
      "  - {key: job, rate_limit: {unit: minute, requests_per_unit: 1, algorithm: "
      "concurrency}}\n"
      "  - {key: user, rate_limit: {unit: minute, requests_per_unit: 100}}\n");
  store_.HoldAll();
  const CheckRequest request = MakeRequest("d", {{{"job", "j"}}, {{"user", "u"}}});
  auto check = [&]() {
    CheckResponse response;
    Delivered delivered;
    StartCheck(request, response, delivered, loop_);
    EXPECT_EQ(delivered.calls, 0);
    ReleaseEverything();
    EXPECT_EQ(delivered.calls, 1);
    EXPECT_TRUE(delivered.status.ok()) << delivered.status;
    return response;
  };
  auto release = [&](int64_t lease) {
    Delivered delivered;
    limiter_->ReleaseAsync(request, lease, loop_, [&](absl::Status status) {
      delivered.status = std::move(status);
      ++delivered.calls;
      delivered.on_loop = loop_.get_executor().running_in_this_thread();
    });
    EXPECT_EQ(delivered.calls, 0) << "answered while held";
    EXPECT_EQ(store_.held(), 1u);
    ReleaseEverything();
    EXPECT_EQ(delivered.calls, 1);
    EXPECT_TRUE(delivered.on_loop);
    return delivered.status;
  };

  const CheckResponse first = check();
  ASSERT_EQ(first.overall, Code::kOk);
  ASSERT_NE(first.lease, 0);
  const CheckResponse refused = check();
  EXPECT_EQ(refused.overall, Code::kOverLimit);
  EXPECT_EQ(refused.lease, 0) << "a refused check holds no slots";

  // While the release is held, the slot is still taken (a synchronous check sees it).
  Delivered held_release;
  limiter_->ReleaseAsync(request, first.lease, loop_, [&](absl::Status status) {
    held_release.status = std::move(status);
    ++held_release.calls;
  });
  ASSERT_EQ(store_.held(), 1u);
  EXPECT_EQ(testing::CheckOk(*limiter_, request).overall, Code::kOverLimit);
  ReleaseEverything();
  EXPECT_EQ(held_release.calls, 1);
  EXPECT_TRUE(held_release.status.ok()) << held_release.status;

  const CheckResponse second = check();
  EXPECT_EQ(second.overall, Code::kOk) << "the release freed the slot";
  ASSERT_NE(second.lease, 0);
  EXPECT_NE(second.lease, first.lease);
  EXPECT_EQ(release(first.lease).code(), absl::StatusCode::kFailedPrecondition)
      << "a lease frees its slot once";
  EXPECT_EQ(check().overall, Code::kOverLimit) << "the replayed release freed nothing";
  EXPECT_TRUE(release(second.lease).ok());
  EXPECT_EQ(check().overall, Code::kOk);
}

// A release that cannot be planned (no concurrency limit matches) fails inline, asking no store.
TEST_F(LimiterAsyncTest, ReleaseWithoutConcurrencyLimitFailsInline) {
  Build(YamlFor("fixed_window"));
  store_.HoldAll();
  Delivered delivered;
  limiter_->ReleaseAsync(MakeRequest("d", {{{"k", "a"}}}), 42, loop_, [&](absl::Status status) {
    delivered.status = std::move(status);
    ++delivered.calls;
  });
  EXPECT_EQ(delivered.calls, 1);
  EXPECT_EQ(delivered.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_.async_applies(), 0);
}

// A limit whose owner cannot be asked and whose failure mode is closed refuses as unavailable;
// that refusal is neither cached (the over-limit fast path) nor the start of a block: once the
// owner answers again, the next check passes.
TEST_F(LimiterAsyncTest, ClosedFailureModeRefusalIsNotCachedNorBlocked) {
  Build(
      "domain: d\ndescriptors:\n"
      "  - key: k\n"
      "    rate_limit: {unit: minute, requests_per_unit: 5, failure_mode: closed, "
      "block_duration: 10m}\n"
      "  - key: o\n"
      "    rate_limit: {unit: minute, requests_per_unit: 5, failure_mode: open}\n");
  store_.HoldAll();
  store_.SetUnavailable(true);
  const CheckRequest closed = MakeRequest("d", {{{"k", "a"}}});
  const CheckRequest open = MakeRequest("d", {{{"o", "a"}}});
  for (int i = 0; i < 3; ++i) {
    CheckResponse response;
    Delivered delivered;
    StartCheck(closed, response, delivered, loop_);
    ReleaseEverything();
    ASSERT_EQ(delivered.calls, 1);
    EXPECT_EQ(response.overall, Code::kOverLimit);
    const Decision& d = response.descriptors[0].limits[0].decision;
    EXPECT_FALSE(d.allowed);
    EXPECT_TRUE(d.unavailable);
    EXPECT_EQ(d.retry_after_ns, HeldStore::kClosedRetryAfterNs) << "no block lengthened it";

    CheckResponse passed;
    Delivered passed_delivered;
    StartCheck(open, passed, passed_delivered, loop_);
    ReleaseEverything();
    EXPECT_EQ(passed.overall, Code::kOk);
  }
  EXPECT_EQ(limiter_->GetStats().fast_refusals, 0u);
  store_.SetUnavailable(false);
  CheckResponse response;
  Delivered delivered;
  StartCheck(closed, response, delivered, loop_);
  ReleaseEverything();
  EXPECT_EQ(response.overall, Code::kOk);
  EXPECT_EQ(response.descriptors[0].limits[0].decision.remaining, 4u);
}

}  // namespace
}  // namespace floodgate::limiter
