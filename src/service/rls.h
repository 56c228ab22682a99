#pragma once

// Conversions between Envoy's RLS v3 messages / our native check messages and the limiter's
// types, and the IETF RateLimit headers: the "convert" step of the check pipeline
// (rate_limit_service.h), and the response side that front ends render.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "envoy/service/ratelimit/v3/rls.pb.h"
#include "floodgate/v1/check.pb.h"
#include "src/limiter/limiter.h"

namespace floodgate::service {

using Header = std::pair<std::string, std::string>;

// envoyproxy/ratelimit's switches for Envoy answers (ShouldRateLimit, POST /json), read from
// its environment variable names as well as our flags (docs/config.md, "Envoy's switches").
struct EnvoyCompat {
  // SHADOW_MODE: an answer that would be OVER_LIMIT is OK (counted in
  // floodgate_envoy_global_shadow_mode_total); descriptor statuses still say OVER_LIMIT.
  bool global_shadow_mode = false;
  // QUOTA_MODE: every descriptor is in quota mode (config.md, "quota_mode"). The limiter applies
  // it (the server copies it to LimiterOptions::global_quota_mode); here for the headers.
  bool global_quota_mode = false;
  // RESPONSE_DYNAMIC_METADATA: the answer carries dynamic_metadata (domain, descriptors,
  // hitsAddend, and the `metadata` of the descriptors that passed).
  bool response_dynamic_metadata = false;
  // LIMIT_RESPONSE_HEADERS_ENABLED: add the limit, remaining and reset headers of the descriptor
  // closest to its limit, under these names (LIMIT_LIMIT_HEADER, LIMIT_REMAINING_HEADER,
  // LIMIT_RESET_HEADER), instead of our RateLimit-Policy / RateLimit headers.
  bool limit_headers = false;
  std::string limit_header = "RateLimit-Limit";
  std::string remaining_header = "RateLimit-Remaining";
  std::string reset_header = "RateLimit-Reset";
};

// Converts an Envoy request. InvalidArgument for an unknown override unit.
absl::StatusOr<limiter::CheckRequest> FromEnvoy(
    const envoy::service::ratelimit::v3::RateLimitRequest& request);

// Fills an Envoy response: overall_code, one status per descriptor (the descriptor's primary
// limit as current_limit, limit_remaining, duration_until_reset), and the RateLimit-Policy /
// RateLimit / Retry-After headers in response_headers_to_add.
void ToEnvoy(const limiter::CheckResponse& response,
             envoy::service::ratelimit::v3::RateLimitResponse* out);

// ToEnvoy, then envoyproxy/ratelimit's switches (`compat`): the limit headers in place of ours,
// dynamic metadata from `request` and the descriptors that passed, and the global shadow mode.
// Returns true when the global shadow mode turned an OVER_LIMIT answer into OK.
bool ToEnvoy(const envoy::service::ratelimit::v3::RateLimitRequest& request,
             const limiter::CheckResponse& response, const EnvoyCompat& compat,
             envoy::service::ratelimit::v3::RateLimitResponse* out);

// Converts a native request. Its `lease` (a release's token) is not part of limiter::CheckRequest:
// callers pass request.lease() to Limiter::Release themselves.
limiter::CheckRequest FromNative(const floodgate::v1::CheckRequest& request);
// Fills a native response; its `lease` is response.lease.
void ToNative(const limiter::CheckResponse& response, floodgate::v1::CheckResponse* out);

// Returns the response headers for a decision, as the IETF httpapi RateLimit headers draft
// names them: `RateLimit-Policy: "name";q=100;w=60, ...` for every applied limit (a token or
// leaky bucket advertises its rate, q per w seconds, and its capacity as
// `floodgate-burst`), `RateLimit: "name";r=42;t=17` for the most constraining one, and
// `Retry-After: seconds` when refused, unless the hits can never pass (RetryAfterSeconds).
// Empty when no limit applied.
std::vector<Header> RateLimitHeaders(const limiter::CheckResponse& response);

// RetryAfterSeconds's answer when the request can never pass: a limit refused more hits than
// it holds (a limit of 0, or hits above its capacity). Waiting does not help.
inline constexpr int64_t kNeverSeconds = -1;

// Returns the seconds a refused caller should wait (rounded up, at least 1), 0 if allowed, or
// kNeverSeconds when waiting cannot help.
int64_t RetryAfterSeconds(const limiter::CheckResponse& response);

// Why a check was refused, for answers that tell callers apart (the native API; Envoy's
// answers know only OVER_LIMIT).
enum class Refusal : uint8_t {
  kNone,         // allowed
  kOverLimit,    // a limit is spent; retry after RetryAfterSeconds
  kNever,        // these hits can never pass (RetryAfterSeconds is kNeverSeconds)
  kUnavailable,  // only limits whose counter could not be asked refused (failure_mode: closed)
};
Refusal RefusalOf(const limiter::CheckResponse& response);

// Returns the native `code` of a response or one descriptor: "OK", "OVER_LIMIT", or
// "UNAVAILABLE" when only unasked counters (failure_mode: closed) refused it.
std::string_view NativeCode(const limiter::CheckResponse& response);
std::string_view NativeCode(const limiter::DescriptorStatus& status);

}  // namespace floodgate::service
