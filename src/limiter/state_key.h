#pragma once

// State keys: the bytes that name one limit's state for one descriptor (hashed into the store's
// key). Internal to the limiter; StateKey in limiter.h is the public form.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/types/span.h"
#include "floodgate/store.h"
#include "src/core/config.h"

namespace floodgate::limiter {

namespace state_key_internal {

// State keys are length-prefixed fields, so no choice of key or value can make two different
// descriptors collide: the domain, every entry's key and value, then the rule's suffix.
inline constexpr size_t kLengthSize = sizeof(uint32_t);
// Algorithm, period and slot, but not the count: lowering 100/min to 50/min keeps the usage.
inline constexpr size_t kRuleSuffixSize =
    sizeof(uint8_t) + sizeof(LimitSpec::period_ns) + sizeof(core::RateLimitRule::slot);
static_assert(sizeof(Algorithm) == sizeof(uint8_t));

inline char* PutField(char* out, std::string_view field) {
  const uint32_t len = static_cast<uint32_t>(field.size());
  std::memcpy(out, &len, sizeof(len));
  if (!field.empty()) {  // a default string_view's data() is null, which memcpy may not take
    std::memcpy(out + sizeof(len), field.data(), field.size());
  }
  return out + sizeof(len) + field.size();
}

}  // namespace state_key_internal

// Sizes `key` for one state key and writes its descriptor part (domain and entries); returns
// where the rule's suffix goes. One descriptor's limits differ only in that suffix. Inline: it
// is on every check's path.
inline size_t PutDescriptorPart(std::string& key, std::string_view domain,
                                absl::Span<const core::DescriptorEntry> entries) {
  size_t size = state_key_internal::kLengthSize + domain.size();
  for (const core::DescriptorEntry& entry : entries) {
    size += 2 * state_key_internal::kLengthSize + entry.key.size() + entry.value.size();
  }
  key.resize(size + state_key_internal::kRuleSuffixSize);
  char* out = state_key_internal::PutField(key.data(), domain);
  for (const core::DescriptorEntry& entry : entries) {
    out = state_key_internal::PutField(out, entry.key);
    out = state_key_internal::PutField(out, entry.value);
  }
  return size;
}

// Writes `rule`'s suffix at `out` (where PutDescriptorPart said).
inline void PutRulePart(char* out, const core::RateLimitRule& rule) {
  out[0] = static_cast<char>(rule.spec.algorithm);
  std::memcpy(out + 1, &rule.spec.period_ns, sizeof(rule.spec.period_ns));
  std::memcpy(out + 1 + sizeof(rule.spec.period_ns), &rule.slot, sizeof(rule.slot));
}

// Where a rule's block (block_duration) lives: a key derived from the limit's own (its state
// key is the limit's with 'B' appended).
inline uint64_t BlockKey(uint64_t key_hash) {
  const uint64_t k = (key_hash ^ 0x626C6F636B6B6579ULL) * 0xD6E8FEB86659FD93ULL;
  return k != 0 ? k : 1;
}

// The block's limit: one hit per block_duration with no burst.
inline LimitSpec BlockSpec(int64_t block_duration_ns) {
  return LimitSpec{.algorithm = Algorithm::kTokenBucket,
                   .requests_per_period = 1,
                   .period_ns = block_duration_ns,
                   .burst = 1};
}

// For a store that wants state keys (Store::WantsStateKeys): the batch keeps them end to end.
// Appends the state key in `key` for the op just added (its view is pointed at `keys` once the
// batch is planned: PointStateKeys), with `extra` appended when not 0.
inline void KeepStateKey(std::string& keys, StoreOp& op, std::string_view key,
                         size_t descriptor_size, char extra = 0) {
  keys.append(key);
  if (extra != 0) {
    keys.push_back(extra);
  }
  op.state_key =
      std::string_view(keys.data(), key.size() + (extra != 0 ? 1 : 0));  // size only, for now
  op.descriptor_size = static_cast<uint32_t>(descriptor_size);
}

// Points the ops' state keys into `keys`, which holds them in op order.
inline void PointStateKeys(absl::Span<StoreOp> ops, const std::string& keys) {
  size_t at = 0;
  for (StoreOp& op : ops) {
    op.state_key = std::string_view(keys.data() + at, op.state_key.size());
    at += op.state_key.size();
  }
}

}  // namespace floodgate::limiter
