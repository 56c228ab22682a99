// Fuzzes the gRPC messages a caller sends: Envoy's RateLimitRequest as protobuf bytes, decoded
// and decided as the native gRPC server does it (ParseFromArray, then
// RateLimitService::ShouldRateLimit: FromEnvoy, validation, the check, ToEnvoy).

#include <cstddef>
#include <cstdint>

#include "envoy/service/ratelimit/v3/rls.pb.h"
#include "fuzz/fuzz_node.h"
#include "src/service/rate_limit_service.h"

namespace rls = envoy::service::ratelimit::v3;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  floodgate::fuzz::Node& node = floodgate::fuzz::Node::Get();
  node.Advance(5'000'000);
  static rls::RateLimitRequest request;
  static rls::RateLimitResponse response;
  request.Clear();
  if (!request.ParseFromArray(data, static_cast<int>(size))) {
    return 0;
  }
  response.Clear();
  (void)node.service().ShouldRateLimit(floodgate::service::CallContext{}, request, &response);
  return 0;
}
