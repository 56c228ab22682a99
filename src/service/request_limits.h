#pragma once

// Size limits on what a caller may send, shared by every front end, each with a clear error.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "src/common/text.h"
#include "src/core/config.h"
#include "src/limiter/limiter.h"

namespace floodgate::service {

struct RequestLimits {
  size_t max_body_bytes = 64 * 1024;
  // An admin config write (HTTP PUT /v1/config/{domain}) carries a whole config file: it may be
  // as large as `floodgate validate` and the config loader accept.
  size_t max_config_body_bytes = core::kMaxConfigFileBytes;
  size_t max_descriptors = 64;
  size_t max_entries = 16;  // per descriptor
  size_t max_key_bytes = 128;
  size_t max_value_bytes = 512;
  size_t max_domain_bytes = 128;
  uint64_t max_hits = 1'000'000'000;
};

// How the caller wrote the request, so that errors name the fields it wrote.
enum class FieldNames : uint8_t {
  kNative,  // the JSON of POST /v1/check: `hits`, `descriptors[0].entries[1].value`
  kQuery,   // GET /v1/check's query: query parameter `hits`, query parameter `user`
  kEnvoy,   // Envoy's RateLimitRequest: `hits_addend`, `descriptors[0].entries[1].value`
};

// Returns InvalidArgument naming the first field that breaks a limit or is not valid UTF-8, in
// the caller's terms (`names`), with the value's size and what is allowed.
absl::Status ValidateRequest(const limiter::CheckRequest& request, const RequestLimits& limits,
                             FieldNames names = FieldNames::kNative);

}  // namespace floodgate::service
