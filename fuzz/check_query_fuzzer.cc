// Fuzzes the query of GET /v1/check (percent-decoding, repeated and missing parameters, hits,
// UTF-8) and, when it parses, the check it describes through the rate limit service
// (validation, matching, the store).

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz/fuzz_node.h"
#include "src/frontends/http/http_util.h"
#include "src/limiter/limiter.h"
#include "src/service/rate_limit_service.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  floodgate::fuzz::Node& node = floodgate::fuzz::Node::Get();
  node.Advance(3'000'000);
  const std::string_view query(reinterpret_cast<const char*>(data), size);
  // Reused across inputs, as a connection reuses its request.
  static floodgate::limiter::CheckRequest request;
  if (!floodgate::frontends::http_internal::ParseCheckQuery(query, node.limits(), request).ok()) {
    return 0;
  }
  floodgate::service::CallContext call{.frontend = floodgate::service::Frontend::kHttp,
                                       .names = floodgate::service::FieldNames::kQuery};
  (void)node.service().Check(call, request);
  return 0;
}
