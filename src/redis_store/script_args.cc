#include "src/redis_store/script_args.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "floodgate/store.h"
#include "src/core/config.h"

namespace floodgate::redis_store {
namespace {

using Int128 = __int128;

constexpr int64_t kUnitsNs[] = {1'000, 1'000'000, 1'000'000'000};
constexpr int64_t kSecondNs = 1'000'000'000;
// The rule suffix of a state key (src/limiter/state_key.h): algorithm, period_ns, slot.
constexpr size_t kRuleSuffixSize =
    sizeof(uint8_t) + sizeof(int64_t) + sizeof(core::RateLimitRule::slot);
// Fixed seeds of the descriptor hash: the same on every node, so every node names a state alike.
constexpr uint64_t kDescriptorSeed0 = 0x666c6f6f64676174ULL;  // "floodgat"
constexpr uint64_t kDescriptorSeed1 = 0x6520726564697321ULL;  // "e redis!"

// Returns the largest value the script forms for `spec` in units of unit_ns (see the header).
Int128 LargestValue(const LimitSpec& spec, int64_t now_ns, int64_t unit_ns) {
  const Int128 period = spec.period_ns / unit_ns;
  Int128 largest = Int128{now_ns / unit_ns} + 2 * period;
  switch (spec.algorithm) {
    case Algorithm::kSlidingWindow:
      largest = std::max(largest, (Int128{spec.requests_per_period} + 1) * period * 2);
      break;
    case Algorithm::kTokenBucket:
    case Algorithm::kLeakyBucket:
      largest = std::max(largest, period * (2 * Int128{spec.Capacity()} + 2) +
                                      2 * Int128{spec.requests_per_period});
      break;
    case Algorithm::kFixedWindow:
    case Algorithm::kConcurrency:
      largest = std::max<Int128>(largest, Int128{spec.requests_per_period} + 2);
      break;
  }
  return largest;
}

// Returns the script's hits: any count past the capacity decides alike (refused, never
// passable), so they are capped at capacity + 1, which stays exact in a double.
uint64_t ScriptHits(const StoreOp& op) {
  const uint64_t cap =
      op.spec.algorithm == Algorithm::kTokenBucket || op.spec.algorithm == Algorithm::kLeakyBucket
          ? op.spec.Capacity()
          : op.spec.requests_per_period;
  return std::min<uint64_t>(op.hits, cap + 1);
}

int64_t SaturatingTimes(int64_t units, int64_t unit_ns) {
  int64_t ns;
  if (__builtin_mul_overflow(units, unit_ns, &ns)) {
    return INT64_MAX;
  }
  return ns;
}

// Reads one length-prefixed field (src/limiter/state_key.h) at `pos`; false past the end.
bool ReadField(std::string_view bytes, size_t& pos, std::string_view& field) {
  uint32_t len;
  if (bytes.size() - pos < sizeof(len)) {
    return false;
  }
  std::memcpy(&len, bytes.data() + pos, sizeof(len));
  pos += sizeof(len);
  if (bytes.size() - pos < len) {
    return false;
  }
  field = bytes.substr(pos, len);
  pos += len;
  return true;
}

bool IsStrayRelease(const StoreOp& op, const PlannedOp& plan) {
  return op.kind == StoreOp::Kind::kRelease && plan.code != OpCode::kRelease;
}

std::string HashTag(std::string_view prefix, std::string_view state_key, uint32_t descriptor_size) {
  const std::string_view part = state_key.substr(0, descriptor_size);
  std::string tag(prefix);
  tag.push_back('{');
  tag += absl::StrCat(absl::Hex(DescriptorHash(part), absl::kZeroPad16));
  tag.push_back('}');
  return tag;
}

}  // namespace

int64_t ChooseUnitNs(const LimitSpec& spec, int64_t now_ns) {
  for (int64_t unit_ns : kUnitsNs) {
    if (spec.period_ns % unit_ns == 0 && LargestValue(spec, now_ns, unit_ns) < kExact) {
      return unit_ns;
    }
  }
  return 0;
}

absl::Status ValidateRedisLimit(const LimitSpec& spec) {
  if (absl::Status valid = ValidateLimitSpec(spec); !valid.ok()) {
    return valid;
  }
  if (spec.period_ns % kUnitsNs[0] != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the Redis store needs a period in whole microseconds (got ", spec.period_ns, " ns)"));
  }
  if (ChooseUnitNs(spec, kValidityHorizonNs) == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "limit ", spec.requests_per_period, " (capacity ", spec.Capacity(), ") per ",
        spec.period_ns, " ns of ", std::string(AlgorithmName(spec.algorithm)),
        " is too large for the Redis store to decide exactly (its script computes in doubles: "
        "period x count must stay below 2^52 even in seconds)"));
  }
  return absl::OkStatus();
}

uint64_t DescriptorHash(std::string_view descriptor_part) {
  static const KeyHasher hasher(kDescriptorSeed0, kDescriptorSeed1);
  return hasher.Hash(descriptor_part);
}

std::string StateRedisKey(std::string_view prefix, std::string_view state_key,
                          uint32_t descriptor_size) {
  return HashTag(prefix, state_key, descriptor_size).append(state_key);
}

std::string LeaseRedisKey(std::string_view prefix, std::string_view state_key,
                          uint32_t descriptor_size) {
  return HashTag(prefix, state_key, descriptor_size).append("\xff\xff\xff\xffL").append(state_key);
}

bool IsEnvoyPeriod(int64_t period_ns) {
  constexpr int64_t kDividers[] = {1, 60, 3600, 86400, 86400 * 7, 86400 * 30, 86400 * 365};
  return std::any_of(std::begin(kDividers), std::end(kDividers),
                     [&](int64_t d) { return period_ns == d * kSecondNs; });
}

bool UsesEnvoyLayout(const StoreOp& op) {
  return op.kind == StoreOp::Kind::kCheck && op.spec.algorithm == Algorithm::kFixedWindow &&
         IsEnvoyPeriod(op.spec.period_ns) &&
         op.state_key.size() == op.descriptor_size + kRuleSuffixSize;
}

absl::StatusOr<std::string> EnvoyRedisKey(std::string_view envoy_prefix,
                                          std::string_view descriptor_part, int64_t period_ns,
                                          int64_t now_ns) {
  size_t pos = 0;
  std::string_view domain;
  if (!ReadField(descriptor_part, pos, domain)) {
    return absl::InvalidArgumentError("state key: no domain");
  }
  std::string key(envoy_prefix);
  key.append(domain).push_back('_');
  while (pos < descriptor_part.size()) {
    std::string_view entry_key;
    std::string_view value;
    if (!ReadField(descriptor_part, pos, entry_key) || !ReadField(descriptor_part, pos, value)) {
      return absl::InvalidArgumentError("state key: a truncated descriptor entry");
    }
    key.append(entry_key).append("_").append(value).append("_");
  }
  const int64_t divider = period_ns / kSecondNs;
  const int64_t now_s = now_ns / kSecondNs;
  absl::StrAppend(&key, (now_s / divider) * divider);
  return key;
}

PlannedOp PlanOp(const StoreOp& op, int64_t now_ns, const ScriptOptions& options) {
  PlannedOp plan;
  const LimitSpec& spec = op.spec;
  if (op.state_key.empty() || op.descriptor_size > op.state_key.size() ||
      !ValidateLimitSpec(spec).ok()) {
    return plan;  // kRefuse, as core::Decide refuses a spec out of bounds
  }
  plan.unit_ns = ChooseUnitNs(spec, now_ns);
  if (plan.unit_ns == 0) {
    plan.unit_ns = kUnitsNs[0];
    return plan;
  }
  const bool bucket =
      spec.algorithm == Algorithm::kTokenBucket || spec.algorithm == Algorithm::kLeakyBucket;
  if (bucket && spec.requests_per_period == 0) {
    return plan;  // Decide refuses forever, whatever the state
  }
  if (options.envoy_key_layout && UsesEnvoyLayout(op)) {
    absl::StatusOr<std::string> key = EnvoyRedisKey(
        options.envoy_prefix, op.state_key.substr(0, op.descriptor_size), spec.period_ns, now_ns);
    if (key.ok()) {
      plan.code = OpCode::kEnvoyFixed;
      plan.key = *std::move(key);
      return plan;
    }
  }
  plan.key = StateRedisKey(options.key_prefix, op.state_key, op.descriptor_size);
  if (spec.algorithm == Algorithm::kConcurrency) {
    plan.code = op.kind == StoreOp::Kind::kRelease ? OpCode::kRelease : OpCode::kAcquire;
    plan.lease_key = LeaseRedisKey(options.key_prefix, op.state_key, op.descriptor_size);
  } else {
    // A release of another algorithm is a read that never blocks (see EncodeTransaction).
    plan.code = static_cast<OpCode>(spec.algorithm);
  }
  return plan;
}

void EncodeTransaction(absl::Span<const StoreOp> ops, absl::Span<const PlannedOp> plans,
                       absl::Span<const uint32_t> which, int64_t now_ns,
                       std::vector<std::string>& keys, std::vector<std::string>& args) {
  args.push_back(absl::StrCat(which.size()));
  for (int64_t unit_ns : kUnitsNs) {
    args.push_back(absl::StrCat(now_ns / unit_ns));
  }
  for (uint32_t i : which) {
    const StoreOp& op = ops[i];
    const PlannedOp& plan = plans[i];
    const int64_t unit_ns = plan.unit_ns;
    const int64_t now = now_ns / unit_ns;
    const int64_t period = op.spec.period_ns / unit_ns;
    int64_t window_end = 0;  // the end of the window (epoch) now is in
    if (plan.code != OpCode::kRefuse) {
      window_end = now - now % period + period;
    }
    const int unit_index = unit_ns == kUnitsNs[0] ? 1 : unit_ns == kUnitsNs[1] ? 2 : 3;
    const uint64_t hits = op.kind == StoreOp::Kind::kRelease ? 0 : ScriptHits(op);
    // A release of a non-concurrency limit frees nothing and never blocks, as in the memory
    // store: sent as a shadow read, reported not allowed (DecodeTransaction).
    const bool shadow = op.shadow || IsStrayRelease(op, plan);
    args.push_back(absl::StrCat(2 * static_cast<int>(plan.code) + (shadow ? 1 : 0)));
    args.push_back(absl::StrCat(hits));
    args.push_back(absl::StrCat(period));
    args.push_back(absl::StrCat(op.spec.requests_per_period));
    args.push_back(absl::StrCat(op.spec.Capacity()));
    args.push_back(absl::StrCat(window_end));
    args.push_back(absl::StrCat(unit_index));
    args.push_back(absl::StrCat(op.lease));
    if (plan.code != OpCode::kRefuse) {
      keys.push_back(plan.key);
    }
    if (plan.code == OpCode::kAcquire || plan.code == OpCode::kRelease) {
      keys.push_back(plan.lease_key);
    }
  }
}

absl::Status DecodeTransaction(const redis::Reply& reply, absl::Span<const StoreOp> ops,
                               absl::Span<const PlannedOp> plans, absl::Span<const uint32_t> which,
                               absl::Span<Decision> decisions, bool* committed) {
  if (reply.type == redis::Reply::Type::kError) {
    return absl::InvalidArgumentError(absl::StrCat("script error: ", reply.str));
  }
  if (reply.type != redis::Reply::Type::kArray || reply.elements.size() != 1 + 5 * which.size()) {
    return absl::InvalidArgumentError("script reply: not an array of the transaction's size");
  }
  for (const redis::Reply& e : reply.elements) {
    if (e.type != redis::Reply::Type::kInteger) {
      return absl::InvalidArgumentError("script reply: not an integer");
    }
  }
  const auto value = [&](size_t k) { return reply.elements[k].integer; };
  if (value(0) != 0 && value(0) != 1) {
    return absl::InvalidArgumentError("script reply: bad commit flag");
  }
  for (size_t j = 0; j < which.size(); ++j) {
    const int64_t allowed = value(1 + 5 * j);
    const int64_t remaining = value(2 + 5 * j);
    const int64_t retry = value(3 + 5 * j);
    const int64_t reset = value(4 + 5 * j);
    const int64_t delay = value(5 + 5 * j);
    if ((allowed != 0 && allowed != 1) || remaining < 0 || retry < -1 || reset < 0 || delay < 0) {
      return absl::InvalidArgumentError("script reply: a value out of range");
    }
    const StoreOp& op = ops[which[j]];
    const PlannedOp& plan = plans[which[j]];
    Decision& d = decisions[which[j]];
    d = Decision{};
    d.allowed = allowed == 1;
    if (plan.code == OpCode::kRefuse) {
      d.limit = 0;  // core::Decide's RefuseForever
    } else if (op.spec.algorithm == Algorithm::kTokenBucket ||
               op.spec.algorithm == Algorithm::kLeakyBucket) {
      d.limit = op.spec.Capacity();
    } else {
      d.limit = op.spec.requests_per_period;
    }
    d.remaining = static_cast<uint64_t>(remaining);
    d.retry_after_ns = retry < 0 ? Decision::kNever : SaturatingTimes(retry, plan.unit_ns);
    d.reset_after_ns = SaturatingTimes(reset, plan.unit_ns);
    d.delay_ns = SaturatingTimes(delay, plan.unit_ns);
    if (IsStrayRelease(op, plan)) {
      d.allowed = false;  // no lease of this limit to free
      d.retry_after_ns = 0;
    }
  }
  *committed = value(0) == 1;
  return absl::OkStatus();
}

}  // namespace floodgate::redis_store
