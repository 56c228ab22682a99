#pragma once

// Listen and peer addresses as "host:port".

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace floodgate::common {

// Splits "host:port", "[v6-address]:port" or ":port" (host left empty) into its parts.
// InvalidArgument for a missing or out-of-range port or unbalanced brackets.
absl::Status SplitHostPort(std::string_view address, std::string& host, uint16_t& port);

}  // namespace floodgate::common
