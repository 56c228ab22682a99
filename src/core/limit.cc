#include "floodgate/limit.h"

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace floodgate {
namespace {

// The sliding window and concurrency pack their two counts as two 32-bit halves of one word.
constexpr uint64_t kSlidingWindowMaxRequests = (uint64_t{1} << 32) - 1;

}  // namespace

std::string_view AlgorithmName(Algorithm algorithm) {
  switch (algorithm) {
    case Algorithm::kFixedWindow:
      return "fixed_window";
    case Algorithm::kSlidingWindow:
      return "sliding_window";
    case Algorithm::kTokenBucket:
      return "token_bucket";
    case Algorithm::kLeakyBucket:
      return "leaky_bucket";
    case Algorithm::kConcurrency:
      return "concurrency";
  }
  return "unknown";
}

absl::StatusOr<Algorithm> ParseAlgorithm(std::string_view name) {
  if (name == "fixed_window") {
    return Algorithm::kFixedWindow;
  }
  if (name == "sliding_window") {
    return Algorithm::kSlidingWindow;
  }
  if (name == "token_bucket" || name == "gcra") {
    return Algorithm::kTokenBucket;
  }
  if (name == "leaky_bucket") {
    return Algorithm::kLeakyBucket;
  }
  if (name == "concurrency") {
    return Algorithm::kConcurrency;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown algorithm \"", absl::string_view(name.data(), name.size()),
                   "\"; expected one of fixed_window, sliding_window, token_bucket (or gcra), "
                   "leaky_bucket, concurrency"));
}

absl::Status ValidateLimitSpec(const LimitSpec& spec) {
  switch (spec.algorithm) {
    case Algorithm::kFixedWindow:
    case Algorithm::kSlidingWindow:
    case Algorithm::kTokenBucket:
    case Algorithm::kLeakyBucket:
    case Algorithm::kConcurrency:
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown algorithm value ", static_cast<int>(spec.algorithm)));
  }
  // absl::StrCat takes absl::string_view, which is not std::string_view in Debian's abseil.
  const std::string name(AlgorithmName(spec.algorithm));
  const char* const period_name =
      spec.algorithm == Algorithm::kConcurrency ? "lease (period_ns)" : "period_ns";
  if (spec.period_ns <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": ", period_name, " must be positive, got ", spec.period_ns));
  }
  if (spec.period_ns > kMaxPeriodNs) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", period_name, " of ", spec.period_ns,
                                                   " ns exceeds the maximum of ", kMaxPeriodNs,
                                                   " ns (about 100 years)"));
  }
  if (spec.requests_per_period > kMaxRequestsPerPeriod) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": requests_per_period of ", spec.requests_per_period,
                     " exceeds the maximum of ", kMaxRequestsPerPeriod));
  }
  if (spec.burst > kMaxRequestsPerPeriod) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": burst of ", spec.burst, " exceeds the maximum of ", kMaxRequestsPerPeriod));
  }
  if (spec.algorithm == Algorithm::kSlidingWindow &&
      spec.requests_per_period > kSlidingWindowMaxRequests) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": requests_per_period of ", spec.requests_per_period,
        " is too large; the sliding window stores two 32-bit counters, so it must be at most ",
        kSlidingWindowMaxRequests, " (use fixed_window or token_bucket for larger limits)"));
  }
  if (spec.algorithm == Algorithm::kConcurrency &&
      spec.requests_per_period > kSlidingWindowMaxRequests) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": requests_per_period of ", spec.requests_per_period,
        " is too large; concurrency stores two 32-bit slot counts (one per lease epoch), so it "
        "must be at most ",
        kSlidingWindowMaxRequests));
  }
  if ((spec.algorithm == Algorithm::kTokenBucket || spec.algorithm == Algorithm::kLeakyBucket) &&
      spec.requests_per_period != 0) {
    // The bucket's state is one timestamp at most (capacity x emission interval) ahead of now.
    // Bounding that by kMaxPeriodNs keeps it representable for any realistic clock.
    const unsigned __int128 refill_ns =
        static_cast<unsigned __int128>(spec.period_ns) * spec.Capacity() / spec.requests_per_period;
    if (refill_ns > static_cast<unsigned __int128>(kMaxPeriodNs)) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": the time to refill the bucket (burst x period_ns / requests_per_period = ",
          spec.Capacity(), " x ", spec.period_ns, " / ", spec.requests_per_period,
          ") exceeds the maximum of ", kMaxPeriodNs, " ns (about 100 years)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace floodgate
