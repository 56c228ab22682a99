#pragma once

// The pure half of the Redis store: which time unit a limit is computed in, the Redis keys of a
// state, and the script's arguments and replies (the script: redis_scripts.h). No I/O; every
// function is thread-safe.
//
// Units. Redis' Lua has doubles only, exact for integers below 2^53. Each op is computed in the
// finest of microseconds, milliseconds and seconds that divides its period and keeps every value
// the script forms below 2^53 (ChooseUnitNs has the bounds per algorithm): `now` and durations
// go to the script in that unit, and durations come back rounded up to it, so acting on them
// never lands early. Decisions are those of core::Decide at now rounded down to the unit: at
// unit-aligned times (all of them for microseconds and any real clock's checks to within 1 µs)
// allowed and remaining are identical and durations within one unit above; between units the
// check is decided as if it came up to one unit earlier, which never admits more. A limit no unit
// can hold exactly is refused (ValidateRedisLimit says so at config time; at run time its ops
// are refused with retry_after kNever and counted in RedisStoreStats::unsupported_ops).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "floodgate/decision.h"
#include "floodgate/limit.h"
#include "floodgate/store.h"
#include "src/redis/redis_client.h"

namespace floodgate::redis_store {

// What the script does with an op (its code argument is 2 * code + shadow).
enum class OpCode : uint8_t {
  kFixedWindow = 0,
  kSlidingWindow = 1,
  kTokenBucket = 2,
  kLeakyBucket = 3,
  kAcquire = 4,     // concurrency kCheck (two keys: state, lease book)
  kRelease = 5,     // concurrency kRelease (two keys)
  kEnvoyFixed = 6,  // fixed window under envoyproxy/ratelimit's key: a plain counter
  kRefuse = 7,      // refused under any state (no key): rate 0, out of bounds, no exact unit
};

inline constexpr int kArgsPerTransaction = 4;  // op count, now in µs, ms, s
inline constexpr int kArgsPerOp =
    8;  // code, hits, period, limit, capacity, window end, unit, lease
inline constexpr int64_t kExact = int64_t{1} << 53;  // doubles hold integers below it exactly
// The time ValidateRedisLimit checks a limit for (2100-01-01): a limit valid for it stays valid
// until then.
inline constexpr int64_t kValidityHorizonNs = 4'102'444'800LL * 1'000'000'000LL;

// Returns the nanoseconds per unit (1e3, 1e6 or 1e9) in which the script decides `spec` at
// now_ns exactly, or 0 when none can. Every value stays below 2^53 in it:
//   all:              now + 2 * period
//   sliding window:   (limit + 1) * period * 2          (the products prev * elapsed, x * period)
//   token/leaky:      period * (2 * capacity + 2) + 2 * rate   (scaled times, see algorithms.cc)
// The unit must divide period_ns. Requires ValidateLimitSpec(spec) ok and now_ns >= 0.
int64_t ChooseUnitNs(const LimitSpec& spec, int64_t now_ns);

// Returns OK if the Redis store decides `spec` exactly until kValidityHorizonNs, else
// InvalidArgument naming the bound it breaks. (With envoy_key_layout, a fixed window whose
// period is not one of Envoy's units is kept under our own layout: also OK.)
absl::Status ValidateRedisLimit(const LimitSpec& spec);

// Returns the fixed-seed 64-bit hash of a descriptor part (the same on every node).
uint64_t DescriptorHash(std::string_view descriptor_part);

// Returns `<prefix>{<16 hex digits of DescriptorHash>}<state_key>`: one descriptor's limits share
// a Redis Cluster hash slot, and two state keys map to the same Redis key only if equal.
std::string StateRedisKey(std::string_view prefix, std::string_view state_key,
                          uint32_t descriptor_size);
// Returns the key of a concurrency state's lease book: the state key's hash tag, then bytes no
// state key starts with (a domain length of 2^32 - 1), then the state key.
std::string LeaseRedisKey(std::string_view prefix, std::string_view state_key,
                          uint32_t descriptor_size);

// Returns whether period_ns is one of envoyproxy/ratelimit's units (second, minute, hour, day,
// week, month = 30 days, year = 365 days: its UnitToDivider).
bool IsEnvoyPeriod(int64_t period_ns);
// Returns whether `op` is kept under envoyproxy/ratelimit's key with envoy_key_layout: a fixed
// window kCheck with an Envoy period, not a block_duration's block (state key ending in 'B').
bool UsesEnvoyLayout(const StoreOp& op);
// Returns envoyproxy/ratelimit's cache key (its CacheKeyGenerator): envoy_prefix + domain + "_" +
// for each entry key + "_" + value + "_", then the window start in Unix seconds. The domain and
// entries come from the state key's descriptor part; InvalidArgument when it does not parse.
absl::StatusOr<std::string> EnvoyRedisKey(std::string_view envoy_prefix,
                                          std::string_view descriptor_part, int64_t period_ns,
                                          int64_t now_ns);

// One op as the script gets it.
struct PlannedOp {
  OpCode code = OpCode::kRefuse;
  int64_t unit_ns = 1'000;
  std::string key;        // empty for kRefuse
  std::string lease_key;  // kAcquire and kRelease
};

struct ScriptOptions {
  std::string key_prefix = "fg:";
  bool envoy_key_layout = false;
  std::string envoy_prefix;
};

// Returns the plan of `op` at now_ns. An op with no state key is refused (kRefuse): the store
// needs the bytes to name its state.
PlannedOp PlanOp(const StoreOp& op, int64_t now_ns, const ScriptOptions& options);

// Appends one transaction (the ops `which` of `ops`, planned in `plans`) to a script call: its
// keys to `keys`, its arguments to `args`.
void EncodeTransaction(absl::Span<const StoreOp> ops, absl::Span<const PlannedOp> plans,
                       absl::Span<const uint32_t> which, int64_t now_ns,
                       std::vector<std::string>& keys, std::vector<std::string>& args);

// Reads one transaction's reply (an array: committed, then 5 integers per op) into
// decisions[which[i]]; sets *committed. InvalidArgument for an error reply or any reply of the
// wrong shape (decisions are then partly written: the caller overwrites them).
absl::Status DecodeTransaction(const redis::Reply& reply, absl::Span<const StoreOp> ops,
                               absl::Span<const PlannedOp> plans, absl::Span<const uint32_t> which,
                               absl::Span<Decision> decisions, bool* committed);

}  // namespace floodgate::redis_store
