// Replays synthetic traffic through each algorithm and prints how closely it enforces the limit.
//
//   ./build-algo/src/core/algorithms_accuracy [--windows=N] [--seed=S]
//
// For every (algorithm, pattern) it prints:
//   offered          hits offered per period, averaged over the run;
//   max in 1 period  the most hits admitted in any interval of one period (any start, not only
//                    window-aligned ones), and that as a multiple of the limit;
//   admitted         hits admitted per period over the whole run, against the configured rate.
// For the leaky bucket the hits are counted when they proceed (arrival + delay), because that is
// the traffic the protected service sees. Deterministic: fixed seed, fake time, no clock.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "floodgate/decision.h"
#include "floodgate/limit.h"
#include "src/core/algorithms.h"

namespace floodgate::core {
namespace {

constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kT0 = 1'700'000'000 * kSec;  // a window start
constexpr uint64_t kLimit = 100;
constexpr int64_t kPeriod = kSec;

struct Pattern {
  std::string name;
  std::vector<int64_t> arrivals;  // one hit each, non-decreasing
};

std::vector<Pattern> MakePatterns(int windows, uint64_t seed) {
  std::vector<Pattern> patterns;
  const int64_t end = kT0 + windows * kPeriod;
  {
    Pattern p{"steady 2x rate"};
    for (int64_t t = kT0; t < end; t += kPeriod / (2 * kLimit)) {
      p.arrivals.push_back(t);
    }
    patterns.push_back(std::move(p));
  }
  {
    Pattern p{"poisson 2x rate"};
    std::mt19937_64 rng(seed);
    std::exponential_distribution<double> gap(2.0 * kLimit / kPeriod);
    for (double t = kT0; t < end; t += gap(rng)) {
      p.arrivals.push_back(static_cast<int64_t>(t));
    }
    patterns.push_back(std::move(p));
  }
  {
    // 2L hits in the last ns of every window and 2L in the first ns of the next.
    Pattern p{"bursts at window edges"};
    for (int64_t w = kT0 + kPeriod; w < end; w += kPeriod) {
      p.arrivals.insert(p.arrivals.end(), 2 * kLimit, w - 1);
      p.arrivals.insert(p.arrivals.end(), 2 * kLimit, w);
    }
    patterns.push_back(std::move(p));
  }
  {
    // The sliding window's worst case: an idle window, a burst in the last ns of the next one,
    // then a window of steady 2x traffic; repeated every 4 windows.
    Pattern p{"edge burst, then steady"};
    for (int64_t w = kT0; w + 4 * kPeriod <= end; w += 4 * kPeriod) {
      p.arrivals.insert(p.arrivals.end(), kLimit, w + 2 * kPeriod - 1);
      for (int64_t t = w + 2 * kPeriod; t < w + 3 * kPeriod; t += kPeriod / (2 * kLimit)) {
        p.arrivals.push_back(t);
      }
    }
    patterns.push_back(std::move(p));
  }
  return patterns;
}

uint64_t MaxInAnyWindow(const std::vector<int64_t>& sorted_times, int64_t window) {
  uint64_t best = 0;
  size_t lo = 0;
  for (size_t hi = 0; hi < sorted_times.size(); ++hi) {
    while (sorted_times[hi] - sorted_times[lo] >= window) {
      ++lo;
    }
    best = std::max<uint64_t>(best, hi - lo + 1);
  }
  return best;
}

struct Config {
  std::string name;
  LimitSpec spec;
};

void Run(const Config& config, const Pattern& pattern, int windows) {
  KeyState state;
  std::vector<int64_t> admitted;
  int64_t max_delay = 0;
  for (int64_t t : pattern.arrivals) {
    if (state.expiry_ns <= t) {
      state = KeyState{};  // what the store does
    }
    const Outcome out = Decide(config.spec, state, t, 1);
    state = out.next;
    if (out.decision.allowed) {
      admitted.push_back(t + out.decision.delay_ns);
      max_delay = std::max(max_delay, out.decision.delay_ns);
    }
  }
  std::sort(admitted.begin(), admitted.end());
  const uint64_t max_in_window = MaxInAnyWindow(admitted, kPeriod);
  const double rate = static_cast<double>(admitted.size()) / windows;
  const double offered = static_cast<double>(pattern.arrivals.size()) / windows;
  std::printf("  %-24s %-24s %7.1f   %5llu  (%4.2fx)   %7.2f  (%+7.2f%%)", config.name.c_str(),
              pattern.name.c_str(), offered, static_cast<unsigned long long>(max_in_window),
              static_cast<double>(max_in_window) / kLimit, rate, 100.0 * (rate / kLimit - 1.0));
  if (max_delay > 0) {
    std::printf("  max delay %.0f ms", static_cast<double>(max_delay) / 1e6);
  }
  std::printf("\n");
}

// Concurrency: requests arrive at 2x what the slots can serve and hold a slot for `hold`; a
// fraction of holders crash and never release, so their slots come back only when they are one to
// two leases old (lease epochs). The others release with their lease token (the time of their
// acquire). "max in flight" is the most live holders at once (must never exceed the limit),
// "counted" the most the key counted, "leaked" the most slots the key counted that no live holder
// held.
void RunConcurrency(int windows, uint64_t seed) {
  const int64_t hold = 100'000'000;  // 100 ms
  const int64_t lease = 2 * kSec;
  const LimitSpec spec{
      .algorithm = Algorithm::kConcurrency, .requests_per_period = kLimit, .period_ns = lease};
  for (double crash_fraction : {0.0, 0.001, 0.01}) {
    std::mt19937_64 rng(seed);
    std::bernoulli_distribution crashes(crash_fraction);
    KeyState state;
    // A min-heap of (release time, lease token).
    std::vector<std::pair<int64_t, int64_t>> releases;
    uint64_t in_flight = 0;
    uint64_t max_in_flight = 0;
    uint64_t max_counted = 0;
    uint64_t max_leaked = 0;
    uint64_t admitted = 0;
    uint64_t offered = 0;
    const int64_t gap = hold / (2 * kLimit);
    for (int64_t t = kT0; t < kT0 + windows * kPeriod; t += gap) {
      while (!releases.empty() && releases.front().first <= t) {
        std::pop_heap(releases.begin(), releases.end(), std::greater<>());
        state = Release(spec, state, t, 1, releases.back().second);
        releases.pop_back();
        --in_flight;
      }
      ++offered;
      const Outcome out = Decide(spec, state, t, 1);
      state = out.next;
      if (out.decision.allowed) {
        ++admitted;
        if (!crashes(rng)) {
          ++in_flight;
          releases.emplace_back(t + hold, t);
          std::push_heap(releases.begin(), releases.end(), std::greater<>());
        }
      }
      max_in_flight = std::max(max_in_flight, in_flight);
      const uint64_t counted = kLimit - out.decision.remaining;  // by the key, after this call
      max_counted = std::max(max_counted, counted);
      max_leaked = std::max(max_leaked, counted > in_flight ? counted - in_flight : 0);
    }
    const double throughput = static_cast<double>(admitted) / windows;
    const double ideal = static_cast<double>(kLimit) * kSec / hold;
    std::printf(
        "  %-24s %4.1f%% of holders crash: max in flight %llu / %llu (counted %llu), leaked at "
        "most %llu, throughput %.0f/s of %.0f/s (%+.1f%%)%s\n",
        "concurrency (lease 2 s)", 100 * crash_fraction,
        static_cast<unsigned long long>(max_in_flight), static_cast<unsigned long long>(kLimit),
        static_cast<unsigned long long>(max_counted), static_cast<unsigned long long>(max_leaked),
        throughput, ideal, 100.0 * (throughput / ideal - 1.0),
        max_in_flight > kLimit ? "  OVER THE LIMIT" : "");
  }
}

int Main(int argc, char** argv) {
  int windows = 1000;
  uint64_t seed = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--windows=", 10) == 0) {
      windows = std::max(4, std::atoi(argv[i] + 10));
    } else if (std::strncmp(argv[i], "--seed=", 7) == 0) {
      seed = std::strtoull(argv[i] + 7, nullptr, 10);
    } else {
      std::fprintf(stderr, "usage: %s [--windows=N] [--seed=S]\n", argv[0]);
      return 2;
    }
  }
  const std::vector<Config> configs = {
      {"fixed_window",
       {.algorithm = Algorithm::kFixedWindow, .requests_per_period = kLimit, .period_ns = kPeriod}},
      {"sliding_window",
       {.algorithm = Algorithm::kSlidingWindow,
        .requests_per_period = kLimit,
        .period_ns = kPeriod}},
      {"token_bucket burst=L",
       {.algorithm = Algorithm::kTokenBucket, .requests_per_period = kLimit, .period_ns = kPeriod}},
      {"token_bucket burst=L/10",
       {.algorithm = Algorithm::kTokenBucket,
        .requests_per_period = kLimit,
        .period_ns = kPeriod,
        .burst = kLimit / 10}},
      {"leaky_bucket queue=L/10",
       {.algorithm = Algorithm::kLeakyBucket,
        .requests_per_period = kLimit,
        .period_ns = kPeriod,
        .burst = kLimit / 10}},
  };
  std::printf("limit %llu per %lld ms; %d periods; seed %llu\n",
              static_cast<unsigned long long>(kLimit), static_cast<long long>(kPeriod / 1'000'000),
              windows, static_cast<unsigned long long>(seed));
  std::printf("  %-24s %-24s %-9s %-17s %s\n", "algorithm", "pattern", "offered", "max in 1 period",
              "admitted per period (vs limit)");
  const std::vector<Pattern> patterns = MakePatterns(windows, seed);
  for (const Config& config : configs) {
    for (const Pattern& pattern : patterns) {
      Run(config, pattern, windows);
    }
  }
  RunConcurrency(windows, seed);
  return 0;
}

}  // namespace
}  // namespace floodgate::core

int main(int argc, char** argv) { return floodgate::core::Main(argc, argv); }
