// End-to-end in-process decisions through the Limiter (config matching, key hashing, store,
// counters, real clock): the figure to compare with rate-limiter-flexible's RateLimiterMemory
// micro-benchmark (../shared/peers/node/micro.js), scenario by scenario:
//   BM_CheckOneKey      ~ micro.js one  (2M calls on a single key)
//   BM_CheckNewKeys     ~ micro.js many (1M distinct keys, one call each: the insert path)
//   BM_CheckExistingKeys~ micro.js many, phase 2 (calls on random existing keys)
// Each call formats its key (std::to_string, as micro.js builds 'user:' + n) into one reused
// CheckRequest: building the request's vectors is the front end's cost (~30 ns of allocation
// here), not the limiter's, and the servers' benchmarks measure it.
// Fixed seeds. With FLOODGATE_BENCH_SMOKE=1 the key counts shrink so ctest's smoke run is fast.

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <random>

#include "absl/synchronization/mutex.h"
#include "src/limiter/limiter.h"

namespace floodgate::limiter {
namespace {

constexpr char kYaml[] = R"(
domain: bench
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 1000000000}
)";

size_t Keys() { return std::getenv("FLOODGATE_BENCH_SMOKE") != nullptr ? 10'000 : 1'000'000; }

std::unique_ptr<Limiter> MakeLimiter(Store* store) {
  // As in production (main.cc): no per-acquisition deadlock detection.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  auto domain = core::ParseDomainConfig(kYaml, "bench.yaml");
  return std::make_unique<Limiter>(store, KeyHasher(7, 9), *core::BuildConfig({*domain}, 1));
}

CheckRequest Request(const std::string& user) {
  CheckRequest r;
  r.domain = "bench";
  r.descriptors.push_back({{{"user", user}}, std::nullopt, std::nullopt});
  return r;
}

void BM_CheckOneKey(benchmark::State& state) {
  auto store = *NewShardedStore({});
  auto limiter = MakeLimiter(store.get());
  CheckRequest request = Request("1");
  for (auto _ : state) {
    auto r = limiter->Check(request);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CheckOneKey);

void BM_CheckNewKeys(benchmark::State& state) {
  const size_t n = Keys();
  std::unique_ptr<Store> store;
  std::unique_ptr<Limiter> limiter;
  CheckRequest request = Request("");
  size_t i = n;
  for (auto _ : state) {
    if (i == n) {  // a fresh store every n keys, so every call inserts a new key
      state.PauseTiming();
      store = *NewShardedStore({});
      limiter = MakeLimiter(store.get());
      i = 0;
      state.ResumeTiming();
    }
    request.descriptors[0].entries[0].value = std::to_string(i++);
    auto r = limiter->Check(request);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CheckNewKeys);

void BM_CheckExistingKeys(benchmark::State& state) {
  const size_t n = Keys();
  auto store = *NewShardedStore({});
  auto limiter = MakeLimiter(store.get());
  for (size_t i = 0; i < n; ++i) {
    (void)limiter->Check(Request(std::to_string(i)));
  }
  std::mt19937_64 rng(42);
  CheckRequest request = Request("");
  for (auto _ : state) {
    request.descriptors[0].entries[0].value = std::to_string(rng() % n);
    auto r = limiter->Check(request);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["bytes_per_key"] =
      static_cast<double>(store->GetStats().bytes) / static_cast<double>(store->GetStats().keys);
}
BENCHMARK(BM_CheckExistingKeys);

}  // namespace
}  // namespace floodgate::limiter

BENCHMARK_MAIN();
