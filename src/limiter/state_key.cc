#include "src/limiter/state_key.h"

#include "src/limiter/limiter.h"

namespace floodgate::limiter {

std::string StateKey(std::string_view domain, absl::Span<const core::DescriptorEntry> entries,
                     const core::RateLimitRule& rule) {
  std::string key;
  const size_t suffix = PutDescriptorPart(key, domain, entries);
  PutRulePart(key.data() + suffix, rule);
  return key;
}

}  // namespace floodgate::limiter
