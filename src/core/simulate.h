#pragma once

// What each algorithm would admit of a synthetic trace (POST /v1/simulate): a limit, a traffic
// shape, and the real algorithms (Decide, algorithms.h) replayed over synthetic time. Pure: no
// store, no clock; the same input always gives the same answer.
//
// Thread-safety: a pure function; safe from any thread.

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "floodgate/limit.h"

namespace floodgate::core {

enum class TrafficShape : uint8_t {
  // `rate` requests per second, evenly spaced, for the whole duration.
  kSteady,
  // The same average rate sent in bursts: rate × period requests at once at the start of every
  // period.
  kBurst,
  // The rate grows linearly from 0 to 2 × rate over the duration (rate on average).
  kRamp,
  // Two bursts of `rate` requests, each spread over one second: the second before a fixed
  // window boundary (the first one at or after half the duration) and the second after it. A
  // fixed window admits up to twice its limit across that boundary; a sliding window does not.
  kEdge,
};

// Returns the shape named `name` ("steady", "burst", "ramp", "edge"); InvalidArgument
// otherwise.
absl::StatusOr<TrafficShape> ParseTrafficShape(std::string_view name);

// Bounds on the work of one simulation.
inline constexpr uint64_t kMaxSimulatedRequests = 100'000;
inline constexpr int64_t kMaxSimulationSteps = 2000;
inline constexpr int64_t kMaxSimulationSeconds = 30 * 86400;

struct SimulationInput {
  uint64_t limit = 0;  // hits per period (every algorithm)
  int64_t period_seconds = 0;
  uint64_t burst = 0;  // token and leaky bucket capacity; 0: the limit
  TrafficShape shape = TrafficShape::kSteady;
  double rate = 0;  // requests per second (see TrafficShape)
  int64_t duration_seconds = 0;
  int64_t step_seconds = 1;  // the width of one reported step
};

struct AlgorithmSeries {
  Algorithm algorithm = Algorithm::kFixedWindow;
  std::vector<uint64_t> admitted;  // per step
  uint64_t total = 0;
};

struct SimulationResult {
  std::vector<int64_t> step_starts_seconds;  // each step's start, from 0
  std::vector<uint64_t> offered;             // requests per step
  // Fixed window, sliding window, token bucket, leaky bucket, in that order.
  std::vector<AlgorithmSeries> algorithms;
};

// Replays the trace `input` describes through each algorithm with one key, every request one
// hit, admitted ones committed. InvalidArgument (naming the field) for a value out of range: a
// limit or burst over kMaxRequestsPerPeriod, a period, duration or step below 1 s, more than
// kMaxSimulationSteps steps, more than kMaxSimulatedRequests requests, a rate not above 0.
absl::StatusOr<SimulationResult> Simulate(const SimulationInput& input);

}  // namespace floodgate::core
