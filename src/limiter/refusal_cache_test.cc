#include "src/limiter/refusal_cache.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace floodgate::limiter {
namespace {

TEST(RefusalCacheTest, RemembersARefusalUntilItsTime) {
  RefusalCache cache(1024);
  EXPECT_EQ(cache.RefusedUntil(7, 100), 0);
  cache.Refuse(7, 500, cache.generation());
  EXPECT_EQ(cache.RefusedUntil(7, 100), 500);
  EXPECT_EQ(cache.RefusedUntil(7, 499), 500);
  EXPECT_EQ(cache.RefusedUntil(7, 500), 0);  // may pass again at `until`
  EXPECT_EQ(cache.RefusedUntil(8, 100), 0);  // another key
}

TEST(RefusalCacheTest, ClearForgetsEverything) {
  RefusalCache cache(64);
  const uint32_t before = cache.generation();
  cache.Refuse(1, 1000, before);
  cache.Refuse(2, 1000, before);
  cache.Clear();
  EXPECT_EQ(cache.RefusedUntil(1, 0), 0);
  EXPECT_EQ(cache.RefusedUntil(2, 0), 0);
  // A decision made before the Clear (under the old config) is not cached after it either.
  cache.Refuse(3, 1000, before);
  EXPECT_EQ(cache.RefusedUntil(3, 0), 0);
  cache.Refuse(1, 1000, cache.generation());
  EXPECT_EQ(cache.RefusedUntil(1, 0), 1000);
}

TEST(RefusalCacheTest, AKeyInTheSameSlotReplacesTheOldOne) {
  RefusalCache cache(64);
  // Find two keys that share a slot.
  uint64_t a = 1;
  uint64_t b = 2;
  auto index = [](uint64_t k) { return ((k * 0x9E3779B97F4A7C15ULL) >> 32) & 63; };
  while (index(b) != index(a)) {
    ++b;
  }
  cache.Refuse(a, 1000, cache.generation());
  cache.Refuse(b, 2000, cache.generation());
  EXPECT_EQ(cache.RefusedUntil(a, 0), 0);
  EXPECT_EQ(cache.RefusedUntil(b, 0), 2000);
}

TEST(RefusalCacheTest, NeverReturnsAnotherKeysEntryUnderConcurrentWrites) {
  // Writers store until == key * 10 for their keys; readers must only ever see that pairing.
  RefusalCache cache(64);
  std::atomic<bool> stop{false};
  std::atomic<int> torn{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      for (uint64_t i = 0; !stop.load(); ++i) {
        const uint64_t key = 1 + (i * 2 + w) % 500;
        cache.Refuse(key, static_cast<int64_t>(key * 10), cache.generation());
      }
    });
  }
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&] {
      for (int n = 0; n < 2'000'000; ++n) {
        const uint64_t key = 1 + n % 500;
        const int64_t until = cache.RefusedUntil(key, 0);
        if (until != 0 && until != static_cast<int64_t>(key * 10)) {
          torn.fetch_add(1);
        }
      }
    });
  }
  threads[2].join();
  threads[3].join();
  stop = true;
  threads[0].join();
  threads[1].join();
  EXPECT_EQ(torn.load(), 0);
}

}  // namespace
}  // namespace floodgate::limiter
