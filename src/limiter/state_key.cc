#include "src/limiter/state_key.h"

#include <cstring>

#include "src/limiter/limiter.h"

namespace floodgate::limiter {
namespace {

// State keys are length-prefixed fields, so no choice of key or value can make two different
// descriptors collide: the domain, every entry's key and value, then the rule's suffix.
constexpr size_t kLengthSize = sizeof(uint32_t);
// Algorithm, period and slot, but not the count: lowering 100/min to 50/min keeps the usage.
constexpr size_t kRuleSuffixSize =
    sizeof(uint8_t) + sizeof(LimitSpec::period_ns) + sizeof(core::RateLimitRule::slot);
static_assert(sizeof(Algorithm) == sizeof(uint8_t));

char* PutField(char* out, std::string_view field) {
  const uint32_t len = static_cast<uint32_t>(field.size());
  std::memcpy(out, &len, sizeof(len));
  if (!field.empty()) {  // a default string_view's data() is null, which memcpy may not take
    std::memcpy(out + sizeof(len), field.data(), field.size());
  }
  return out + sizeof(len) + field.size();
}

}  // namespace

size_t PutDescriptorPart(std::string& key, std::string_view domain,
                         absl::Span<const core::DescriptorEntry> entries) {
  size_t size = kLengthSize + domain.size();
  for (const core::DescriptorEntry& entry : entries) {
    size += 2 * kLengthSize + entry.key.size() + entry.value.size();
  }
  key.resize(size + kRuleSuffixSize);
  char* out = PutField(key.data(), domain);
  for (const core::DescriptorEntry& entry : entries) {
    out = PutField(out, entry.key);
    out = PutField(out, entry.value);
  }
  return size;
}

void PutRulePart(char* out, const core::RateLimitRule& rule) {
  out[0] = static_cast<char>(rule.spec.algorithm);
  std::memcpy(out + 1, &rule.spec.period_ns, sizeof(rule.spec.period_ns));
  std::memcpy(out + 1 + sizeof(rule.spec.period_ns), &rule.slot, sizeof(rule.slot));
}

std::string StateKey(std::string_view domain, absl::Span<const core::DescriptorEntry> entries,
                     const core::RateLimitRule& rule) {
  std::string key;
  const size_t suffix = PutDescriptorPart(key, domain, entries);
  PutRulePart(key.data() + suffix, rule);
  return key;
}

}  // namespace floodgate::limiter
