#include "src/core/simulate.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "src/core/algorithms.h"

namespace floodgate::core {
namespace {

constexpr int64_t kSecondNs = 1'000'000'000;

// Arrival times (ns from the start, sorted) of the trace.
std::vector<int64_t> Arrivals(const SimulationInput& in, uint64_t count) {
  std::vector<int64_t> at;
  at.reserve(count);
  const double duration_ns = static_cast<double>(in.duration_seconds) * kSecondNs;
  const int64_t period_ns = in.period_seconds * kSecondNs;
  switch (in.shape) {
    case TrafficShape::kSteady:
      for (uint64_t i = 0; i < count; ++i) {
        at.push_back(static_cast<int64_t>(static_cast<double>(i) * kSecondNs / in.rate));
      }
      break;
    case TrafficShape::kBurst: {
      // rate × period at the start of each period, the last one cut to what is left.
      const uint64_t per_burst = std::max<uint64_t>(
          1, static_cast<uint64_t>(in.rate * static_cast<double>(in.period_seconds)));
      for (uint64_t i = 0; i < count; ++i) {
        at.push_back(static_cast<int64_t>(i / per_burst) * period_ns);
      }
      break;
    }
    case TrafficShape::kRamp:
      // Rate r(t) = 2 rate t / D: by time t, rate t² / D requests; request i arrives at
      // t = sqrt(i D / rate).
      for (uint64_t i = 0; i < count; ++i) {
        const double t_s = std::sqrt(static_cast<double>(i) * in.duration_seconds / in.rate);
        at.push_back(static_cast<int64_t>(t_s * kSecondNs));
      }
      break;
    case TrafficShape::kEdge: {
      const int64_t half_ns = static_cast<int64_t>(duration_ns / 2);
      const int64_t boundary_ns = (half_ns + period_ns - 1) / period_ns * period_ns;
      const uint64_t per_side = count / 2;
      for (uint64_t i = 0; i < per_side; ++i) {
        at.push_back(boundary_ns - kSecondNs +
                     static_cast<int64_t>(static_cast<double>(i) * kSecondNs / per_side));
      }
      for (uint64_t i = 0; i < per_side; ++i) {
        at.push_back(boundary_ns +
                     static_cast<int64_t>(static_cast<double>(i) * kSecondNs / per_side));
      }
      break;
    }
  }
  return at;
}

}  // namespace

absl::StatusOr<TrafficShape> ParseTrafficShape(std::string_view name) {
  if (name == "steady") {
    return TrafficShape::kSteady;
  }
  if (name == "burst") {
    return TrafficShape::kBurst;
  }
  if (name == "ramp") {
    return TrafficShape::kRamp;
  }
  if (name == "edge") {
    return TrafficShape::kEdge;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown shape '",
                                                 absl::string_view(name.data(), name.size()),
                                                 "'; use steady, burst, ramp or edge"));
}

absl::StatusOr<SimulationResult> Simulate(const SimulationInput& in) {
  if (in.limit > kMaxRequestsPerPeriod) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit must be at most ", kMaxRequestsPerPeriod));
  }
  if (in.burst > kMaxRequestsPerPeriod) {
    return absl::InvalidArgumentError(
        absl::StrCat("burst must be at most ", kMaxRequestsPerPeriod));
  }
  if (in.period_seconds < 1 || in.period_seconds > kMaxSimulationSeconds) {
    return absl::InvalidArgumentError(
        absl::StrCat("period_seconds must be from 1 to ", kMaxSimulationSeconds));
  }
  if (in.duration_seconds < 1 || in.duration_seconds > kMaxSimulationSeconds) {
    return absl::InvalidArgumentError(
        absl::StrCat("duration_seconds must be from 1 to ", kMaxSimulationSeconds));
  }
  if (in.step_seconds < 1 || in.step_seconds > in.duration_seconds) {
    return absl::InvalidArgumentError("step_seconds must be from 1 to duration_seconds");
  }
  const int64_t steps = (in.duration_seconds + in.step_seconds - 1) / in.step_seconds;
  if (steps > kMaxSimulationSteps) {
    return absl::InvalidArgumentError(absl::StrCat("duration_seconds / step_seconds gives ", steps,
                                                   " steps; at most ", kMaxSimulationSteps,
                                                   " (take a larger step_seconds)"));
  }
  if (!(in.rate > 0) || !std::isfinite(in.rate) ||
      in.rate > static_cast<double>(kMaxSimulatedRequests)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rate must be above 0 and at most ", kMaxSimulatedRequests, " per second"));
  }
  const double wanted = in.shape == TrafficShape::kEdge
                            ? 2 * std::floor(in.rate)
                            : std::floor(in.rate * static_cast<double>(in.duration_seconds));
  if (wanted > static_cast<double>(kMaxSimulatedRequests)) {
    return absl::InvalidArgumentError(absl::StrCat("this trace has ", static_cast<uint64_t>(wanted),
                                                   " requests; at most ", kMaxSimulatedRequests,
                                                   " (lower rate or duration_seconds)"));
  }
  if (in.shape == TrafficShape::kEdge && in.rate < 1) {
    return absl::InvalidArgumentError("rate must be at least 1 for the edge shape");
  }
  if (in.shape == TrafficShape::kEdge) {
    // The boundary is the first one at or after half the duration; both bursts must fit.
    const int64_t half_s = (in.duration_seconds + 1) / 2;
    const int64_t boundary_s =
        (half_s + in.period_seconds - 1) / in.period_seconds * in.period_seconds;
    if (boundary_s + 1 > in.duration_seconds) {
      return absl::InvalidArgumentError(
          "the edge shape needs a window boundary inside the trace: duration_seconds must reach "
          "one second past the first multiple of period_seconds after half of it (e.g. twice "
          "period_seconds)");
    }
  }
  const uint64_t count = static_cast<uint64_t>(wanted);
  const int64_t period_ns = in.period_seconds * kSecondNs;
  const int64_t duration_ns = in.duration_seconds * kSecondNs;
  const int64_t step_ns = in.step_seconds * kSecondNs;

  // Synthetic time starts on a window boundary (fixed windows are aligned to the Unix epoch), far
  // enough from 0 to look like a real clock.
  const int64_t start_ns =
      std::max(period_ns, int64_t{1'000'000'000'000'000'000} / period_ns * period_ns);

  const Algorithm algorithms[] = {Algorithm::kFixedWindow, Algorithm::kSlidingWindow,
                                  Algorithm::kTokenBucket, Algorithm::kLeakyBucket};
  SimulationResult result;
  for (int64_t i = 0; i < steps; ++i) {
    result.step_starts_seconds.push_back(i * in.step_seconds);
  }
  result.offered.assign(static_cast<size_t>(steps), 0);
  const std::vector<int64_t> arrivals = Arrivals(in, count);
  for (int64_t t : arrivals) {
    if (t < duration_ns) {
      ++result.offered[static_cast<size_t>(t / step_ns)];
    }
  }
  for (Algorithm algorithm : algorithms) {
    // As the config loader builds it: burst only for the buckets.
    LimitSpec spec{algorithm, in.limit, period_ns, 0};
    if (algorithm == Algorithm::kTokenBucket || algorithm == Algorithm::kLeakyBucket) {
      spec.burst = in.burst;
    }
    if (absl::Status valid = ValidateLimitSpec(spec); !valid.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          absl::string_view(AlgorithmName(algorithm).data(), AlgorithmName(algorithm).size()), ": ",
          valid.message()));
    }
    AlgorithmSeries series;
    series.algorithm = algorithm;
    series.admitted.assign(static_cast<size_t>(steps), 0);
    KeyState state;
    for (int64_t t : arrivals) {
      if (t >= duration_ns) {
        continue;
      }
      const Outcome outcome = Decide(spec, state, start_ns + t, 1);
      if (outcome.decision.allowed) {
        state = outcome.next;
        ++series.admitted[static_cast<size_t>(t / step_ns)];
        ++series.total;
      }
    }
    result.algorithms.push_back(std::move(series));
  }
  return result;
}

}  // namespace floodgate::core
