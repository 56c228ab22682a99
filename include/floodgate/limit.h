#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace floodgate {

enum class Algorithm : uint8_t {
  kFixedWindow = 0,    // Envoy's: a counter per epoch-aligned window. The default.
  kSlidingWindow = 1,  // Two-counter weighted approximation of a sliding window.
  kTokenBucket = 2,    // GCRA: one timestamp per key; same answers as redis-cell CL.THROTTLE.
  kLeakyBucket = 3,    // A queue that drips at a steady rate; says how long to wait.
  kConcurrency = 4,    // In-flight count with acquire/release and a lease.
};

// Returns the config name of `algorithm` ("fixed_window", "sliding_window", "token_bucket",
// "leaky_bucket", "concurrency").
std::string_view AlgorithmName(Algorithm algorithm);
// Parses a config name; "gcra" is accepted for "token_bucket". InvalidArgument otherwise.
absl::StatusOr<Algorithm> ParseAlgorithm(std::string_view name);

// Bounds that keep all arithmetic in 64 bits (with 128-bit intermediates) free of overflow.
inline constexpr uint64_t kMaxRequestsPerPeriod = 1'000'000'000'000ULL;         // 1e12
inline constexpr int64_t kMaxPeriodNs = 100LL * 366 * 86400 * 1'000'000'000LL;  // ~100 years
static_assert(kMaxPeriodNs < INT64_MAX / 2, "periods must leave room for now + period");

// The parameters of one limit, as the algorithms see them. A plain value, cheap to copy.
struct LimitSpec {
  Algorithm algorithm = Algorithm::kFixedWindow;
  // Fixed/sliding window: hits allowed per window. Token/leaky bucket: the rate's numerator
  // (hits per period). Concurrency: slots that may be held at once.
  uint64_t requests_per_period = 0;
  // Window length, or the rate's denominator. Concurrency: the lease of an acquired slot.
  int64_t period_ns = 0;
  // Token bucket: capacity (hits that may pass at once); leaky bucket: queue length.
  // 0 means requests_per_period. Ignored by the other algorithms.
  uint64_t burst = 0;

  // Returns the effective capacity (burst, or requests_per_period when burst is 0).
  uint64_t Capacity() const { return burst != 0 ? burst : requests_per_period; }
  friend bool operator==(const LimitSpec&, const LimitSpec&) = default;
};

// Checks `spec` against the bounds above: period in (0, kMaxPeriodNs], requests_per_period and
// burst <= kMaxRequestsPerPeriod (sliding window: < 2^32). A limit of 0 is valid (refuses all).
absl::Status ValidateLimitSpec(const LimitSpec& spec);

}  // namespace floodgate
