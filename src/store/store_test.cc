#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/types/span.h"
#include "floodgate/decision.h"
#include "floodgate/limit.h"
#include "floodgate/store.h"
#include "src/core/algorithms.h"
#include "src/core/leases.h"
#include "src/store/state_table.h"

// Counts heap allocations (plain operator new, which is what containers use), to check that
// small transactions allocate nothing. GCC cannot see that new and delete are both replaced.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
static std::atomic<uint64_t> g_allocations{0};

void* operator new(size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  void* p = std::malloc(size == 0 ? 1 : size);
  if (p == nullptr) {
    std::abort();  // out of memory in a test
  }
  return p;
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace floodgate {
namespace {

using core::KeyState;

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kT0 = 1'000'000 * kSecond;  // fake time: an arbitrary, window-aligned instant

std::unique_ptr<LocalStore> MakeStore(StoreOptions options = {}) {
  absl::StatusOr<std::unique_ptr<LocalStore>> store = NewShardedStore(options);
  EXPECT_TRUE(store.ok()) << store.status();
  return *std::move(store);
}

LimitSpec Spec(Algorithm algorithm, uint64_t requests, int64_t period_ns, uint64_t burst = 0) {
  LimitSpec spec;
  spec.algorithm = algorithm;
  spec.requests_per_period = requests;
  spec.period_ns = period_ns;
  spec.burst = burst;
  return spec;
}

StoreOp Check(uint64_t key, const LimitSpec& spec, uint64_t hits = 1, bool shadow = false) {
  StoreOp op;
  op.key_hash = key;
  op.spec = spec;
  op.hits = hits;
  op.shadow = shadow;
  return op;
}

// Acquires `hits` concurrency slots under lease `token`.
StoreOp Acquire(uint64_t key, const LimitSpec& spec, uint64_t token, uint64_t hits = 1) {
  StoreOp op = Check(key, spec, hits);
  op.lease = token;
  return op;
}

// Releases the slots acquired under lease `token`.
StoreOp ReleaseOp(uint64_t key, const LimitSpec& spec, uint64_t token) {
  StoreOp op = Check(key, spec, 1);
  op.kind = StoreOp::Kind::kRelease;
  op.lease = token;
  return op;
}

Decision ApplyOne(Store& store, const StoreOp& op, int64_t now_ns) {
  Decision d;
  store.Apply({&op, 1}, now_ns, {&d, 1});
  return d;
}

// Reads the key (hits == 0) and returns the remaining capacity.
uint64_t Remaining(Store& store, uint64_t key, const LimitSpec& spec, int64_t now_ns) {
  return ApplyOne(store, Check(key, spec, 0), now_ns).remaining;
}

void ExpectSameDecision(const Decision& a, const Decision& b, const std::string& where) {
  EXPECT_EQ(a.allowed, b.allowed) << where;
  EXPECT_EQ(a.limit, b.limit) << where;
  EXPECT_EQ(a.remaining, b.remaining) << where;
  EXPECT_EQ(a.retry_after_ns, b.retry_after_ns) << where;
  EXPECT_EQ(a.reset_after_ns, b.reset_after_ns) << where;
  EXPECT_EQ(a.delay_ns, b.delay_ns) << where;
}

// Returns `count` key hashes whose shards (among 2^shard_bits) are pairwise distinct.
std::vector<uint64_t> KeysOnDistinctShards(int shard_bits, size_t count) {
  std::vector<uint64_t> keys;
  std::vector<bool> used(size_t{1} << shard_bits);
  for (uint64_t k = 1; keys.size() < count; ++k) {
    const size_t shard = store::ShardOfMixed(store::MixKey(k), shard_bits);
    if (!used[shard]) {
      used[shard] = true;
      keys.push_back(k);
    }
  }
  return keys;
}

const Algorithm kAllAlgorithms[] = {Algorithm::kFixedWindow, Algorithm::kSlidingWindow,
                                    Algorithm::kTokenBucket, Algorithm::kLeakyBucket,
                                    Algorithm::kConcurrency};

// ---------------------------------------------------------------------------------------------

class PerAlgorithmTest : public testing::TestWithParam<Algorithm> {};

TEST_P(PerAlgorithmTest, DecisionsMatchTheAlgorithmThenRefuse) {
  auto store = MakeStore();
  const LimitSpec spec = Spec(GetParam(), 5, kSecond);
  KeyState state;  // the algorithm run by hand, as the store should run it
  for (int i = 0; i < 7; ++i) {
    const core::Outcome expected = core::Decide(spec, state, kT0, 1);
    const Decision got = ApplyOne(*store, Check(42, spec), kT0);
    ExpectSameDecision(got, expected.decision, "hit " + std::to_string(i));
    EXPECT_EQ(got.allowed, i < 5) << "hit " << i;
    if (expected.decision.allowed) {
      state = expected.next;
    }
  }
  EXPECT_EQ(store->GetStats().keys, 1u);
  // Much later the key reads as fresh, whatever the algorithm.
  const int64_t later = kT0 + 10 * kSecond;
  EXPECT_EQ(Remaining(*store, 42, spec, later), 5u);
  EXPECT_TRUE(ApplyOne(*store, Check(42, spec, 5), later).allowed);
}

TEST_P(PerAlgorithmTest, IdleKeysAreReclaimed) {
  auto store = MakeStore({.shards = 4});
  const LimitSpec spec = Spec(GetParam(), 100, kSecond);
  constexpr uint64_t kKeys = 10000;
  for (uint64_t k = 1; k <= kKeys; ++k) {
    ASSERT_TRUE(ApplyOne(*store, Check(k, spec), kT0 + static_cast<int64_t>(k)).allowed);
  }
  StoreStats stats = store->GetStats();
  EXPECT_EQ(stats.keys, kKeys);
  EXPECT_GT(stats.bytes, 0u);
  // Still live one nanosecond in: a full sweep keeps everything.
  store->ReclaimExpired(kT0 + kKeys + 1);
  EXPECT_EQ(store->GetStats().keys, kKeys);

  store->ReclaimExpired(kT0 + 10 * kSecond);
  stats = store->GetStats();
  EXPECT_EQ(stats.keys, 0u);
  EXPECT_EQ(stats.bytes, 0u);  // empty tables are freed: idle keys cost nothing
  EXPECT_EQ(stats.reclaimed, kKeys);
}

INSTANTIATE_TEST_SUITE_P(AllAlgorithms, PerAlgorithmTest, testing::ValuesIn(kAllAlgorithms),
                         [](const testing::TestParamInfo<Algorithm>& info) {
                           return std::string(AlgorithmName(info.param));
                         });

// ---------------------------------------------------------------------------------------------

TEST(StoreTest, ConcurrencyAcquireAndRelease) {
  auto store = MakeStore();
  const LimitSpec spec = Spec(Algorithm::kConcurrency, 3, 30 * kSecond);
  EXPECT_TRUE(ApplyOne(*store, Acquire(7, spec, /*token=*/11), kT0).allowed);
  EXPECT_TRUE(ApplyOne(*store, Acquire(7, spec, /*token=*/12, 2), kT0).allowed);
  EXPECT_FALSE(ApplyOne(*store, Acquire(7, spec, /*token=*/13), kT0).allowed);
  const Decision released = ApplyOne(*store, ReleaseOp(7, spec, 11), kT0 + 1);
  EXPECT_TRUE(released.allowed);
  EXPECT_EQ(released.remaining, 1u);
  EXPECT_TRUE(ApplyOne(*store, Acquire(7, spec, /*token=*/14), kT0 + 2).allowed);
  // Releasing everything makes the state fresh: the entry and its leases are dropped at once.
  EXPECT_TRUE(ApplyOne(*store, ReleaseOp(7, spec, 14), kT0 + 3).allowed);
  EXPECT_EQ(store->GetStats().keys, 1u);
  const Decision last = ApplyOne(*store, ReleaseOp(7, spec, 12), kT0 + 3);
  EXPECT_TRUE(last.allowed);
  EXPECT_EQ(last.remaining, 3u) << "lease 12 held two slots: both freed";
  const StoreStats stats = store->GetStats();
  EXPECT_EQ(stats.keys, 0u);
  EXPECT_EQ(stats.reclaimed, 1u);
}

// Issue 11: a release used to free a slot of whoever held one, for any token, as often as it
// was sent. Now only a live lease of the key frees anything, and only its own slots, once.
TEST(StoreTest, ReleaseFreesOnlyItsOwnLeaseOnce) {
  auto store = MakeStore();
  const int64_t period = 30 * kSecond;
  const LimitSpec spec = Spec(Algorithm::kConcurrency, 3, period);
  ASSERT_TRUE(ApplyOne(*store, Acquire(7, spec, /*token=*/21, 2), kT0).allowed);
  ASSERT_TRUE(ApplyOne(*store, Acquire(7, spec, /*token=*/22), kT0).allowed);
  // Forged: a token nobody was given, and the old kind of token (the acquire's time).
  for (uint64_t forged : {uint64_t{23}, static_cast<uint64_t>(kT0), uint64_t{0}}) {
    const Decision d = ApplyOne(*store, ReleaseOp(7, spec, forged), kT0 + 1);
    EXPECT_FALSE(d.allowed) << forged;
    EXPECT_EQ(d.remaining, 0u) << "nothing freed by " << forged;
  }
  // Another key's token does not work here either.
  ASSERT_TRUE(ApplyOne(*store, Acquire(8, spec, /*token=*/31), kT0).allowed);
  EXPECT_FALSE(ApplyOne(*store, ReleaseOp(7, spec, 31), kT0 + 1).allowed);
  // The real lease frees exactly its two slots; replayed, it frees nothing.
  Decision d = ApplyOne(*store, ReleaseOp(7, spec, 21), kT0 + 2);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, 2u);
  d = ApplyOne(*store, ReleaseOp(7, spec, 21), kT0 + 3);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.remaining, 2u) << "lease 22 still holds its slot";
  // Two releases of one lease in one transaction free it once.
  ASSERT_TRUE(ApplyOne(*store, Acquire(7, spec, /*token=*/24), kT0 + 4).allowed);
  const StoreOp twice[] = {ReleaseOp(7, spec, 24), ReleaseOp(7, spec, 24)};
  Decision ds[2];
  EXPECT_TRUE(store->Apply(twice, kT0 + 5, ds));
  EXPECT_TRUE(ds[0].allowed);
  EXPECT_FALSE(ds[1].allowed);
  EXPECT_EQ(ds[1].remaining, 2u);
  // Expired: lease 22's slot aged out at the end of the next epoch (kT0 is an epoch start);
  // a new holder's slot is not paid for by the late release.
  ASSERT_TRUE(ApplyOne(*store, Acquire(7, spec, /*token=*/25), kT0 + 2 * period).allowed);
  d = ApplyOne(*store, ReleaseOp(7, spec, 22), kT0 + 2 * period + 1);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.remaining, 2u);
  EXPECT_TRUE(ApplyOne(*store, ReleaseOp(7, spec, 25), kT0 + 2 * period + 2).allowed);
}

TEST(StoreTest, LeaseBooksStayWithinTheLimitAndGoWithTheirKeys) {
  auto store = MakeStore();
  const int64_t period = 10 * kSecond;
  const LimitSpec spec = Spec(Algorithm::kConcurrency, 4, period);
  const uint64_t empty_bytes = store->GetStats().bytes;
  // Churn: many acquires and releases, and leaks, on one key.
  uint64_t token = 1;
  for (int i = 0; i < 1000; ++i) {
    const int64_t now = kT0 + i * (kSecond / 10);
    const Decision d = ApplyOne(*store, Acquire(7, spec, token), now);
    if (d.allowed && i % 7 != 0) {
      EXPECT_TRUE(ApplyOne(*store, ReleaseOp(7, spec, token), now + 1).allowed);
    }
    ++token;
  }
  EXPECT_GT(store->GetStats().bytes, empty_bytes) << "leaked leases are held";
  // Once every slot has aged out the key and its book are gone.
  store->ReclaimExpired(kT0 + 1000 * (kSecond / 10) + 2 * period);
  EXPECT_EQ(store->GetStats().keys, 0u);
  EXPECT_EQ(store->GetStats().bytes, empty_bytes);
}

TEST(StoreTest, ReadsDoNotStoreAnything) {
  auto store = MakeStore();
  for (Algorithm a : kAllAlgorithms) {
    const LimitSpec spec = Spec(a, 10, kSecond);
    EXPECT_EQ(Remaining(*store, 99, spec, kT0), 10u);
  }
  EXPECT_EQ(store->GetStats().keys, 0u);
}

TEST(StoreTest, ForEachLiveVisitsEveryLiveStateOnceWithItsKeyHash) {
  auto store = MakeStore();
  const LimitSpec short_window = Spec(Algorithm::kFixedWindow, 10, kSecond);
  const LimitSpec long_window = Spec(Algorithm::kFixedWindow, 10, 60 * kSecond);
  std::map<uint64_t, StateRecord> written;
  for (uint64_t key = 1; key <= 1000; ++key) {
    const uint64_t hash = key * 0x100000001B3ULL;  // spread over the shards, top bits too
    ApplyOne(*store, Check(hash, key % 2 == 0 ? long_window : short_window, key % 7 + 1), kT0);
    StateRecord held;
    ASSERT_TRUE(store->GetState(hash, kT0, &held));
    written[hash] = held;
  }
  // At kT0 + 1 s the short windows are over: only the 500 long ones are live.
  std::map<uint64_t, StateRecord> seen;
  store->ForEachLive(kT0 + kSecond, [&](const StateRecord& record) {
    EXPECT_TRUE(seen.emplace(record.key_hash, record).second) << "twice: " << record.key_hash;
  });
  ASSERT_EQ(seen.size(), 500u);
  for (const auto& [hash, record] : seen) {
    ASSERT_TRUE(written.count(hash)) << "not a key we wrote: " << hash;
    EXPECT_EQ(record.expiry_ns, written[hash].expiry_ns);
    EXPECT_EQ(record.data, written[hash].data);
  }
}

TEST(StoreTest, MultiOpAcrossShardsIsAllOrNothing) {
  auto store = MakeStore({.shards = 16});
  const std::vector<uint64_t> keys = KeysOnDistinctShards(4, 3);
  const LimitSpec roomy = Spec(Algorithm::kFixedWindow, 10, 60 * kSecond);
  const LimitSpec tight = Spec(Algorithm::kFixedWindow, 1, 60 * kSecond);
  ASSERT_TRUE(ApplyOne(*store, Check(keys[2], tight), kT0).allowed);  // tight is now full

  const StoreOp ops[] = {Check(keys[0], roomy, 2), Check(keys[1], roomy, 3), Check(keys[2], tight)};
  Decision d[3];
  EXPECT_FALSE(store->Apply(ops, kT0, absl::MakeSpan(d)));
  // The ops that would have passed say so, but report nothing consumed.
  EXPECT_TRUE(d[0].allowed);
  EXPECT_EQ(d[0].remaining, 10u);
  EXPECT_TRUE(d[1].allowed);
  EXPECT_EQ(d[1].remaining, 10u);
  EXPECT_EQ(d[0].retry_after_ns, 0);
  EXPECT_FALSE(d[2].allowed);
  EXPECT_GT(d[2].retry_after_ns, 0);
  EXPECT_EQ(Remaining(*store, keys[0], roomy, kT0), 10u);
  EXPECT_EQ(Remaining(*store, keys[1], roomy, kT0), 10u);

  // Without the tight limit both are consumed, atomically.
  EXPECT_TRUE(store->Apply(absl::MakeConstSpan(ops, 2), kT0, absl::MakeSpan(d, 2)));
  EXPECT_EQ(d[0].remaining, 8u);
  EXPECT_EQ(d[1].remaining, 7u);
  EXPECT_EQ(Remaining(*store, keys[0], roomy, kT0), 8u);
  EXPECT_EQ(Remaining(*store, keys[1], roomy, kT0), 7u);
}

TEST(StoreTest, SameKeyTwiceSeesTheTentativeState) {
  auto store = MakeStore();
  const LimitSpec spec = Spec(Algorithm::kFixedWindow, 5, 60 * kSecond);
  {
    const StoreOp ops[] = {Check(1, spec, 2), Check(1, spec, 2)};
    Decision d[2];
    EXPECT_TRUE(store->Apply(ops, kT0, absl::MakeSpan(d)));
    EXPECT_EQ(d[0].remaining, 3u);
    EXPECT_EQ(d[1].remaining, 1u);
    EXPECT_EQ(Remaining(*store, 1, spec, kT0), 1u);
  }
  {
    // Each op alone would fit (1 left), together they do not: nothing is consumed.
    const StoreOp ops[] = {Check(1, spec, 1), Check(2, spec, 1), Check(1, spec, 1)};
    Decision d[3];
    EXPECT_FALSE(store->Apply(ops, kT0, absl::MakeSpan(d)));
    EXPECT_TRUE(d[0].allowed);
    EXPECT_EQ(d[0].remaining, 1u);
    EXPECT_TRUE(d[1].allowed);
    EXPECT_EQ(d[1].remaining, 5u);
    EXPECT_FALSE(d[2].allowed);
    EXPECT_EQ(Remaining(*store, 1, spec, kT0), 1u);
    EXPECT_EQ(store->GetStats().keys, 1u);  // key 2 was never stored
  }
}

TEST(StoreTest, ShadowOpsNeitherAbortNorConsumeWhenRefused) {
  auto store = MakeStore();
  const LimitSpec full = Spec(Algorithm::kFixedWindow, 1, 60 * kSecond);
  const LimitSpec roomy = Spec(Algorithm::kFixedWindow, 10, 60 * kSecond);
  ASSERT_TRUE(ApplyOne(*store, Check(1, full), kT0).allowed);
  {
    // A refusing shadow op does not stop the real one.
    const StoreOp ops[] = {Check(1, full, 1, /*shadow=*/true), Check(2, roomy)};
    Decision d[2];
    EXPECT_TRUE(store->Apply(ops, kT0, absl::MakeSpan(d)));
    EXPECT_FALSE(d[0].allowed);
    EXPECT_TRUE(d[1].allowed);
    EXPECT_EQ(Remaining(*store, 2, roomy, kT0), 9u);
    EXPECT_EQ(Remaining(*store, 1, full, kT0), 0u);
  }
  {
    // A passing shadow op is consumed with the transaction...
    const StoreOp ops[] = {Check(3, roomy, 1, /*shadow=*/true), Check(2, roomy)};
    Decision d[2];
    EXPECT_TRUE(store->Apply(ops, kT0, absl::MakeSpan(d)));
    EXPECT_EQ(Remaining(*store, 3, roomy, kT0), 9u);
  }
  {
    // ...and not when a real op refuses.
    const StoreOp ops[] = {Check(3, roomy, 1, /*shadow=*/true), Check(1, full)};
    Decision d[2];
    EXPECT_FALSE(store->Apply(ops, kT0, absl::MakeSpan(d)));
    EXPECT_TRUE(d[0].allowed);
    EXPECT_EQ(d[0].remaining, 9u);
    EXPECT_EQ(Remaining(*store, 3, roomy, kT0), 9u);
  }
  // A lone refusing shadow op: the transaction counts as committed.
  const StoreOp shadow = Check(1, full, 1, /*shadow=*/true);
  Decision d;
  EXPECT_TRUE(store->Apply({&shadow, 1}, kT0, {&d, 1}));
  EXPECT_FALSE(d.allowed);
}

TEST(StoreTest, LargeTransactionsUseTheSameRules) {
  // 300 keys over 64 shards: the transaction holds every shard lock at once (more locks than
  // absl's deadlock detector tracks per thread, which must not upset it).
  auto store = MakeStore({.shards = 64});
  const LimitSpec spec = Spec(Algorithm::kFixedWindow, 3, 60 * kSecond);
  std::vector<StoreOp> ops;
  for (uint64_t k = 1; k <= 300; ++k) {
    ops.push_back(Check(k, spec));
  }
  std::vector<Decision> d(ops.size());
  for (int round = 0; round < 3; ++round) {
    EXPECT_TRUE(store->Apply(ops, kT0, absl::MakeSpan(d)));
  }
  EXPECT_EQ(store->GetStats().keys, 300u);
  ops.push_back(Check(301, spec));  // fresh, would pass; the others refuse
  d.resize(ops.size());
  EXPECT_FALSE(store->Apply(ops, kT0, absl::MakeSpan(d)));
  EXPECT_TRUE(d.back().allowed);
  EXPECT_FALSE(d.front().allowed);
  EXPECT_EQ(store->GetStats().keys, 300u);
}

TEST(StoreTest, IncrementalSweepReclaimsWithoutFullSweeps) {
  auto store = MakeStore({.shards = 1});
  const LimitSpec spec = Spec(Algorithm::kFixedWindow, 100, kSecond);
  for (uint64_t k = 1; k <= 5000; ++k) {
    ApplyOne(*store, Check(k, spec), kT0);
  }
  const uint64_t full_bytes = store->GetStats().bytes;
  // Traffic on one other key only, long after the others expired.
  const LimitSpec hot = Spec(Algorithm::kFixedWindow, 1'000'000, 3600 * kSecond);
  for (int i = 0; i < 20000; ++i) {
    ApplyOne(*store, Check(1'000'000, hot), kT0 + 2 * kSecond);
  }
  const StoreStats stats = store->GetStats();
  EXPECT_EQ(stats.keys, 1u);
  EXPECT_EQ(stats.reclaimed, 5000u);
  EXPECT_LT(stats.bytes, full_bytes / 10);  // and the table shrank
}

TEST(StoreTest, GrowthAndShrinkKeepEveryState) {
  auto store = MakeStore({.shards = 2});
  const LimitSpec short_lived = Spec(Algorithm::kFixedWindow, 100, 10 * kSecond);
  const LimitSpec long_lived = Spec(Algorithm::kFixedWindow, 100, 3600 * kSecond);
  constexpr uint64_t kKeys = 200000;
  auto spec_of = [&](uint64_t k) { return k % 20 == 0 ? long_lived : short_lived; };
  auto hits_of = [](uint64_t k) { return k % 7 + 1; };
  for (uint64_t k = 1; k <= kKeys; ++k) {
    ASSERT_TRUE(ApplyOne(*store, Check(k, spec_of(k), hits_of(k)), kT0).allowed);
  }
  StoreStats stats = store->GetStats();
  EXPECT_EQ(stats.keys, kKeys);
  EXPECT_LE(stats.bytes, 40 * kKeys) << "bytes per key " << double(stats.bytes) / kKeys;
  for (uint64_t k = 1; k <= kKeys; ++k) {
    ASSERT_EQ(Remaining(*store, k, spec_of(k), kT0), 100 - hits_of(k)) << k;
  }

  // 95% of the keys expire; the full sweep drops them and shrinks the tables.
  const int64_t later = kT0 + 20 * kSecond;
  store->ReclaimExpired(later);
  stats = store->GetStats();
  EXPECT_EQ(stats.keys, kKeys / 20);
  EXPECT_LE(stats.bytes, 24 * 3 * stats.keys);  // shrunk to ~50% load
  for (uint64_t k = 20; k <= kKeys; k += 20) {
    ASSERT_EQ(Remaining(*store, k, long_lived, later), 100 - hits_of(k)) << k;
  }
  EXPECT_EQ(Remaining(*store, 1, short_lived, later), 100u);
}

TEST(StoreTest, InitialCapacityAvoidsGrowth) {
  auto store = MakeStore({.shards = 4, .initial_capacity = 100000});
  const uint64_t bytes = store->GetStats().bytes;
  EXPECT_GE(bytes, 24u * 100000);
  const LimitSpec spec = Spec(Algorithm::kTokenBucket, 10, kSecond);
  for (uint64_t k = 1; k <= 100000; ++k) {
    ApplyOne(*store, Check(k, spec), kT0);
  }
  EXPECT_EQ(store->GetStats().bytes, bytes);
  EXPECT_LE(bytes, 40u * 100000);
}

TEST(StoreTest, MemoryCapIsNeverExceeded) {
  constexpr size_t kCap = 64 * 1024;
  auto store = MakeStore({.shards = 4, .max_memory_bytes = kCap});
  const LimitSpec spec = Spec(Algorithm::kFixedWindow, 10, 3600 * kSecond);
  for (uint64_t k = 1; k <= 50000; ++k) {
    // Fresh keys are decided as fresh whether or not they can be stored.
    ASSERT_TRUE(ApplyOne(*store, Check(k, spec), kT0).allowed);
    if (k % 97 == 0) {
      ASSERT_LE(store->GetStats().bytes, kCap) << k;
    }
  }
  const StoreStats stats = store->GetStats();
  EXPECT_LE(stats.bytes, kCap);
  // The cap is used, not wasted: the slots take all of it but the room kept for the marks.
  EXPECT_GT(stats.bytes, kCap / (24 + store::kMarkBytesPerSlot) * 24 * 9 / 10);
  EXPECT_LE(stats.keys * 24, kCap);
  EXPECT_GT(stats.evicted, 40000u);
  EXPECT_EQ(stats.refused_full, 0u);
}

TEST(StoreTest, MemoryCapEvictsTheStatesClosestToFresh) {
  constexpr size_t kCap = 24 * 1000;
  auto store = MakeStore({.shards = 1, .max_memory_bytes = kCap});
  const LimitSpec soon = Spec(Algorithm::kFixedWindow, 10, 60 * kSecond);
  const LimitSpec late = Spec(Algorithm::kFixedWindow, 10, 3600 * kSecond);
  for (uint64_t k = 1; k <= 1000; ++k) {
    ApplyOne(*store, Check(k, soon), kT0);  // fills the table; many are evicted already
  }
  for (uint64_t k = 100001; k <= 100300; ++k) {
    ApplyOne(*store, Check(k, late, 2), kT0);
  }
  // The late keys (expiring an hour out) survive: the victims were the minute-long ones.
  int kept = 0;
  for (uint64_t k = 100001; k <= 100300; ++k) {
    kept += Remaining(*store, k, late, kT0) == 8 ? 1 : 0;
  }
  EXPECT_EQ(kept, 300);
  EXPECT_LE(store->GetStats().bytes, kCap);
}

TEST(StoreTest, MemoryCapNeverEvictsKeysOverTheirLimit) {
  // A flood of fresh keys must not evict the state of keys that are over their limit: that
  // would let anyone reset their own limit by flooding.
  constexpr size_t kCap = 24 * 1000;
  auto store = MakeStore({.shards = 1, .max_memory_bytes = kCap});
  const LimitSpec spec = Spec(Algorithm::kFixedWindow, 3, 3600 * kSecond);
  for (uint64_t k = 1; k <= 50; ++k) {
    ApplyOne(*store, Check(k, spec, 3), kT0);
    ASSERT_FALSE(ApplyOne(*store, Check(k, spec), kT0).allowed);  // over the limit now
  }
  for (uint64_t k = 1000; k < 21000; ++k) {  // same window, so the same expiry: no preference
    ApplyOne(*store, Check(k, spec), kT0 + 1);
  }
  EXPECT_GT(store->GetStats().evicted, 15000u);
  EXPECT_LE(store->GetStats().bytes, kCap);
  for (uint64_t k = 1; k <= 50; ++k) {
    EXPECT_FALSE(ApplyOne(*store, Check(k, spec), kT0 + 2).allowed) << k;
  }
}

TEST(StoreTest, MemoryCapKeepsEstablishedKeysThroughAFloodOfOneHitKeys) {
  // Users hit twice within their (short) window are established; a flood of one-hit keys with
  // long windows must evict its own kind, not them, although their states expire sooner.
  constexpr size_t kCap = 24 * 1000;
  auto store = MakeStore({.shards = 1, .max_memory_bytes = kCap});
  const LimitSpec user = Spec(Algorithm::kFixedWindow, 10, kSecond);
  const LimitSpec flood = Spec(Algorithm::kFixedWindow, 10, 3600 * kSecond);
  for (uint64_t k = 1; k <= 50; ++k) {
    ApplyOne(*store, Check(k, user), kT0);
    ApplyOne(*store, Check(k, user), kT0);
  }
  for (uint64_t k = 1000; k < 21000; ++k) {
    ApplyOne(*store, Check(k, flood), kT0 + 1);
  }
  EXPECT_GT(store->GetStats().evicted, 15000u);
  for (uint64_t k = 1; k <= 50; ++k) {
    EXPECT_EQ(Remaining(*store, k, user, kT0 + 2), 8u) << k;
  }
}

TEST(StoreTest, MemoryCapKeepsAnEstablishedKeysMarkIntoItsNextWindow) {
  // Established users whose window ended come back: their first hit of the new window must be
  // as safe from a flood as the rest, or each eviction would hand them one hit back.
  constexpr size_t kCap = 28 * 1000;
  auto store = MakeStore({.shards = 1, .max_memory_bytes = kCap});
  const LimitSpec user = Spec(Algorithm::kFixedWindow, 10, kSecond);
  const LimitSpec flood = Spec(Algorithm::kFixedWindow, 10, 3600 * kSecond);
  for (uint64_t k = 1; k <= 50; ++k) {
    ApplyOne(*store, Check(k, user), kT0);
    ApplyOne(*store, Check(k, user), kT0);
  }
  // The next window: the old states are dead (and swept as the flood comes); one hit each.
  const int64_t next = kT0 + kSecond;
  for (uint64_t k = 1; k <= 50; ++k) {
    ApplyOne(*store, Check(k, user), next);
  }
  for (uint64_t k = 1000; k < 21000; ++k) {
    ApplyOne(*store, Check(k, flood), next + 1);
  }
  EXPECT_GT(store->GetStats().evicted, 15000u);
  for (uint64_t k = 1; k <= 50; ++k) {
    EXPECT_EQ(Remaining(*store, k, user, next + 2), 9u) << k;
  }
  EXPECT_LE(store->GetStats().bytes, kCap);
}

TEST(StoreTest, MemoryCapDoesNotMarkOneHitKeysOfANewWindow) {
  // Without an earlier mark, a key hit once is still the flood's kind: it may be evicted.
  constexpr size_t kCap = 28 * 1000;
  auto store = MakeStore({.shards = 1, .max_memory_bytes = kCap});
  const LimitSpec user = Spec(Algorithm::kFixedWindow, 10, kSecond);
  const LimitSpec flood = Spec(Algorithm::kFixedWindow, 10, 3600 * kSecond);
  for (uint64_t k = 1; k <= 50; ++k) {
    ApplyOne(*store, Check(k, user), kT0);  // one hit: never established
  }
  for (uint64_t k = 1; k <= 50; ++k) {
    ApplyOne(*store, Check(k, user), kT0 + kSecond);
  }
  for (uint64_t k = 1000; k < 21000; ++k) {
    ApplyOne(*store, Check(k, flood), kT0 + kSecond + 1);
  }
  int kept = 0;
  for (uint64_t k = 1; k <= 50; ++k) {
    kept += Remaining(*store, k, user, kT0 + kSecond + 2) == 9u;
  }
  EXPECT_LT(kept, 50);
}

TEST(StoreTest, MemoryCapReclaimsExpiredBeforeEvicting) {
  constexpr size_t kCap = 28 * 1000;  // 1000 slots
  auto store = MakeStore({.shards = 1, .max_memory_bytes = kCap});
  const LimitSpec spec = Spec(Algorithm::kFixedWindow, 10, kSecond);
  for (uint64_t k = 1; k <= 800; ++k) {
    ApplyOne(*store, Check(k, spec), kT0);
  }
  EXPECT_EQ(store->GetStats().evicted, 0u);
  for (uint64_t k = 1001; k <= 1800; ++k) {
    ApplyOne(*store, Check(k, spec), kT0 + 5 * kSecond);  // the first 800 have expired
  }
  const StoreStats stats = store->GetStats();
  EXPECT_EQ(stats.evicted, 0u);
  EXPECT_GE(stats.reclaimed, 800u - stats.keys + 800u - 800u);
  EXPECT_LE(stats.bytes, kCap);
}

TEST(StoreTest, MemoryCapRefusesWhenOnlyTheTransactionsKeysCouldGo) {
  // One shard of 8 slots holds at most 6 keys (85% load).
  auto store = MakeStore({.shards = 1, .max_memory_bytes = 8 * 28});
  const LimitSpec spec = Spec(Algorithm::kFixedWindow, 1, 3600 * kSecond);
  std::vector<StoreOp> ops;
  for (uint64_t k = 1; k <= 10; ++k) {
    ops.push_back(Check(k, spec));
  }
  std::vector<Decision> d(ops.size());
  // Every key is decided as fresh; the ones that do not fit are not stored.
  EXPECT_TRUE(store->Apply(ops, kT0, absl::MakeSpan(d)));
  for (const Decision& x : d) {
    EXPECT_TRUE(x.allowed);
  }
  const StoreStats stats = store->GetStats();
  EXPECT_EQ(stats.keys, 6u);
  EXPECT_EQ(stats.refused_full, 4u);
  EXPECT_EQ(stats.evicted, 0u);
  EXPECT_LE(stats.bytes, 8u * 28);
}

TEST(StoreTest, OptionsAreValidated) {
  EXPECT_EQ(NewShardedStore({.shards = (1 << 16) + 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A slot costs 24 bytes plus kMarkBytesPerSlot (4); a shard needs 8.
  EXPECT_EQ(NewShardedStore({.shards = 16, .max_memory_bytes = 16 * 28 * 8 - 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(NewShardedStore({.shards = 16, .max_memory_bytes = 16 * 28 * 8}).ok());
  EXPECT_TRUE(NewShardedStore({.shards = 3}).ok());  // rounded up to 4
  EXPECT_TRUE(NewShardedStore({}).ok());
}

TEST(StoreTest, KeyHashZeroIsAnOrdinaryKey) {
  auto store = MakeStore();
  const LimitSpec spec = Spec(Algorithm::kFixedWindow, 2, 60 * kSecond);
  EXPECT_TRUE(ApplyOne(*store, Check(0, spec), kT0).allowed);
  EXPECT_EQ(Remaining(*store, 0, spec, kT0), 1u);
  EXPECT_EQ(store->GetStats().keys, 1u);
}

TEST(StoreTest, SmallTransactionsDoNotAllocate) {
  auto store = MakeStore({.shards = 4, .initial_capacity = 1000});
  const LimitSpec spec = Spec(Algorithm::kTokenBucket, 1000, kSecond);
  StoreOp ops[8];
  for (uint64_t k = 0; k < 8; ++k) {
    ops[k] = Check(k + 1, spec);
  }
  Decision d[8];
  store->Apply(ops, kT0, absl::MakeSpan(d));  // first use: tables and mutex bookkeeping
  const uint64_t before = g_allocations.load();
  for (int i = 0; i < 100; ++i) {
    store->Apply(absl::MakeConstSpan(ops, 1), kT0, absl::MakeSpan(d, 1));
    store->Apply(ops, kT0, absl::MakeSpan(d));
  }
  EXPECT_EQ(g_allocations.load(), before);
}

TEST(StoreTest, EmptyTransactionCommits) {
  auto store = MakeStore();
  EXPECT_TRUE(store->Apply({}, kT0, {}));
}

// ---------------------------------------------------------------------------------------------
// Replication: ApplyAndCapture, MergeStates, GetState.

// Returns the state of `key` at now_ns as GetState reports it, KeyState{} when there is none.
KeyState Held(const LocalStore& store, uint64_t key, int64_t now_ns) {
  StateRecord record;
  if (!store.GetState(key, now_ns, &record)) {
    return KeyState{};
  }
  EXPECT_EQ(record.key_hash, key);
  return KeyState{.expiry_ns = record.expiry_ns, .data = record.data};
}

KeyState StateOf(const StateRecord& record) {
  return KeyState{.expiry_ns = record.expiry_ns, .data = record.data};
}

StateRecord Record(uint64_t key, const LimitSpec& spec, const KeyState& state) {
  return StateRecord{
      .key_hash = key, .spec = spec, .expiry_ns = state.expiry_ns, .data = state.data};
}

// Returns the state after `hits` on a fresh key at now_ns, as a replica elsewhere might hold it.
KeyState After(const LimitSpec& spec, uint64_t hits, int64_t now_ns) {
  return core::Decide(spec, KeyState{}, now_ns, hits).next;
}

// Returns whether `merged` admits no more than `s` at the probe times from now_ns on, for 1, 2
// and the limit's hits.
::testing::AssertionResult AdmitsNoMoreThan(const LimitSpec& spec, const KeyState& merged,
                                            const KeyState& s, int64_t now_ns) {
  for (int64_t dt : {int64_t{0}, int64_t{1}, spec.period_ns / 3, spec.period_ns - 1, spec.period_ns,
                     3 * spec.period_ns / 2, 2 * spec.period_ns}) {
    for (uint64_t hits : {uint64_t{1}, uint64_t{2}, spec.Capacity()}) {
      const int64_t t = now_ns + dt;
      if (core::Decide(spec, merged, t, hits).decision.allowed &&
          !core::Decide(spec, s, t, hits).decision.allowed) {
        return ::testing::AssertionFailure()
               << "at now+" << dt << " hits=" << hits << " {" << merged.expiry_ns << ", "
               << merged.data << "} admits, {" << s.expiry_ns << ", " << s.data << "} refuses";
      }
    }
  }
  return ::testing::AssertionSuccess();
}

TEST_P(PerAlgorithmTest, CaptureReportsTheCommittedState) {
  auto store = MakeStore();
  const LimitSpec spec = Spec(GetParam(), 5, kSecond);
  const StoreOp op = Check(7, spec, 2);
  Decision d;
  StateRecord after;
  ASSERT_TRUE(store->ApplyAndCapture({&op, 1}, kT0, {&d, 1}, {&after, 1}));
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(after.key_hash, 7u);
  EXPECT_EQ(after.spec, spec);
  EXPECT_EQ(StateOf(after), After(spec, 2, kT0));
  EXPECT_EQ(StateOf(after), Held(*store, 7, kT0));
  // Several ops, the same key twice: both report the key's final state.
  const StoreOp ops[] = {Check(7, spec, 1), Check(8, spec, 1), Check(7, spec, 1)};
  Decision ds[3];
  StateRecord afters[3];
  ASSERT_TRUE(store->ApplyAndCapture(ops, kT0, absl::MakeSpan(ds), absl::MakeSpan(afters)));
  EXPECT_EQ(StateOf(afters[0]), Held(*store, 7, kT0));
  EXPECT_EQ(StateOf(afters[2]), Held(*store, 7, kT0));
  EXPECT_EQ(StateOf(afters[1]), Held(*store, 8, kT0));
  EXPECT_EQ(StateOf(afters[0]), core::Decide(spec, After(spec, 2, kT0), kT0, 2).next);
  EXPECT_EQ(afters[1].key_hash, 8u);
  // Decisions are Apply's.
  EXPECT_EQ(ds[2].remaining, 1u);
}

TEST_P(PerAlgorithmTest, CaptureReportsTheUnchangedStateWhenRefused) {
  auto store = MakeStore();
  const LimitSpec spec = Spec(GetParam(), 3, kSecond);
  ASSERT_TRUE(ApplyOne(*store, Check(1, spec, 3), kT0).allowed);
  const KeyState full = Held(*store, 1, kT0);
  ASSERT_NE(full, KeyState{});
  // One op, refused.
  const StoreOp op = Check(1, spec, 1);
  Decision d;
  StateRecord after;
  EXPECT_FALSE(store->ApplyAndCapture({&op, 1}, kT0 + 1, {&d, 1}, {&after, 1}));
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(StateOf(after), full);
  // A transaction refused by key 1: key 2 would have passed but keeps its (fresh) state.
  const StoreOp ops[] = {Check(2, spec, 1), Check(1, spec, 1)};
  Decision ds[2];
  StateRecord afters[2];
  EXPECT_FALSE(store->ApplyAndCapture(ops, kT0 + 1, absl::MakeSpan(ds), absl::MakeSpan(afters)));
  EXPECT_TRUE(ds[0].allowed);
  EXPECT_EQ(StateOf(afters[0]), KeyState{});
  EXPECT_EQ(afters[0].key_hash, 2u);
  EXPECT_EQ(StateOf(afters[1]), full);
  EXPECT_EQ(Held(*store, 1, kT0 + 1), full);
  EXPECT_EQ(Held(*store, 2, kT0 + 1), KeyState{});
}

TEST(StoreReplicationTest, CaptureOfAFreshStateIsZero) {
  auto store = MakeStore();
  const LimitSpec spec = Spec(Algorithm::kConcurrency, 3, kSecond);
  Decision d;
  StateRecord after{.expiry_ns = 1, .data = 1};
  const StoreOp read = Check(5, spec, 0);  // a read of a missing key
  EXPECT_TRUE(store->ApplyAndCapture({&read, 1}, kT0, {&d, 1}, {&after, 1}));
  EXPECT_EQ(StateOf(after), KeyState{});
  ASSERT_TRUE(ApplyOne(*store, Acquire(5, spec, /*token=*/9), kT0).allowed);
  const StoreOp release = ReleaseOp(5, spec, 9);  // back to nothing held
  EXPECT_TRUE(store->ApplyAndCapture({&release, 1}, kT0 + 1, {&d, 1}, {&after, 1}));
  EXPECT_EQ(StateOf(after), KeyState{});
  EXPECT_EQ(store->GetStats().keys, 0u);
  // A stored state that has expired by now reads as fresh too.
  const LimitSpec window = Spec(Algorithm::kFixedWindow, 3, kSecond);
  ASSERT_TRUE(ApplyOne(*store, Check(6, window, 3), kT0).allowed);
  const StoreOp refused = Check(6, window, 4);  // more than the limit: refused, nothing written
  EXPECT_FALSE(store->ApplyAndCapture({&refused, 1}, kT0 + kSecond, {&d, 1}, {&after, 1}));
  EXPECT_EQ(StateOf(after), KeyState{});
}

TEST(StoreReplicationTest, ShortCaptureSpanChangesNothing) {
#ifdef NDEBUG
  auto store = MakeStore();
  const LimitSpec spec = Spec(Algorithm::kFixedWindow, 3, kSecond);
  const StoreOp ops[] = {Check(1, spec), Check(2, spec)};
  Decision ds[2];
  StateRecord after;
  EXPECT_FALSE(store->ApplyAndCapture(ops, kT0, absl::MakeSpan(ds), {&after, 1}));
  EXPECT_EQ(store->GetStats().keys, 0u);
#else
  GTEST_SKIP() << "a short span is a caller bug that asserts in debug builds";
#endif
}

TEST_P(PerAlgorithmTest, MergeIntoAnAbsentKeyStoresTheRecord) {
  auto store = MakeStore();
  const LimitSpec spec = Spec(GetParam(), 5, kSecond);
  const KeyState remote = After(spec, 3, kT0);
  const StateRecord record = Record(9, spec, remote);
  store->MergeStates({&record, 1}, kT0 + 1);
  EXPECT_EQ(Held(*store, 9, kT0 + 1), remote);
  EXPECT_EQ(store->GetStats().keys, 1u);
  // Decisions continue from it.
  ExpectSameDecision(ApplyOne(*store, Check(9, spec, 2), kT0 + 1),
                     core::Decide(spec, remote, kT0 + 1, 2).decision, "after merge");
  EXPECT_FALSE(ApplyOne(*store, Check(9, spec, 1), kT0 + 1).allowed);
}

TEST_P(PerAlgorithmTest, MergeIntoAPresentKeyKeepsTheLarger) {
  auto store = MakeStore();
  const LimitSpec spec = Spec(GetParam(), 10, kSecond);
  ASSERT_TRUE(ApplyOne(*store, Check(9, spec, 3), kT0).allowed);
  // A record behind the stored state changes nothing; one ahead of it replaces it.
  const StateRecord behind = Record(9, spec, After(spec, 2, kT0));
  store->MergeStates({&behind, 1}, kT0);
  EXPECT_EQ(Held(*store, 9, kT0), After(spec, 3, kT0));
  const StateRecord ahead = Record(9, spec, After(spec, 7, kT0));
  store->MergeStates({&ahead, 1}, kT0);
  EXPECT_EQ(Held(*store, 9, kT0), After(spec, 7, kT0));
  EXPECT_EQ(Remaining(*store, 9, spec, kT0), 3u);
}

TEST_P(PerAlgorithmTest, MergeNeverLowersConsumption) {
  std::mt19937_64 rng(4242 + static_cast<int>(GetParam()));
  auto store = MakeStore({.shards = 4});
  int raised = 0;
  for (uint64_t key = 1; key <= 3000; ++key) {
    const LimitSpec spec = Spec(GetParam(), 1 + rng() % 12, 1000 + rng() % 5000);
    const int64_t now = kT0 + static_cast<int64_t>(rng() % 100'000);
    ApplyOne(*store, Check(key, spec, rng() % (spec.requests_per_period + 1)), now);
    const KeyState before = Held(*store, key, now);
    // Remote: hits at a time up to two periods before or one after now (another node's clock).
    const int64_t remote_now =
        now - 2 * spec.period_ns + static_cast<int64_t>(rng() % (3 * spec.period_ns));
    const KeyState remote =
        core::Decide(spec, KeyState{}, remote_now, 1 + rng() % spec.requests_per_period).next;
    const StateRecord record = Record(key, spec, remote);
    store->MergeStates({&record, 1}, now);
    const KeyState merged = Held(*store, key, now);
    raised += merged != before ? 1 : 0;
    ASSERT_TRUE(AdmitsNoMoreThan(spec, merged, before, now)) << key;
    ASSERT_TRUE(AdmitsNoMoreThan(spec, merged, remote, now)) << key;
  }
  EXPECT_GT(raised, 300);
}

TEST(StoreReplicationTest, MergeIgnoresDeadRecordsAndReplacesDeadStates) {
  auto store = MakeStore({.shards = 1});
  const LimitSpec spec = Spec(Algorithm::kFixedWindow, 10, kSecond);
  const StateRecord dead = Record(3, spec, KeyState{.expiry_ns = kT0, .data = 4});
  store->MergeStates({&dead, 1}, kT0);
  EXPECT_EQ(store->GetStats().keys, 0u);
  const StateRecord zero = Record(3, spec, KeyState{});
  store->MergeStates({&zero, 1}, kT0);
  EXPECT_EQ(store->GetStats().keys, 0u);
  // A stored state that has expired (still in the table) reads as fresh: the record replaces it.
  ASSERT_TRUE(ApplyOne(*store, Check(3, spec, 9), kT0).allowed);
  const KeyState next_window{.expiry_ns = kT0 + 2 * kSecond, .data = 2};
  const StateRecord live = Record(3, spec, next_window);
  store->MergeStates({&live, 1}, kT0 + kSecond);
  EXPECT_EQ(Held(*store, 3, kT0 + kSecond), next_window);
  EXPECT_EQ(store->GetStats().keys, 1u);
}

// Issue 11: a release on the owner used to be undone by its replica (a merge never lowers).
// The owner's record of a release says what it held before; a replica holding nothing beyond
// that takes the lowered state, and one that saw more (an acting owner's admissions) keeps it.
TEST(StoreReplicationTest, AReleaseLowersAReplicaInStepButNotOneThatSawMore) {
  const LimitSpec spec = Spec(Algorithm::kConcurrency, 3, 30 * kSecond);
  auto owner = MakeStore({.shards = 1});
  auto in_step = MakeStore({.shards = 1});
  auto saw_more = MakeStore({.shards = 1});
  StateRecord acquired[2];
  Decision d[2];
  const StoreOp acquires[] = {Acquire(7, spec, /*token=*/21), Acquire(7, spec, /*token=*/22)};
  ASSERT_TRUE(owner->ApplyAndCapture({&acquires[0], 1}, kT0, {&d[0], 1}, {&acquired[0], 1}));
  ASSERT_TRUE(owner->ApplyAndCapture({&acquires[1], 1}, kT0, {&d[1], 1}, {&acquired[1], 1}));
  EXPECT_FALSE(acquired[1].lowered) << "an acquire never lowers";
  in_step->MergeStates(acquired, kT0);
  saw_more->MergeStates(acquired, kT0);
  ASSERT_TRUE(ApplyOne(*saw_more, Acquire(7, spec, /*token=*/31), kT0).allowed);  // acting owner

  const StoreOp release = ReleaseOp(7, spec, 21);
  StateRecord released;
  ASSERT_TRUE(owner->ApplyAndCapture({&release, 1}, kT0 + 1, {&d[0], 1}, {&released, 1}));
  ASSERT_TRUE(d[0].allowed);
  EXPECT_TRUE(released.lowered);
  EXPECT_EQ((KeyState{released.before_expiry_ns, released.before_data}), StateOf(acquired[1]));

  in_step->MergeStates({&released, 1}, kT0 + 1);
  EXPECT_EQ(Held(*in_step, 7, kT0 + 1), StateOf(released)) << "the release sticks";
  const KeyState before_merge = Held(*saw_more, 7, kT0 + 1);
  saw_more->MergeStates({&released, 1}, kT0 + 1);
  EXPECT_EQ(Held(*saw_more, 7, kT0 + 1), before_merge) << "its own admission is kept";
}

TEST(StoreReplicationTest, MergeObeysTheMemoryCap) {
  constexpr size_t kCap = 64 * 1024;
  auto store = MakeStore({.shards = 4, .max_memory_bytes = kCap});
  const LimitSpec spec = Spec(Algorithm::kFixedWindow, 10, 3600 * kSecond);
  std::vector<StateRecord> batch;
  for (uint64_t k = 1; k <= 50000; ++k) {
    batch.push_back(Record(k, spec, After(spec, 1, kT0)));
    if (batch.size() == 97) {
      store->MergeStates(batch, kT0);
      batch.clear();
      ASSERT_LE(store->GetStats().bytes, kCap) << k;
    }
  }
  store->MergeStates(batch, kT0);
  const StoreStats stats = store->GetStats();
  EXPECT_LE(stats.bytes, kCap);
  EXPECT_GT(stats.bytes, kCap / (24 + store::kMarkBytesPerSlot) * 24 * 9 / 10);
  EXPECT_GT(stats.evicted, 40000u);
}

TEST(StoreReplicationTest, GetStateOfLiveExpiredAndMissingKeys) {
  auto store = MakeStore();
  const LimitSpec spec = Spec(Algorithm::kTokenBucket, 10, kSecond);
  ASSERT_TRUE(ApplyOne(*store, Check(11, spec, 4), kT0).allowed);
  StateRecord out;
  out.spec = Spec(Algorithm::kFixedWindow, 1, 1);  // left as is
  ASSERT_TRUE(store->GetState(11, kT0 + 1, &out));
  EXPECT_EQ(out.key_hash, 11u);
  EXPECT_EQ(StateOf(out), After(spec, 4, kT0));
  EXPECT_EQ(out.spec, Spec(Algorithm::kFixedWindow, 1, 1));
  // The bucket is full again 0.4 s later: expired (still in the table), so no state.
  EXPECT_FALSE(store->GetState(11, kT0 + 400 * (kSecond / 1000), &out));
  EXPECT_TRUE(store->GetState(11, kT0 + 400 * (kSecond / 1000) - 1, &out));
  EXPECT_FALSE(store->GetState(12, kT0, &out));
  EXPECT_EQ(store->GetStats().keys, 1u);  // a read never writes
}

TEST_P(PerAlgorithmTest, ThreadsMergingAndApplyingOneKeyConsumeAtLeastEach) {
  auto store = MakeStore({.shards = 4});
  const LimitSpec spec = Spec(GetParam(), 1'000'000, 60 * kSecond);
  constexpr uint64_t kKey = 77;
  // Each thread both applies and merges, and keeps every record it merged and state it captured.
  constexpr int kThreads = 4;
  std::vector<std::vector<KeyState>> seen(kThreads);
  std::vector<uint64_t> applied(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(900 + t);
      for (int i = 0; i < 2000; ++i) {
        if (rng() % 2 == 0) {
          const StoreOp op = Check(kKey, spec, 1 + rng() % 3);
          Decision d;
          StateRecord after;
          if (store->ApplyAndCapture({&op, 1}, kT0, {&d, 1}, {&after, 1})) {
            applied[t] += op.hits;
            seen[t].push_back(StateOf(after));
          }
        } else {
          // Another replica's view: some number of hits on a fresh key.
          const StateRecord record = Record(kKey, spec, After(spec, 1 + rng() % 5000, kT0));
          store->MergeStates({&record, 1}, kT0);
          seen[t].push_back(StateOf(record));
        }
      }
    });
  }
  for (std::thread& t : threads) {
    t.join();
  }
  const KeyState final_state = Held(*store, kKey, kT0);
  uint64_t total_applied = 0;
  for (int t = 0; t < kThreads; ++t) {
    total_applied += applied[t];
    for (const KeyState& s : seen[t]) {
      ASSERT_TRUE(AdmitsNoMoreThan(spec, final_state, s, kT0));
    }
  }
  // Merges never undo applies: the final state holds at least every applied hit.
  EXPECT_LE(total_applied, spec.requests_per_period - Remaining(*store, kKey, spec, kT0));
  EXPECT_GT(total_applied, 1000u);
}

// ---------------------------------------------------------------------------------------------
// Concurrency.

TEST(StoreThreadsTest, OneHotKeyAdmitsExactlyTheLimit) {
  auto store = MakeStore();
  const LimitSpec spec = Spec(Algorithm::kFixedWindow, 1000, 60 * kSecond);
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        if (ApplyOne(*store, Check(12345, spec), kT0).allowed) {
          admitted.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  for (std::thread& t : threads) {
    t.join();
  }
  EXPECT_EQ(admitted.load(), 1000);
  EXPECT_EQ(Remaining(*store, 12345, spec, kT0), 0u);
}

TEST(StoreThreadsTest, ManyKeysTransactionsNeverExceedAndAddUp) {
  for (size_t shards : {1, 4, 16}) {
    auto store = MakeStore({.shards = shards});
    constexpr int kKeys = 32;
    constexpr uint64_t kLimit = 300;
    const LimitSpec spec = Spec(Algorithm::kFixedWindow, kLimit, 60 * kSecond);
    std::vector<std::atomic<uint64_t>> consumed(kKeys);
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937_64 rng(1000 + t);
        StoreOp ops[4];
        Decision d[4];
        for (int i = 0; i < 4000; ++i) {
          const size_t n = 1 + rng() % 4;
          for (size_t j = 0; j < n; ++j) {
            ops[j] = Check(1 + rng() % kKeys, spec, 1 + rng() % 2);
          }
          if (store->Apply(absl::MakeConstSpan(ops, n), kT0, absl::MakeSpan(d, n))) {
            for (size_t j = 0; j < n; ++j) {
              consumed[ops[j].key_hash - 1].fetch_add(ops[j].hits, std::memory_order_relaxed);
            }
          }
        }
      });
    }
    for (std::thread& t : threads) {
      t.join();
    }
    for (int k = 0; k < kKeys; ++k) {
      ASSERT_LE(consumed[k].load(), kLimit) << "key " << k + 1 << " shards " << shards;
      // Every committed hit and nothing else is in the store.
      ASSERT_EQ(Remaining(*store, k + 1, spec, kT0), kLimit - consumed[k].load())
          << "key " << k + 1 << " shards " << shards;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The store against a model that applies the contract literally (a std::map, no sharding, no
// sweeping), on random transactions.

class ModelStore {
 public:
  bool Apply(absl::Span<const StoreOp> ops, int64_t now_ns, absl::Span<Decision> decisions) {
    std::map<uint64_t, KeyState> tentative;
    std::set<std::pair<uint64_t, uint64_t>> taken;  // (key, token) released by this txn
    std::vector<std::pair<uint64_t, core::Lease>> acquired;
    bool commit = true;
    for (size_t i = 0; i < ops.size(); ++i) {
      const StoreOp& op = ops[i];
      auto it = tentative.find(op.key_hash);
      const KeyState state = it != tentative.end() ? it->second : Stored(op.key_hash, now_ns);
      KeyState next;
      if (op.kind == StoreOp::Kind::kRelease) {
        // The lease its token names, if live and not taken by an earlier op of this txn.
        const core::Lease* lease = nullptr;
        auto book = leases_.find(op.key_hash);
        if (book != leases_.end()) {
          auto found = book->second.find(op.lease);
          if (found != book->second.end() && found->second.expiry_ns > now_ns &&
              !taken.contains({op.key_hash, op.lease})) {
            lease = &found->second;
          }
        }
        next = lease != nullptr ? core::ReleaseLease(op.spec, state, now_ns, *lease) : state;
        if (lease != nullptr) {
          taken.insert({op.key_hash, op.lease});
        }
        decisions[i] = core::Decide(op.spec, next, now_ns, 0).decision;
        decisions[i].allowed = lease != nullptr;
        decisions[i].retry_after_ns = 0;
      } else {
        const core::Outcome out = core::Decide(op.spec, state, now_ns, op.hits);
        decisions[i] = out.decision;
        next = op.hits == 0 ? state : out.next;
        if (!out.decision.allowed && !op.shadow) {
          commit = false;
        }
        if (out.decision.allowed && op.hits > 0 && op.lease != 0 &&
            op.spec.algorithm == Algorithm::kConcurrency) {
          acquired.push_back(
              {op.key_hash,
               core::Lease{.token = op.lease, .expiry_ns = out.next.expiry_ns, .count = op.hits}});
        }
      }
      tentative[op.key_hash] = next;
    }
    if (commit) {
      for (const auto& [key, token] : taken) {
        leases_[key].erase(token);
      }
      for (const auto& [key, lease] : acquired) {
        core::Lease& held = leases_[key][lease.token];
        if (held.expiry_ns <= now_ns) {
          held = core::Lease{};  // an expired lease of the same token is gone (pruned)
        }
        held.token = lease.token;
        held.count += lease.count;
        held.expiry_ns = std::max(held.expiry_ns, lease.expiry_ns);
      }
      for (const auto& [key, state] : tentative) {
        if (store::IsDead(state, now_ns)) {
          states_.erase(key);
          leases_.erase(key);  // nothing is held: no lease can free anything
        } else {
          states_[key] = state;
        }
      }
    } else {
      for (size_t i = 0; i < ops.size(); ++i) {
        if (decisions[i].allowed) {
          decisions[i] =
              core::Decide(ops[i].spec, Stored(ops[i].key_hash, now_ns), now_ns, 0).decision;
          decisions[i].allowed = true;
          decisions[i].retry_after_ns = 0;
        }
      }
    }
    return commit;
  }

  // Without a memory cap the stored state after a transaction is its final state: the last
  // tentative one when committed, the unchanged one otherwise.
  bool ApplyAndCapture(absl::Span<const StoreOp> ops, int64_t now_ns,
                       absl::Span<Decision> decisions, absl::Span<StateRecord> after) {
    std::vector<KeyState> before;
    for (const StoreOp& op : ops) {
      before.push_back(Stored(op.key_hash, now_ns));
    }
    const bool commit = Apply(ops, now_ns, decisions);
    for (size_t i = 0; i < ops.size(); ++i) {
      // Lowered: a release of this transaction freed slots of this key.
      bool released = false;
      for (size_t j = 0; j < ops.size(); ++j) {
        released = released || (commit && ops[j].key_hash == ops[i].key_hash &&
                                ops[j].kind == StoreOp::Kind::kRelease && decisions[j].allowed);
      }
      const KeyState state = Stored(ops[i].key_hash, now_ns);
      after[i] = StateRecord{.key_hash = ops[i].key_hash,
                             .spec = ops[i].spec,
                             .expiry_ns = state.expiry_ns,
                             .data = state.data,
                             .lowered = released,
                             .before_expiry_ns = released ? before[i].expiry_ns : 0,
                             .before_data = released ? before[i].data : 0};
    }
    return commit;
  }

  void MergeStates(absl::Span<const StateRecord> records, int64_t now_ns) {
    for (const StateRecord& r : records) {
      const KeyState incoming{.expiry_ns = r.expiry_ns, .data = r.data};
      if (store::IsDead(incoming, now_ns) && !r.lowered) {
        continue;
      }
      const KeyState stored = Stored(r.key_hash, now_ns);
      const KeyState before{.expiry_ns = r.before_expiry_ns, .data = r.before_data};
      // A release's record replaces a copy that holds nothing beyond the releaser's `before`.
      const KeyState merged = r.lowered && core::Merge(r.spec, stored, before, now_ns) == before
                                  ? incoming
                                  : core::Merge(r.spec, stored, incoming, now_ns);
      if (store::IsDead(merged, now_ns)) {
        states_.erase(r.key_hash);
      } else {
        states_[r.key_hash] = merged;
      }
    }
  }

  // The state of `key` at now_ns, KeyState{} when missing or dead.
  KeyState Stored(uint64_t key, int64_t now_ns) const {
    auto it = states_.find(key);
    return it == states_.end() || store::IsDead(it->second, now_ns) ? KeyState{} : it->second;
  }

  size_t LiveKeys(int64_t now_ns) const {
    size_t n = 0;
    for (const auto& [key, state] : states_) {
      n += store::IsDead(state, now_ns) ? 0 : 1;
    }
    return n;
  }

 private:
  std::map<uint64_t, KeyState> states_;
  // Per key, the leases by token (expired ones are kept: a lookup checks expiry_ns).
  std::map<uint64_t, std::map<uint64_t, core::Lease>> leases_;
};

TEST(StoreModelTest, RandomTransactionsMatchTheModel) {
  const LimitSpec specs[] = {
      Spec(Algorithm::kFixedWindow, 5, 1000),    Spec(Algorithm::kSlidingWindow, 4, 2000),
      Spec(Algorithm::kTokenBucket, 3, 1000, 5), Spec(Algorithm::kLeakyBucket, 2, 1000, 3),
      Spec(Algorithm::kConcurrency, 3, 5000),
  };
  auto store = MakeStore({.shards = 4});
  ModelStore model;
  std::mt19937_64 rng(20240601);
  int64_t now = kT0;
  constexpr uint64_t kKeys = 60;
  std::vector<StoreOp> ops;
  std::vector<Decision> got;
  std::vector<Decision> want;
  int commits = 0;
  for (int txn = 0; txn < 30000; ++txn) {
    now += static_cast<int64_t>(rng() % 200);
    const size_t n = rng() % 10 == 0 ? 9 + rng() % 6 : 1 + rng() % 4;
    ops.clear();
    for (size_t j = 0; j < n; ++j) {
      const uint64_t key = 1 + rng() % kKeys;
      const LimitSpec& spec = specs[key % 5];
      StoreOp op = Check(key, spec, rng() % 4, rng() % 10 == 0);
      op.lease = 1 + rng() % 8;  // a few tokens per key: replays and reuse happen
      if (spec.algorithm == Algorithm::kConcurrency && rng() % 3 == 0) {
        op = ReleaseOp(key, spec, 1 + rng() % 8);
      }
      ops.push_back(op);
    }
    got.assign(n, Decision{});
    want.assign(n, Decision{});
    const bool store_commit = store->Apply(ops, now, absl::MakeSpan(got));
    const bool model_commit = model.Apply(ops, now, absl::MakeSpan(want));
    ASSERT_EQ(store_commit, model_commit) << "transaction " << txn;
    commits += store_commit ? 1 : 0;
    for (size_t j = 0; j < n; ++j) {
      ExpectSameDecision(got[j], want[j],
                         "transaction " + std::to_string(txn) + " op " + std::to_string(j));
    }
    if (HasFailure()) {
      return;
    }
    if (txn % 1000 == 999) {
      store->ReclaimExpired(now);
      ASSERT_EQ(store->GetStats().keys, model.LiveKeys(now)) << "transaction " << txn;
    }
  }
  // Both outcomes were exercised.
  EXPECT_GT(commits, 5000);
  EXPECT_LT(commits, 29000);
}

// ApplyAndCapture, MergeStates and GetState against the model: random transactions, merges of
// records from other replicas (captured here earlier, or written elsewhere on a clock up to a
// period off) and reads, all compared exactly.
TEST(StoreModelTest, CaptureMergeAndGetMatchTheModel) {
  const LimitSpec specs[] = {
      Spec(Algorithm::kFixedWindow, 5, 1000),    Spec(Algorithm::kSlidingWindow, 4, 2000),
      Spec(Algorithm::kTokenBucket, 3, 1000, 5), Spec(Algorithm::kLeakyBucket, 2, 1000, 3),
      Spec(Algorithm::kConcurrency, 3, 5000),
  };
  auto store = MakeStore({.shards = 4});
  ModelStore model;
  std::mt19937_64 rng(20261127);
  int64_t now = kT0;
  constexpr uint64_t kKeys = 60;
  std::vector<StateRecord> captured;  // every state captured so far
  std::vector<StoreOp> ops;
  std::vector<Decision> got;
  std::vector<Decision> want;
  std::vector<StateRecord> got_after;
  std::vector<StateRecord> want_after;
  int merges_that_changed = 0;
  for (int step = 0; step < 30000; ++step) {
    now += static_cast<int64_t>(rng() % 200);
    const std::string where = "step " + std::to_string(step);
    const int what = static_cast<int>(rng() % 3);
    if (what == 0 || captured.empty()) {
      const size_t n = 1 + rng() % 4;
      ops.clear();
      for (size_t j = 0; j < n; ++j) {
        const uint64_t key = 1 + rng() % kKeys;
        const LimitSpec& spec = specs[key % 5];
        StoreOp op = Check(key, spec, rng() % 4, rng() % 10 == 0);
        op.lease = 1 + rng() % 8;  // a few tokens per key: replays and reuse happen
        op.lease = 1 + rng() % 8;  // a few tokens per key: replays and reuse happen
        if (spec.algorithm == Algorithm::kConcurrency && rng() % 3 == 0) {
          op = ReleaseOp(key, spec, 1 + rng() % 8);
        }
        ops.push_back(op);
      }
      got.assign(n, Decision{});
      want.assign(n, Decision{});
      got_after.assign(n, StateRecord{});
      want_after.assign(n, StateRecord{});
      const bool store_commit =
          store->ApplyAndCapture(ops, now, absl::MakeSpan(got), absl::MakeSpan(got_after));
      const bool model_commit =
          model.ApplyAndCapture(ops, now, absl::MakeSpan(want), absl::MakeSpan(want_after));
      ASSERT_EQ(store_commit, model_commit) << where;
      for (size_t j = 0; j < n; ++j) {
        ExpectSameDecision(got[j], want[j], where + " op " + std::to_string(j));
        ASSERT_EQ(got_after[j].key_hash, ops[j].key_hash) << where;
        ASSERT_EQ(got_after[j].spec, ops[j].spec) << where;
        ASSERT_EQ(StateOf(got_after[j]), StateOf(want_after[j])) << where << " op " << j;
        ASSERT_EQ(got_after[j].lowered, want_after[j].lowered) << where << " op " << j;
        ASSERT_EQ(got_after[j].before_expiry_ns, want_after[j].before_expiry_ns) << where;
        ASSERT_EQ(got_after[j].before_data, want_after[j].before_data) << where;
        captured.push_back(got_after[j]);
      }
    } else if (what == 1) {
      std::vector<StateRecord> records(1 + rng() % 4);
      for (StateRecord& r : records) {
        if (rng() % 2 == 0) {
          r = captured[rng() % captured.size()];  // a replica's copy, maybe stale or dead
        } else {
          const uint64_t key = 1 + rng() % kKeys;
          const LimitSpec& spec = specs[key % 5];
          const int64_t remote_now =
              now - spec.period_ns + static_cast<int64_t>(rng() % (2 * spec.period_ns));
          r = Record(key, spec, core::Decide(spec, KeyState{}, remote_now, 1 + rng() % 3).next);
        }
      }
      std::vector<KeyState> before;
      for (const StateRecord& r : records) {
        before.push_back(Held(*store, r.key_hash, now));
      }
      store->MergeStates(records, now);
      model.MergeStates(records, now);
      for (size_t j = 0; j < records.size(); ++j) {
        const KeyState held = Held(*store, records[j].key_hash, now);
        ASSERT_EQ(held, model.Stored(records[j].key_hash, now)) << where;
        merges_that_changed += held != before[j] ? 1 : 0;
      }
    } else {
      const uint64_t key = 1 + rng() % kKeys;
      ASSERT_EQ(Held(*store, key, now), model.Stored(key, now)) << where;
    }
    if (HasFailure()) {
      return;
    }
    if (step % 1000 == 999) {
      store->ReclaimExpired(now);
      ASSERT_EQ(store->GetStats().keys, model.LiveKeys(now)) << where;
    }
  }
  EXPECT_GT(merges_that_changed, 1000);
}

}  // namespace
}  // namespace floodgate
