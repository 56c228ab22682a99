// Fuzzes gRPC's framing (grpc_wire.h): the 5-byte length prefix of a unary request body, the
// content-type check and grpc-message percent-encoding.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "src/frontends/grpc/grpc_wire.h"

namespace wire = floodgate::frontends::grpc_wire;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const auto declared = wire::DeclaredLength(body);
  auto parsed = wire::ParseUnaryBody(body, 4096);
  if (parsed.ok()) {
    // One whole message, inside the body, of the declared length.
    if (!declared.has_value() || parsed->size() != *declared ||
        parsed->data() != body.data() + wire::kPrefixBytes ||
        wire::kPrefixBytes + parsed->size() != body.size()) {
      __builtin_trap();
    }
  }
  (void)wire::IsGrpcContentType(body);
  const std::string encoded = wire::PercentEncode(body);
  for (char c : encoded) {
    if (c < 0x20 || c > 0x7e) {
      __builtin_trap();  // every byte outside printable ASCII is escaped
    }
  }
  return 0;
}
