// Fuzzes what a client sends on an HTTP/1.1 connection: Beast's parser with our header checks
// (RequestParser in http_server.cc), then routing, the /v1/check query, the JSON bodies and the
// response framing (HttpHandlers::Handle, FormatResponse), through AnswerRequestBytes, the
// session's parse-and-answer without a socket. Pipelined requests are answered in turn.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_node.h"
#include "src/frontends/http/http_server.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  floodgate::fuzz::Node& node = floodgate::fuzz::Node::Get();
  node.Advance(7'000'000);  // 7 ms per input: windows roll over during a run
  const floodgate::frontends::HttpServerOptions defaults;
  std::string out;
  floodgate::frontends::http_internal::AnswerRequestBytes(
      std::string_view(reinterpret_cast<const char*>(data), size), node.handlers(),
      node.limits().max_body_bytes, defaults.max_header_bytes, out);
  // Every answer is a whole HTTP/1.1 response.
  if (!out.empty() && out.rfind("HTTP/1.1 ", 0) != 0) {
    __builtin_trap();
  }
  return 0;
}
