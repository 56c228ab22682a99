// Fuzzes the JSON bodies: POST /v1/check and POST /v1/release (our native CheckRequest), and
// POST /json (Envoy's RateLimitRequest), through the HTTP handlers: protobuf's JSON parser, our
// rewording of its errors (JsonErrorInOurTerms), the conversions and the check. The first byte
// picks the endpoint, the rest is the body.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include <boost/beast/http/verb.hpp>

#include "fuzz/fuzz_node.h"
#include "src/frontends/http/http_handlers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) {
    return 0;
  }
  floodgate::fuzz::Node& node = floodgate::fuzz::Node::Get();
  node.Advance(5'000'000);
  static constexpr std::string_view kTargets[] = {"/v1/check", "/v1/release", "/json"};
  const std::string_view target = kTargets[data[0] % 3];
  const auto from_loopback = [] { return false; };
  const floodgate::frontends::HttpRequest request{
      .method = boost::beast::http::verb::post,
      .target = target,
      .body = std::string_view(reinterpret_cast<const char*>(data + 1), size - 1),
      .from_loopback = from_loopback};
  const floodgate::frontends::HttpReply reply = node.handlers().Handle(request, node.scratch());
  if (reply.status < 200 || reply.status > 599) {
    __builtin_trap();
  }
  return 0;
}
