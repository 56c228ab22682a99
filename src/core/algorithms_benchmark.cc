// CPU cost of one Decide per algorithm, on one key state (no store, no locks, no clock).
//
//   ./algorithms_benchmark --benchmark_repetitions=5 --benchmark_report_aggregates_only=true

#include <benchmark/benchmark.h>

#include <cstdint>

#include "floodgate/limit.h"
#include "src/core/algorithms.h"

namespace floodgate::core {
namespace {

constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kT0 = 1'700'000'000 * kSec;

const Algorithm kAlgorithms[] = {Algorithm::kFixedWindow, Algorithm::kSlidingWindow,
                                 Algorithm::kTokenBucket, Algorithm::kLeakyBucket,
                                 Algorithm::kConcurrency};

LimitSpec BenchSpec(Algorithm algorithm) {
  // 1000 per second; the bucket rate has a fractional emission interval (3 per 1000 ns * 1e6)
  // only in the _fractional variant below.
  return LimitSpec{.algorithm = algorithm, .requests_per_period = 1000, .period_ns = kSec};
}

// Traffic at about the limit: one hit per ms, committed, so the key alternates between
// admitting and (for the windows, at their end) refusing, and windows roll over.
void BM_Decide(benchmark::State& state) {
  const LimitSpec spec = BenchSpec(kAlgorithms[state.range(0)]);
  KeyState key;
  int64_t now = kT0;
  uint64_t allowed = 0;
  for (auto _ : state) {
    const Outcome out = Decide(spec, key, now, 1);
    benchmark::DoNotOptimize(out);
    key = out.next;
    allowed += out.decision.allowed;
    if (spec.algorithm == Algorithm::kConcurrency && out.decision.allowed) {
      key = Release(spec, key, now, 1, /*acquired_at_ns=*/now);
    }
    now += 1'000'000 - 7;  // slightly over the rate
  }
  state.SetLabel(std::string(AlgorithmName(spec.algorithm)));
  state.counters["allowed_fraction"] =
      static_cast<double>(allowed) / static_cast<double>(state.iterations());
}
BENCHMARK(BM_Decide)->DenseRange(0, 4);

// The refusal path: the key is exhausted and stays so (time does not move).
void BM_DecideRefused(benchmark::State& state) {
  const LimitSpec spec = BenchSpec(kAlgorithms[state.range(0)]);
  const int64_t now = kT0 + 123;
  const KeyState key = Decide(spec, KeyState{}, now, 1000).next;
  for (auto _ : state) {
    const Outcome out = Decide(spec, key, now, 1);
    benchmark::DoNotOptimize(out);
  }
  state.SetLabel(std::string(AlgorithmName(spec.algorithm)));
}
BENCHMARK(BM_DecideRefused)->DenseRange(0, 4);

// GCRA with a fractional emission interval (7 per second: T = 142857142.857 ns).
void BM_DecideTokenBucketFractional(benchmark::State& state) {
  const LimitSpec spec{.algorithm = Algorithm::kTokenBucket,
                       .requests_per_period = 7,
                       .period_ns = kSec,
                       .burst = 20};
  KeyState key;
  int64_t now = kT0;
  for (auto _ : state) {
    const Outcome out = Decide(spec, key, now, 1);
    benchmark::DoNotOptimize(out);
    key = out.next;
    now += 100'000'000;
  }
}
BENCHMARK(BM_DecideTokenBucketFractional);

}  // namespace
}  // namespace floodgate::core

BENCHMARK_MAIN();
