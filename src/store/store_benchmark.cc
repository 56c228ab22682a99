// Benchmarks of the sharded store: one decision (Apply of one op) on a hot key and on 10M
// random keys for every algorithm, hashing, hash + Apply, a 3-op transaction, and a run where
// keys keep expiring (the sweeper at work).
//
// With FLOODGATE_BENCH_SMOKE set (ctest's smoke run) the key sets shrink to 100k so the run
// takes seconds. Fixed seeds throughout; time is a constant (or advances deterministically), so
// nothing expires unless a benchmark says so.
//
// Multi-threaded runs report items_per_second over all threads; ns per decision for the whole
// store is 1e9 / items_per_second.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "floodgate/decision.h"
#include "floodgate/limit.h"
#include "floodgate/store.h"

namespace floodgate {
namespace {

constexpr int64_t kHourNs = 3600LL * 1'000'000'000;
constexpr int64_t kNowNs = 1'700'000'000LL * 1'000'000'000;  // fixed: nothing expires
constexpr uint64_t kSeed = 0x5EED'F100'D6A7'E001ULL;

// Debian's abseil is built without NDEBUG, so absl::Mutex runs its deadlock detector on every
// Lock/Unlock (a global graph behind a global lock): that triples the cost of a decision at 10M
// keys and serializes all shards. A production binary turns it off (see docs/store.md); so does
// this benchmark, unless FLOODGATE_BENCH_DEADLOCK_DETECTION is set to measure it.
const bool kDeadlockDetectionOff = [] {
  if (std::getenv("FLOODGATE_BENCH_DEADLOCK_DETECTION") == nullptr) {
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
    return true;
  }
  return false;
}();

bool Smoke() { return std::getenv("FLOODGATE_BENCH_SMOKE") != nullptr; }
size_t NumRandomKeys() { return Smoke() ? 100'000 : 10'000'000; }

uint64_t SplitMix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Limits large enough that every benchmarked hit passes and writes a new state.
LimitSpec BenchSpec(Algorithm algorithm) {
  LimitSpec spec;
  spec.algorithm = algorithm;
  spec.period_ns = kHourNs;
  spec.requests_per_period =
      algorithm == Algorithm::kSlidingWindow ? 4'000'000'000ULL : kMaxRequestsPerPeriod;
  return spec;
}

std::unique_ptr<Store> MakeStore(const StoreOptions& options) {
  absl::StatusOr<std::unique_ptr<Store>> store = NewShardedStore(options);
  if (!store.ok()) {
    std::fprintf(stderr, "NewShardedStore: %s\n", store.status().ToString().c_str());
    std::abort();
  }
  return *std::move(store);
}

void ReportMemory(benchmark::State& state, const Store& store) {
  const StoreStats stats = store.GetStats();
  state.counters["keys"] = static_cast<double>(stats.keys);
  state.counters["bytes_per_key"] =
      stats.keys == 0 ? 0.0 : static_cast<double>(stats.bytes) / static_cast<double>(stats.keys);
}

// ---------------------------------------------------------------------------------------------
// Hot key.

void BM_HotKey(benchmark::State& state, Algorithm algorithm) {
  static std::unique_ptr<Store> store;
  if (state.thread_index() == 0) {
    store = MakeStore({});  // a fresh key per run; the loop's start barrier publishes it
  }
  StoreOp op;
  op.key_hash = 0x0123'4567'89AB'CDEFULL;
  op.spec = BenchSpec(algorithm);
  Decision d;
  for (auto _ : state) {
    store->Apply({&op, 1}, kNowNs, {&d, 1});
    benchmark::DoNotOptimize(d);
  }
  if (!d.allowed) {
    state.SkipWithError("a hot-key hit was refused");
  }
  state.SetItemsProcessed(state.iterations());
}

// ---------------------------------------------------------------------------------------------
// Random keys: one store of NumRandomKeys() keys per algorithm, built once (outside the timed
// loop) and kept until a benchmark of another algorithm needs the memory.

struct RandomKeys {
  Algorithm algorithm;
  std::unique_ptr<Store> store;
  std::vector<uint64_t> keys;  // pre-hashed: uniform 64-bit values, as KeyHasher produces
};

RandomKeys& GetRandomKeys(Algorithm algorithm) {
  static std::mutex mu;
  static std::unique_ptr<RandomKeys> current;
  std::lock_guard<std::mutex> lock(mu);
  if (current == nullptr || current->algorithm != algorithm) {
    current.reset();  // free the previous store first
    auto fixture = std::make_unique<RandomKeys>();
    fixture->algorithm = algorithm;
    // No initial_capacity: the tables reach this size by their own growth policy, so the
    // reported bytes_per_key is what a store that grew to N keys holds.
    fixture->store = MakeStore({});
    const size_t n = NumRandomKeys();
    fixture->keys.resize(n);
    uint64_t seed = kSeed;
    StoreOp op;
    op.spec = BenchSpec(algorithm);
    Decision d;
    for (size_t i = 0; i < n; ++i) {
      fixture->keys[i] = SplitMix64(seed) | 1;  // never 0, like KeyHasher
      op.key_hash = fixture->keys[i];
      fixture->store->Apply({&op, 1}, kNowNs, {&d, 1});
    }
    current = std::move(fixture);
  }
  return *current;
}

void BM_RandomKeys(benchmark::State& state, Algorithm algorithm) {
  RandomKeys& fixture = GetRandomKeys(algorithm);
  Store& store = *fixture.store;
  const std::vector<uint64_t>& keys = fixture.keys;
  // Each thread walks the keys from its own offset; the keys are random, so are the slots.
  size_t i = (keys.size() / 2) * static_cast<size_t>(state.thread_index());
  StoreOp op;
  op.spec = BenchSpec(algorithm);
  Decision d;
  for (auto _ : state) {
    op.key_hash = keys[i];
    if (++i == keys.size()) {
      i = 0;
    }
    store.Apply({&op, 1}, kNowNs, {&d, 1});
    benchmark::DoNotOptimize(d);
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    ReportMemory(state, store);
  }
}

// A request under three limits (three random keys, usually three shards).
void BM_RandomKeysTransaction3(benchmark::State& state) {
  RandomKeys& fixture = GetRandomKeys(Algorithm::kFixedWindow);
  Store& store = *fixture.store;
  const std::vector<uint64_t>& keys = fixture.keys;
  StoreOp ops[3];
  for (StoreOp& op : ops) {
    op.spec = BenchSpec(Algorithm::kFixedWindow);
  }
  Decision d[3];
  size_t i = 0;
  for (auto _ : state) {
    for (StoreOp& op : ops) {
      op.key_hash = keys[i];
      if (++i == keys.size()) {
        i = 0;
      }
    }
    store.Apply(ops, kNowNs, absl::MakeSpan(d));
    benchmark::DoNotOptimize(d);
  }
  state.SetItemsProcessed(state.iterations());
}

// ---------------------------------------------------------------------------------------------
// Hashing.

const char kTypicalKey[] = "api_gateway|remote_address=203.0.113.47|";  // 40 bytes
static_assert(sizeof(kTypicalKey) - 1 == 40);

void BM_HashTypicalKey(benchmark::State& state) {
  const KeyHasher hasher(0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL);
  std::string key = kTypicalKey;
  for (auto _ : state) {
    benchmark::DoNotOptimize(key.data());
    benchmark::DoNotOptimize(hasher.Hash(key));
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(key.size()));
}

// Hash a ~40-byte key, then decide on it: what a front end does per descriptor.
void BM_HashAndApply(benchmark::State& state) {
  static std::unique_ptr<Store> store;
  static std::vector<std::string> names;
  const KeyHasher hasher(0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL);
  const LimitSpec spec = BenchSpec(Algorithm::kFixedWindow);
  if (store == nullptr) {
    const size_t n = Smoke() ? 100'000 : 1'000'000;
    store = MakeStore({});
    uint64_t seed = kSeed;
    names.reserve(n);
    StoreOp op;
    op.spec = spec;
    Decision d;
    for (size_t i = 0; i < n; ++i) {
      char buf[64];
      std::snprintf(buf, sizeof(buf), "api_gateway|remote_address=%08llx|",
                    static_cast<unsigned long long>(SplitMix64(seed) & 0xffffffffULL));
      names.emplace_back(buf);  // 40 bytes
      op.key_hash = hasher.Hash(names.back());
      store->Apply({&op, 1}, kNowNs, {&d, 1});
    }
  }
  StoreOp op;
  op.spec = spec;
  Decision d;
  size_t i = 0;
  for (auto _ : state) {
    op.key_hash = hasher.Hash(names[i]);
    if (++i == names.size()) {
      i = 0;
    }
    store->Apply({&op, 1}, kNowNs, {&d, 1});
    benchmark::DoNotOptimize(d);
  }
  state.SetItemsProcessed(state.iterations());
}

// ---------------------------------------------------------------------------------------------
// Keys that keep expiring: 1M keys (100k in smoke runs) under a 1 s fixed window, with time
// advancing 1 s / N per decision, so that a random key comes back about once per window. Most
// decisions find the key's state expired (every window ends at the same instant) and write a
// new one, while the sweeper reclaims the keys that have not come back. Measures the cost of
// expiry handling and the memory it keeps, in steady state (3 windows of warm-up, kept across
// runs).

struct ExpiringKeys {
  std::unique_ptr<Store> store;
  std::vector<uint64_t> keys;
  StoreOp op;
  int64_t now_ns = kNowNs;
  int64_t step_ns = 0;
  uint64_t pick = kSeed;

  void Step(Decision& d) {
    op.key_hash = keys[SplitMix64(pick) % keys.size()];
    now_ns += step_ns;
    store->Apply({&op, 1}, now_ns, {&d, 1});
  }
};

void BM_ExpiringKeys(benchmark::State& state) {
  static std::unique_ptr<ExpiringKeys> fixture;
  if (fixture == nullptr) {
    fixture = std::make_unique<ExpiringKeys>();
    const size_t n = Smoke() ? 100'000 : 1'000'000;
    fixture->store = MakeStore({});
    fixture->keys.resize(n);
    uint64_t seed = kSeed ^ 1;
    for (uint64_t& k : fixture->keys) {
      k = SplitMix64(seed) | 1;
    }
    fixture->op.spec.algorithm = Algorithm::kFixedWindow;
    fixture->op.spec.requests_per_period = 1'000'000;
    fixture->op.spec.period_ns = 1'000'000'000;
    fixture->step_ns = fixture->op.spec.period_ns / static_cast<int64_t>(n);
    Decision d;
    for (size_t i = 0; i < 3 * n; ++i) {
      fixture->Step(d);
    }
  }
  Decision d;
  const uint64_t reclaimed_before = fixture->store->GetStats().reclaimed;
  for (auto _ : state) {
    fixture->Step(d);
    benchmark::DoNotOptimize(d);
  }
  state.SetItemsProcessed(state.iterations());
  ReportMemory(state, *fixture->store);
  state.counters["reclaimed_per_decision"] =
      static_cast<double>(fixture->store->GetStats().reclaimed - reclaimed_before) /
      static_cast<double>(state.iterations());
}

// ---------------------------------------------------------------------------------------------

struct Named {
  const char* name;
  Algorithm algorithm;
};
constexpr Named kAlgorithms[] = {
    {"fixed_window", Algorithm::kFixedWindow}, {"sliding_window", Algorithm::kSlidingWindow},
    {"token_bucket", Algorithm::kTokenBucket}, {"leaky_bucket", Algorithm::kLeakyBucket},
    {"concurrency", Algorithm::kConcurrency},
};

int RegisterAll() {
  for (const Named& a : kAlgorithms) {
    benchmark::RegisterBenchmark((std::string("BM_HotKey/") + a.name).c_str(), BM_HotKey,
                                 a.algorithm)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime();
  }
  for (const Named& a : kAlgorithms) {
    benchmark::RegisterBenchmark((std::string("BM_RandomKeys/") + a.name).c_str(), BM_RandomKeys,
                                 a.algorithm)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime();
  }
  benchmark::RegisterBenchmark("BM_RandomKeysTransaction3/fixed_window", BM_RandomKeysTransaction3);
  benchmark::RegisterBenchmark("BM_HashTypicalKey", BM_HashTypicalKey);
  benchmark::RegisterBenchmark("BM_HashAndApply", BM_HashAndApply);
  benchmark::RegisterBenchmark("BM_ExpiringKeys", BM_ExpiringKeys);
  return 0;
}
const int kRegistered = RegisterAll();

}  // namespace
}  // namespace floodgate

BENCHMARK_MAIN();
