// Many threads on one key never admit more than the limit, and a request under two limits is
// atomic under contention.

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "src/limiter/limiter.h"
#include "testing/fake_clock.h"
#include "testing/limiter_helpers.h"

namespace floodgate::limiter {
namespace {

using testing::MakeConfig;

struct Params {
  const char* algorithm;
  uint64_t expected;
};

class LimiterConcurrencyTest : public ::testing::TestWithParam<Params> {};

TEST_P(LimiterConcurrencyTest, ManyThreadsOneKeyNeverExceedLimit) {
  std::string yaml = std::string(R"(
domain: d
descriptors:
  - key: k
    rate_limits:
      - {unit: hour, requests_per_unit: 1000, algorithm: )") +
                     GetParam().algorithm + R"(}
      - {unit: day, requests_per_unit: 700}
)";
  testing::FakeClock clock;  // frozen: nothing refills during the run
  auto store = *NewShardedStore(StoreOptions{});
  LimiterOptions options;
  options.clock = &clock;
  Limiter limiter(store.get(), KeyHasher::Random(), MakeConfig(yaml.c_str()), options);

  constexpr int kThreads = 8;
  constexpr int kPerThread = 2000;
  std::atomic<uint64_t> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      CheckRequest request;
      request.domain = "d";
      request.descriptors.push_back({{{"k", "hot"}}, std::nullopt, std::nullopt});
      for (int i = 0; i < kPerThread; ++i) {
        auto r = limiter.Check(request);
        ASSERT_TRUE(r.ok());
        if (r->overall == Code::kOk) {
          admitted.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(admitted.load(), GetParam().expected);

  // Atomicity: the day limit (700) refused the rest, so the hour limit consumed exactly 700.
  CheckRequest read;
  read.domain = "d";
  read.hits_addend = 0;
  read.descriptors.push_back({{{"k", "hot"}}, std::nullopt, 0});
  auto r = limiter.Check(read);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->descriptors[0].limits.size(), 2u);
  EXPECT_EQ(r->descriptors[0].limits[0].decision.remaining, 1000u - GetParam().expected);
  EXPECT_EQ(r->descriptors[0].limits[1].decision.remaining, 0u);
}

// Threads acquire concurrency slots, release each lease, then replay the release and try a
// made-up token: every replay and forgery frees nothing, so slots held by the other threads are
// never freed early and at most `limit` are ever held; at the end every slot is free.
TEST(LimiterLeaseTest, ReplayedAndForgedReleasesNeverFreeOtherThreadsSlots) {
  const char* yaml = R"(
domain: d
descriptors:
  - key: k
    rate_limit: {unit: hour, algorithm: concurrency, requests_per_unit: 4}
)";
  testing::FakeClock clock;  // frozen: no slot ages out during the run
  auto store = *NewShardedStore(StoreOptions{});
  LimiterOptions options;
  options.clock = &clock;
  Limiter limiter(store.get(), KeyHasher::Random(), MakeConfig(yaml), options);
  CheckRequest request;
  request.domain = "d";
  request.descriptors.push_back({{{"k", "hot"}}, std::nullopt, std::nullopt});

  constexpr int kThreads = 8;
  constexpr int kPerThread = 2000;
  std::atomic<int> holding{0};
  std::atomic<int> most{0};
  std::atomic<int> wrongly_freed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto r = limiter.Check(request);
        ASSERT_TRUE(r.ok());
        if (r->overall != Code::kOk) {
          continue;
        }
        const int now_holding = holding.fetch_add(1) + 1;
        int seen = most.load();
        while (now_holding > seen && !most.compare_exchange_weak(seen, now_holding)) {
        }
        holding.fetch_sub(1);  // before the release: the slot may be reused right after it
        ASSERT_TRUE(limiter.Release(request, r->lease).ok());
        wrongly_freed += limiter.Release(request, r->lease).ok() ? 1 : 0;
        wrongly_freed += limiter.Release(request, (r->lease + t + 1) & 0x7fffffffffffffff).ok();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrongly_freed.load(), 0);
  EXPECT_LE(most.load(), 4);
  CheckRequest read = request;
  read.hits_addend = 0;
  read.descriptors[0].hits_addend = 0;
  auto r = limiter.Check(read);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->descriptors[0].limits[0].decision.remaining, 4u) << "every slot released";
}

INSTANTIATE_TEST_SUITE_P(Algorithms, LimiterConcurrencyTest,
                         ::testing::Values(Params{"fixed_window", 700},
                                           Params{"sliding_window", 700},
                                           Params{"token_bucket", 700},
                                           Params{"leaky_bucket", 700}),
                         [](const auto& info) { return std::string(info.param.algorithm); });

}  // namespace
}  // namespace floodgate::limiter
