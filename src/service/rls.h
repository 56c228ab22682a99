#pragma once

// Conversions between Envoy's RLS v3 messages / our native check messages and the limiter's
// types, and the IETF RateLimit headers: the "convert" step of the check pipeline
// (rate_limit_service.h), and the response side that front ends render.

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "envoy/service/ratelimit/v3/rls.pb.h"
#include "floodgate/v1/check.pb.h"
#include "src/limiter/limiter.h"

namespace floodgate::service {

using Header = std::pair<std::string, std::string>;

// Converts an Envoy request. InvalidArgument for an unknown override unit.
absl::StatusOr<limiter::CheckRequest> FromEnvoy(
    const envoy::service::ratelimit::v3::RateLimitRequest& request);

// Fills an Envoy response: overall_code, one status per descriptor (the descriptor's primary
// limit as current_limit, limit_remaining, duration_until_reset), and the RateLimit-Policy /
// RateLimit / Retry-After headers in response_headers_to_add.
void ToEnvoy(const limiter::CheckResponse& response,
             envoy::service::ratelimit::v3::RateLimitResponse* out);

// Converts a native request. Its `lease` (a release's token) is not part of limiter::CheckRequest:
// callers pass request.lease() to Limiter::Release themselves.
limiter::CheckRequest FromNative(const floodgate::v1::CheckRequest& request);
// Fills a native response; its `lease` is response.lease.
void ToNative(const limiter::CheckResponse& response, floodgate::v1::CheckResponse* out);

// Returns the response headers for a decision, as the IETF httpapi RateLimit headers draft
// names them: `RateLimit-Policy: "name";q=100;w=60, ...` for every applied limit,
// `RateLimit: "name";r=42;t=17` for the most constraining one, and `Retry-After: seconds` when
// refused. Empty when no limit applied.
std::vector<Header> RateLimitHeaders(const limiter::CheckResponse& response);

// Returns the seconds a refused caller should wait (rounded up, at least 1), or 0 if allowed.
int64_t RetryAfterSeconds(const limiter::CheckResponse& response);

}  // namespace floodgate::service
