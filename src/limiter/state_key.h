#pragma once

// State keys: the bytes that name one limit's state for one descriptor (hashed into the store's
// key). Internal to the limiter; StateKey in limiter.h is the public form.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/types/span.h"
#include "src/core/config.h"

namespace floodgate::limiter {

// Sizes `key` for one state key and writes its descriptor part (domain and entries); returns
// where the rule's suffix goes. One descriptor's limits differ only in that suffix.
size_t PutDescriptorPart(std::string& key, std::string_view domain,
                         absl::Span<const core::DescriptorEntry> entries);

// Writes `rule`'s suffix at `out` (where PutDescriptorPart said).
void PutRulePart(char* out, const core::RateLimitRule& rule);

}  // namespace floodgate::limiter
