#pragma once

// Small text helpers every layer above core may use.
//
// Thread-safety: every function is pure.

#include <string_view>

#include "absl/strings/string_view.h"

namespace floodgate::common {

// Debian's abseil has its own string_view type, distinct from std::string_view.
inline absl::string_view AbslView(std::string_view s) { return {s.data(), s.size()}; }
inline std::string_view StdView(absl::string_view s) { return {s.data(), s.size()}; }

// Returns whether `text` is well-formed UTF-8 (no overlong forms, surrogates or values past
// U+10FFFF).
bool IsValidUtf8(std::string_view text);

}  // namespace floodgate::common
