#pragma once

// Conversions between Envoy's RLS v3 messages / our native check messages and the limiter's
// types, and the IETF RateLimit headers. Shared by the gRPC and HTTP front ends.

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "envoy/service/ratelimit/v3/rls.pb.h"
#include "floodgate/v1/check.pb.h"
#include "src/limiter/limiter.h"
#include "src/service/metrics.h"
#include "src/service/request_limits.h"

namespace floodgate::server {

using Header = std::pair<std::string, std::string>;

// Converts an Envoy request. InvalidArgument for an unknown override unit.
absl::StatusOr<limiter::CheckRequest> FromEnvoy(
    const envoy::service::ratelimit::v3::RateLimitRequest& request);

// Fills an Envoy response: overall_code, one status per descriptor (the descriptor's primary
// limit as current_limit, limit_remaining, duration_until_reset), and the RateLimit-Policy /
// RateLimit / Retry-After headers in response_headers_to_add.
void ToEnvoy(const limiter::CheckResponse& response,
             envoy::service::ratelimit::v3::RateLimitResponse* out);

// Decides one ShouldRateLimit call for a gRPC front end: converts, validates against `limits`,
// checks, fills `response`, and counts the call in `metrics` (requests, bad_requests, errors,
// over_limit, latency). Returns the status to answer with: InvalidArgument for bad input, the
// limiter's error otherwise. Thread-safe as Limiter::Check is. With `shed` (the front end is past
// its in-flight bounds) the check does not wait for other nodes (CheckRequest::shed) and counts
// in metrics.shed.
absl::Status ShouldRateLimit(limiter::Limiter& limiter, const RequestLimits& limits,
                             FrontendMetrics& metrics,
                             const envoy::service::ratelimit::v3::RateLimitRequest& request,
                             envoy::service::ratelimit::v3::RateLimitResponse* response,
                             bool shed = false);

// Converts a native request. Its `lease` (a release's token) is not part of limiter::CheckRequest:
// callers pass request.lease() to Limiter::Release themselves.
limiter::CheckRequest FromNative(const floodgate::v1::CheckRequest& request);
// Fills a native response; its `lease` is response.decided_at_ns.
void ToNative(const limiter::CheckResponse& response, floodgate::v1::CheckResponse* out);

// Returns the response headers for a decision, as the IETF httpapi RateLimit headers draft
// names them: `RateLimit-Policy: "name";q=100;w=60, ...` for every applied limit,
// `RateLimit: "name";r=42;t=17` for the most constraining one, and `Retry-After: seconds` when
// refused. Empty when no limit applied.
std::vector<Header> RateLimitHeaders(const limiter::CheckResponse& response);

// Returns the seconds a refused caller should wait (rounded up, at least 1), or 0 if allowed.
int64_t RetryAfterSeconds(const limiter::CheckResponse& response);

}  // namespace floodgate::server
