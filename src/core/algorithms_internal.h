#pragma once

// Shared by the algorithm files (algorithms.cc: Decide and Release; algorithms_merge.cc: Merge):
// saturating arithmetic, freshness and the bounds guard, and the concurrency state's reading.
// Not for callers outside src/core/algorithms*.cc. Pure.

#include <cstdint>
#include <limits>

#include "floodgate/limit.h"
#include "src/core/algorithms.h"

namespace floodgate::core::internal {

using Int128 = __int128;

constexpr int64_t kMaxTime = std::numeric_limits<int64_t>::max();
constexpr int64_t kMinTime = std::numeric_limits<int64_t>::min();
constexpr uint64_t kLow32 = 0xffff'ffffULL;

static_assert(kMaxPeriodNs < (int64_t{1} << 62), "scaled products must stay below 2^127");
static_assert(kMaxRequestsPerPeriod < (uint64_t{1} << 40), "scaled products must stay below 2^127");

inline int64_t Saturate(Int128 v) {
  if (v > kMaxTime) {
    return kMaxTime;
  }
  if (v < kMinTime) {
    return kMinTime;
  }
  return static_cast<int64_t>(v);
}

// Returns a + b saturated to the int64 range (the same as Saturate(Int128{a} + b), in fewer
// instructions).
inline int64_t SatAdd(int64_t a, int64_t b) {
  int64_t sum;
  if (__builtin_add_overflow(a, b, &sum)) {
    return b > 0 ? kMaxTime : kMinTime;  // the exact sum lies past the end b points to
  }
  return sum;
}

// Returns a - b saturated to the int64 range. Time differences need it: with now near INT64_MIN
// and an end near INT64_MAX the exact distance is past INT64_MAX (I4).
inline int64_t SatSub(int64_t a, int64_t b) {
  int64_t diff;
  if (__builtin_sub_overflow(a, b, &diff)) {
    return b < 0 ? kMaxTime : kMinTime;  // the exact difference lies past the end -b points to
  }
  return diff;
}

// Returns ceil(a / b) for a >= 0, b > 0.
inline Int128 CeilDivNonNeg(Int128 a, Int128 b) { return (a + b - 1) / b; }

// Returns whether `state` reads as KeyState{} at now_ns (I1).
inline bool IsFresh(const KeyState& state, int64_t now_ns) {
  return state.expiry_ns <= now_ns || (state.expiry_ns == 0 && state.data == 0);
}

// Cheap guard for specs that skipped ValidateLimitSpec: refusing is safer than overflowing.
inline bool InBounds(const LimitSpec& spec) {
  return spec.period_ns > 0 && spec.period_ns <= kMaxPeriodNs &&
         spec.requests_per_period <= kMaxRequestsPerPeriod && spec.burst <= kMaxRequestsPerPeriod &&
         ((spec.algorithm != Algorithm::kSlidingWindow &&
           spec.algorithm != Algorithm::kConcurrency) ||
          spec.requests_per_period <= kLow32);
}

// The concurrency state rolled forward to now: counts of the epoch that ends at end_ns.
struct Slots {
  uint64_t prev = 0;
  uint64_t cur = 0;
  int64_t end_ns = 0;  // end of the epoch now is in (or of the recorded one, if now is before it)
};

// Returns the concurrency state rolled forward to now_ns.
Slots ReadSlots(const LimitSpec& spec, const KeyState& state, int64_t now_ns);

}  // namespace floodgate::core::internal
