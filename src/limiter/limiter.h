#pragma once

// The limiter: the one entry point front ends call to ask "may these hits pass?".
//
// It matches a request's descriptors against the current config, turns every applicable limit
// into a store op keyed by a seeded hash of domain + descriptor + limit, applies them as one
// atomic transaction (if any limit refuses, none is consumed) and counts per-rule statistics.
//
// Thread-safety: every method may be called from any number of threads. SetConfig swaps an
// immutable snapshot atomically; checks in flight finish on the snapshot they started with.
// Check and Release take no lock of their own between config swaps: each thread caches the
// snapshot it last used, so a thread may keep one retired config alive until its next call.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/container/node_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "floodgate/clock.h"
#include "floodgate/decision.h"
#include "floodgate/store.h"
#include "src/core/config.h"
#include "src/limiter/refusal_cache.h"

namespace floodgate::limiter {

// A limit supplied by the caller instead of the config (Envoy's per-descriptor `limit`).
struct LimitOverride {
  uint64_t requests_per_unit = 0;
  core::TimeUnit unit = core::TimeUnit::kSecond;
};

struct DescriptorRequest {
  std::vector<core::DescriptorEntry> entries;
  std::optional<LimitOverride> limit;
  // Hits for this descriptor; overrides the request's. 0 only reads.
  std::optional<uint64_t> hits_addend;
};

struct CheckRequest {
  std::string domain;
  std::vector<DescriptorRequest> descriptors;
  uint64_t hits_addend = 0;  // 0 means 1, as in Envoy
  // The front end is past its in-flight bounds: in a cluster, limits whose key another node
  // owns are decided by their failure mode at once (StoreOp::shed). Such a refusal is neither
  // cached nor the start of a block, since the owner did not make it.
  bool shed = false;
};

enum class Code : uint8_t { kOk = 1, kOverLimit = 2 };

// Live counters for one rule, named as Envoy names them. Survive config reloads that keep the
// rule's stats key.
struct RuleCounters {
  std::atomic<uint64_t> total_hits{0};
  std::atomic<uint64_t> over_limit{0};
  std::atomic<uint64_t> near_limit{0};
  std::atomic<uint64_t> within_limit{0};
  std::atomic<uint64_t> shadow_mode{0};
  // Refused by the over-limit fast path (refusal_cache.h) without asking the store; also
  // counted in over_limit, as Envoy counts its local cache's refusals.
  std::atomic<uint64_t> over_limit_with_local_cache{0};
};

// The outcome of one limit in a check.
struct LimitResult {
  const core::RateLimitRule* rule = nullptr;  // alive as long as the CheckResponse
  Decision decision;
  bool shadow = false;  // refused, but the rule is in shadow mode so the request passes
};

struct DescriptorStatus {
  Code code = Code::kOk;
  // Every limit that applied to this descriptor, after `replaces`. Empty: no limit (no match,
  // unlimited, or replaced). Inline storage for the usual single limit: no allocation.
  absl::InlinedVector<LimitResult, 1> limits;
  bool unlimited = false;  // matched an `unlimited: true` rule
  // Index into `limits` of the one to report where only one fits (Envoy's current_limit): the
  // first refusing limit, else the one with the least remaining. -1 when `limits` is empty.
  int primary = -1;
};

struct CheckResponse {
  // OVER_LIMIT when a descriptor not in quota mode is, or every quota-mode descriptor is
  // (envoyproxy/ratelimit's rule; docs/config.md, "quota_mode").
  Code overall = Code::kOk;
  // One per request descriptor, in order (inline storage for one: no allocation).
  absl::InlinedVector<DescriptorStatus, 1> descriptors;
  // The clock reading the store decided at (set on every successful Check, with or without
  // limits).
  int64_t decided_at_ns = 0;
  // The request's domain is not in the config: no configured limit applied (limits the caller
  // gave, LimitOverride, still did). Front ends say so, so that a typo does not pass silently.
  bool unknown_domain = false;
  // The lease token of the concurrency slots this check acquired, to pass to Release: a random,
  // unguessable positive value; 0 when the check acquired no slots.
  int64_t lease = 0;
  // Keep the rules that LimitResult points to alive.
  std::shared_ptr<const core::Config> config;
  std::vector<std::unique_ptr<core::RateLimitRule>> override_rules;
};

struct LimiterOptions {
  const Clock* clock = SystemClock::Get();
  // A check's limits above this count are refused with InvalidArgument (bounded work per call).
  size_t max_limits_per_request = 256;
  // near_limit counts the hits that take usage past this fraction of the limit (rounded down),
  // as envoyproxy/ratelimit counts them (NEAR_LIMIT_RATIO).
  double near_limit_ratio = 0.8;
  // Every descriptor is in quota mode (QUOTA_MODE; docs/config.md, "quota_mode").
  bool global_quota_mode = false;
  // Stats keys built from request values (value_to_metric, detailed_metric) kept at most; past
  // this, checks under new such keys count under their rule's key from the config.
  size_t max_request_stats_keys = 100'000;
  // Slots of the over-limit fast path (refusal_cache.h); 0 turns it off.
  size_t refusal_cache_slots = 1 << 16;
};

struct LimiterStats {
  uint64_t checks = 0;
  uint64_t over_limit_checks = 0;
  // Checks refused from the over-limit fast path, without asking the store or the cluster.
  uint64_t fast_refusals = 0;
  uint64_t config_version = 0;
};

class Limiter {
 public:
  // `store` must outlive the limiter. `config` may be an empty Config.
  Limiter(Store* store, KeyHasher hasher, std::shared_ptr<const core::Config> config,
          LimiterOptions options = {});

  // Decides a request. InvalidArgument for an empty domain, no descriptors, an empty entry key
  // or too many limits. An unknown domain (flagged in CheckResponse::unknown_domain) or an
  // unmatched descriptor is OK with no limit.
  absl::StatusOr<CheckResponse> Check(const CheckRequest& request);

  // Gets the outcome of CheckAsync or ReleaseAsync: OK or the error Check or Release returns.
  using Done = absl::AnyInvocable<void(absl::Status status) &&>;
  // Check without waiting, for a caller on an event loop: decides `request` into `response`
  // (default-constructed by the caller) and runs `done` exactly once. When the store decides at
  // once (always with a local store, Store::MaySuspend() false) `done` runs before CheckAsync
  // returns, and the check costs what Check costs (no allocation of its own); when the store
  // must ask another node the check is suspended and `done` runs later on a thread running
  // `loop`. `request` and `response` must stay valid, and untouched, until `done` runs.
  void CheckAsync(const CheckRequest& request, CheckResponse& response,
                  boost::asio::io_context& loop, Done done);

  // Releases the concurrency slots that an earlier allowed Check of the same request acquired
  // (other algorithms are untouched). `lease` is that Check's CheckResponse::lease: each
  // concurrency limit of the request frees exactly the slots that lease holds on it, once.
  // FailedPrecondition when nothing was freed: the lease is unknown (made up, or from another
  // request), already released, or expired (its slots aged out, at the latest two lease periods
  // after the check), or the request matches no concurrency limit.
  absl::Status Release(const CheckRequest& request, int64_t lease);
  // Release without waiting, as CheckAsync: `done` runs once with Release's status, inline or
  // later on `loop`. `request` is read before the call returns.
  void ReleaseAsync(const CheckRequest& request, int64_t lease, boost::asio::io_context& loop,
                    Done done);

  // Returns whether CheckAsync and ReleaseAsync may finish after they return (the store may
  // suspend: a cluster). Front ends skip the bookkeeping of suspended calls when false.
  bool may_suspend() const { return store_->MaySuspend(); }

  // Swaps in a new config; unchanged rules keep their counters and store state.
  void SetConfig(std::shared_ptr<const core::Config> config);
  std::shared_ptr<const core::Config> config() const;

  // Calls `fn(stats_key, counters)` for every rule counter seen so far.
  void ForEachRuleCounters(
      const std::function<void(const std::string&, const RuleCounters&)>& fn) const;

  LimiterStats GetStats() const;
  Store* store() const { return store_; }
  const Clock* clock() const { return options_.clock; }

 private:
  struct Snapshot;
  struct Planned;
  struct Batch;
  struct ThreadState;
  struct InFlight;
  struct Releases;
  // What Begin leaves to do: nothing more (no limits), Finish without the store (the refusal
  // cache answered), or ask the store and then Finish.
  enum class Next { kDone, kFinish, kAskStore };

  // Returns the calling thread's state (cached snapshot, key buffer), shared by every Limiter.
  static ThreadState& Local();
  // Returns the current snapshot through the thread's cache: a lock only when it is stale.
  // The reference stays valid until this thread's next call.
  const Snapshot& CurrentSnapshot(ThreadState& local) const;
  // Returns the current snapshot under snapshot_mu_ (for the cold paths).
  std::shared_ptr<const Snapshot> snapshot() const;
  // Returns a new lease token: positive, never 0.
  int64_t MintLease();
  // Check's work, filling a response built in place: Begin, the store's Apply, Finish.
  absl::Status Decide(const CheckRequest& request, CheckResponse& response);
  // A check up to the store: plans it into `f`, mints its lease, asks the refusal cache.
  absl::StatusOr<Next> Begin(const CheckRequest& request, CheckResponse& response, InFlight& f);
  // A check after the store (`asked`: it did; `committed`: what it said): blocks, the refusal
  // cache, the response's limits and codes, the rule counters. `loop` (may be null: then the
  // store is asked synchronously) is where writes of new blocks may suspend.
  void Finish(InFlight& f, bool asked, bool committed, boost::asio::io_context* loop);
  // Release's plan: the request's concurrency limits as release ops under `lease`.
  absl::Status PlanRelease(const CheckRequest& request, int64_t lease, Releases& releases);
  absl::Status Plan(const CheckRequest& request, const Snapshot& snap, std::string& key_buffer,
                    CheckResponse& response, Batch& batch) const;
  // The over-limit fast path: fills `decisions` and returns true when every op of the request
  // is known refused (refusal_cache.h).
  bool FastRefuse(const Batch& batch, int64_t now_ns, absl::Span<Decision> decisions) const;
  // After the store decided: folds block reads into their limits, starts blocks for limits
  // with block_duration that refused (without waiting, on `loop`, when it is set), and caches
  // refusals.
  void AfterDecision(const Batch& batch, int64_t now_ns, uint32_t cache_generation,
                     absl::Span<Decision> decisions, boost::asio::io_context* loop);
  RuleCounters* CountersFor(const std::string& stats_key) const;
  // The counters of a stats key built from the request (RequestStatsKey), or of `rule_key` once
  // max_request_stats_keys such keys exist.
  RuleCounters* CountersForRequest(const std::string& stats_key, const std::string& rule_key) const;
  RuleCounters* CountersForRule(const Snapshot& snap, const Planned& planned);

  Store* const store_;
  const KeyHasher hasher_;
  const bool wants_state_keys_;  // store_->WantsStateKeys()
  const LimiterOptions options_;
  // Lease tokens: a keyed hash (secret random key) of a counter, so unique in the process and
  // unguessable outside it (see MintLease).
  const KeyHasher lease_hasher_ = KeyHasher::Random();
  std::atomic<uint64_t> leases_minted_{0};

  mutable absl::Mutex snapshot_mu_;
  std::shared_ptr<const Snapshot> snapshot_ ABSL_GUARDED_BY(snapshot_mu_);
  uint64_t snapshot_generation_ ABSL_GUARDED_BY(snapshot_mu_) = 0;
  // snapshot_generation_, readable without the lock. Generations are unique in the process
  // (across limiters), so a thread's cached generation names exactly one snapshot.
  std::atomic<uint64_t> generation_{0};

  mutable absl::Mutex counters_mu_;
  // node_hash_map: counters never move, so snapshots may hold raw pointers.
  mutable absl::node_hash_map<std::string, RuleCounters> counters_ ABSL_GUARDED_BY(counters_mu_);
  mutable size_t request_keys_ ABSL_GUARDED_BY(counters_mu_) = 0;  // keys CountersForRequest made

  std::unique_ptr<RefusalCache> refusals_;  // null when off
  std::atomic<uint64_t> checks_{0};
  std::atomic<uint64_t> over_limit_checks_{0};
  std::atomic<uint64_t> fast_refusals_{0};
};

// Returns the bytes that identify a limit's state: domain, the request's entries, and the
// rule's algorithm, period and slot. Exposed for tests and the cluster layer.
std::string StateKey(std::string_view domain, absl::Span<const core::DescriptorEntry> entries,
                     const core::RateLimitRule& rule);

}  // namespace floodgate::limiter
