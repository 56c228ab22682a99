// Fuzzes the config loader on one domain's YAML, whatever it arrives by (file, admin PUT,
// peer push): libyaml, our reader's bounds on size, aliases and depth, the config model and its
// checks (core::ParseDomainConfig), then BuildConfig.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "src/core/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view yaml(reinterpret_cast<const char*>(data), size);
  auto domain = floodgate::core::ParseDomainConfig(yaml, "fuzz.yaml");
  if (!domain.ok()) {
    if (domain.status().code() != absl::StatusCode::kInvalidArgument) {
      __builtin_trap();  // the contract: every refusal is InvalidArgument
    }
    return 0;
  }
  (void)floodgate::core::BuildConfig({*domain}, 1);
  return 0;
}
