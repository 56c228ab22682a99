#include "src/limiter/limiter.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/utility/utility.h"
#include "floodgate/status_macros.h"
#include "src/limiter/state_key.h"

namespace floodgate::limiter {

// How the hot path avoids work (a Check of one descriptor under one limit allocates nothing):
//  - The snapshot is read through a per-thread cache validated by one atomic load (see
//    CurrentSnapshot); the mutex is taken only after a SetConfig.
//  - Ops, bookkeeping, matches and the response keep their elements inline (InlinedVector).
//  - State keys are written into a per-thread buffer that keeps its capacity; the descriptor
//    part is written once per descriptor and only the rule's suffix per limit.
//  - Domains are found in a table of the snapshot by string_view (no std::string is built), rule
//    counters through a map from rule to counters resolved at SetConfig.

namespace {

// Inline capacities: the usual request has a few descriptors under a few limits.
constexpr size_t kInlineOps = 4;
constexpr size_t kInlineDescriptors = 4;

// Source of snapshot generations for every Limiter in the process: a generation names one
// snapshot of one limiter forever, so a thread's cache can never mistake another limiter's (or
// a destroyed limiter's) snapshot for the current one.
std::atomic<uint64_t> next_generation{1};

}  // namespace

struct Limiter::Snapshot {
  std::shared_ptr<const core::Config> config;
  // config->domains by name (the names point into config), so a check does not build a
  // std::string to search the ordered map. Most configs have a handful of domains, which a
  // linear scan finds faster than hashing the name; larger ones also get a hash map
  // (absl::string_view keys: this abseil's string_view is not std::string_view, and only its
  // own gets abseil's fast string hash).
  std::vector<std::pair<std::string_view, const core::DomainConfig*>> domain_list;
  absl::flat_hash_map<absl::string_view, const core::DomainConfig*> domain_map;
  // Counters of every rule without detailed_metric, resolved once per config swap so the hot
  // path does no string hashing for stats.
  absl::flat_hash_map<const core::RateLimitRule*, RuleCounters*> counters;

  static constexpr size_t kMaxLinearDomains = 8;

  const core::DomainConfig* FindDomain(std::string_view name) const {
    if (domain_list.size() <= kMaxLinearDomains) {
      for (const auto& [domain_name, domain] : domain_list) {
        if (domain_name == name) {
          return domain;
        }
      }
      return nullptr;
    }
    auto it = domain_map.find(absl::string_view(name.data(), name.size()));
    return it == domain_map.end() ? nullptr : it->second;
  }
};

// One store op's bookkeeping: which descriptor and rule it came from.
struct Limiter::Planned {
  size_t descriptor = 0;
  const core::RateLimitRule* rule = nullptr;
  uint64_t hits = 0;
  // The rule's counters when its stats key depends on the request (RequestStatsKey) or it is
  // a caller's override; null: the snapshot's.
  RuleCounters* counters = nullptr;
  // The read of the rule's block (block_duration), not a limit of its own: its refusal refuses
  // the op before it, which it follows.
  bool block = false;
};

// The store ops a request turns into, with planned[k] describing ops[k].
struct Limiter::Batch {
  absl::InlinedVector<StoreOp, kInlineOps> ops;
  absl::InlinedVector<Planned, kInlineOps> planned;
  // The ops' state keys, end to end, for a store that wants them (Store::WantsStateKeys).
  std::string keys;
};

// What a thread keeps between calls, for whichever Limiter it last used.
struct Limiter::ThreadState {
  // The snapshot the thread last read and its generation (0: none yet; real ones start at 1).
  uint64_t generation = 0;
  // Owns the snapshot through a control block of this thread's own (see CurrentSnapshot).
  std::shared_ptr<const Snapshot> snapshot;
  // Scratch space for state keys; keeps its capacity between calls.
  std::string key;
};

namespace {

// Whether a refusal of `hits` under `spec` holds until its retry_after whatever happens
// meanwhile (no release can free capacity sooner): the condition for caching it.
bool RefusalIsCacheable(const LimitSpec& spec, uint64_t hits, const Decision& d) {
  return spec.algorithm != Algorithm::kConcurrency && hits == 1 && d.retry_after_ns > 0;
}

template <typename Fn>
void ForEachRule(const core::DescriptorNode& node, Fn&& fn) {
  for (const core::RateLimitRule& rule : node.limits) {
    fn(rule);
  }
  for (const core::DescriptorNode& child : node.children) {
    ForEachRule(child, fn);
  }
}

// Checks what every request needs: a domain, and descriptors whose entries all have keys.
absl::Status ValidateRequest(const CheckRequest& request) {
  if (request.domain.empty()) {
    return absl::InvalidArgumentError("rate limit domain must not be empty");
  }
  if (request.descriptors.empty()) {
    return absl::InvalidArgumentError("rate limit descriptor list must not be empty");
  }
  for (size_t i = 0; i < request.descriptors.size(); ++i) {
    const DescriptorRequest& desc = request.descriptors[i];
    if (desc.entries.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("descriptor ", i, " has no entries"));
    }
    for (const core::DescriptorEntry& entry : desc.entries) {
      if (entry.key.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("descriptor ", i, " has an entry with no key"));
      }
    }
  }
  return absl::OkStatus();
}

// The config node each descriptor matched (nullptr: none, or the caller gave its own limit).
using MatchedNodes = absl::InlinedVector<const core::DescriptorNode*, kInlineDescriptors>;

// Matches every descriptor first, since `replaces` works across the whole request, and collects
// the names replaced. `replaced` stays empty (and unallocated) unless some matched rule replaces
// another.
void MatchDescriptors(const CheckRequest& request, const core::DomainConfig* domain,
                      MatchedNodes& matched, absl::flat_hash_set<std::string_view>& replaced) {
  if (domain == nullptr) {
    return;  // an unknown domain: no limit, not even the caller's own (as Envoy)
  }
  for (size_t i = 0; i < request.descriptors.size(); ++i) {
    const DescriptorRequest& desc = request.descriptors[i];
    if (desc.limit.has_value()) {
      continue;  // the caller's override wins over the config
    }
    matched[i] = domain->Match(desc.entries);
    if (matched[i] == nullptr) {
      continue;
    }
    for (const core::RateLimitRule& rule : matched[i]->limits) {
      for (const std::string& name : rule.replaces) {
        replaced.insert(name);
      }
    }
  }
}

// Builds the rule of a descriptor's own limit (a fixed window, as Envoy's override), owned by
// `response`. InvalidArgument when the limit is out of bounds.
absl::StatusOr<const core::RateLimitRule*> AddOverrideRule(std::string_view domain,
                                                           const DescriptorRequest& desc,
                                                           CheckResponse& response) {
  auto rule = std::make_unique<core::RateLimitRule>();
  rule->spec.algorithm = Algorithm::kFixedWindow;
  rule->spec.requests_per_period = desc.limit->requests_per_unit;
  rule->spec.period_ns = core::TimeUnitNs(desc.limit->unit);
  rule->unit = desc.limit->unit;
  rule->requests_per_unit = desc.limit->requests_per_unit;
  // Envoy's key for an override: "domain.key_value.key2" (no "_" for an empty value).
  rule->stats_key = std::string(domain);
  for (const core::DescriptorEntry& entry : desc.entries) {
    absl::StrAppend(&rule->stats_key, ".", entry.key);
    if (!entry.value.empty()) {
      absl::StrAppend(&rule->stats_key, "_", entry.value);
    }
  }
  FG_RETURN_IF_ERROR(ValidateLimitSpec(rule->spec));
  const core::RateLimitRule* added = rule.get();
  response.override_rules.push_back(std::move(rule));
  return added;
}

}  // namespace

Limiter::Limiter(Store* store, KeyHasher hasher, std::shared_ptr<const core::Config> config,
                 LimiterOptions options)
    : store_(store),
      hasher_(hasher),
      wants_state_keys_(store->WantsStateKeys()),
      options_(options) {
  if (options_.refusal_cache_slots > 0) {
    refusals_ = std::make_unique<RefusalCache>(options_.refusal_cache_slots);
  }
  SetConfig(std::move(config));
}

RuleCounters* Limiter::CountersFor(const std::string& stats_key) const {
  absl::MutexLock lock(&counters_mu_);
  return &counters_[stats_key];
}

RuleCounters* Limiter::CountersForRequest(const std::string& stats_key,
                                          const std::string& rule_key) const {
  absl::MutexLock lock(&counters_mu_);
  if (auto it = counters_.find(stats_key); it != counters_.end()) {
    return &it->second;
  }
  // Keys made of request values are as many as callers make up: past the bound, new ones count
  // under the rule's own key.
  if (request_keys_ >= options_.max_request_stats_keys) {
    return &counters_[rule_key];
  }
  ++request_keys_;
  return &counters_[stats_key];
}

void Limiter::SetConfig(std::shared_ptr<const core::Config> config) {
  if (config == nullptr) {
    config = std::make_shared<const core::Config>();
  }
  auto snap = std::make_shared<Snapshot>();
  snap->config = config;
  for (const auto& [name, domain] : config->domains) {
    snap->domain_list.emplace_back(name, domain.get());
    if (config->domains.size() > Snapshot::kMaxLinearDomains) {
      snap->domain_map[absl::string_view(name)] = domain.get();
    }
    ForEachRule(domain->root, [&](const core::RateLimitRule& rule) {
      if (!rule.request_stats_key) {
        snap->counters[&rule] = CountersFor(rule.stats_key);
      }
    });
  }
  const uint64_t generation = next_generation.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<const Snapshot> old;
  {
    absl::MutexLock lock(&snapshot_mu_);
    old = std::exchange(snapshot_, std::move(snap));
    snapshot_generation_ = generation;
    generation_.store(generation, std::memory_order_release);
  }
  // Cached refusals were decided under the old limits, which may have been raised.
  if (refusals_ != nullptr) {
    refusals_->Clear();
  }
  // `old` (and maybe its config) is freed here, outside the lock, unless threads still cache it.
}

Limiter::ThreadState& Limiter::Local() {
  thread_local ThreadState state;
  return state;
}

const Limiter::Snapshot& Limiter::CurrentSnapshot(ThreadState& local) const {
  // The fast path is one atomic load: the thread's cached snapshot is current exactly when its
  // generation is the published one (generations are never reused). Otherwise fetch the
  // snapshot under the lock, together with its own generation, so the cached pair is always
  // consistent even when a SetConfig races with us; the next call re-validates anyway.
  //
  // The cache owns the snapshot through a control block of its own, holding one reference to
  // the shared one: copies made for responses then count in a cache line of this thread only,
  // instead of every thread bouncing the config's reference count between cores.
  //
  // Cost: a thread keeps the last snapshot it used (one config) alive until it next calls a
  // limiter with another snapshot, or exits.
  if (local.generation != generation_.load(std::memory_order_acquire)) {
    std::shared_ptr<const Snapshot> shared;
    uint64_t generation;
    {
      absl::MutexLock lock(&snapshot_mu_);
      shared = snapshot_;
      generation = snapshot_generation_;
    }
    const Snapshot* raw = shared.get();
    local.snapshot = std::shared_ptr<const Snapshot>(
        raw, [keep = std::move(shared)](const Snapshot*) mutable { keep.reset(); });
    local.generation = generation;
  }
  return *local.snapshot;
}

std::shared_ptr<const Limiter::Snapshot> Limiter::snapshot() const {
  absl::MutexLock lock(&snapshot_mu_);
  return snapshot_;
}

std::shared_ptr<const core::Config> Limiter::config() const { return snapshot()->config; }

RuleCounters* Limiter::CountersForRule(const Snapshot& snap, const Planned& planned) {
  if (planned.counters != nullptr) {
    return planned.counters;
  }
  auto it = snap.counters.find(planned.rule);
  if (it != snap.counters.end()) {
    return it->second;
  }
  return CountersFor(planned.rule->stats_key);
}

namespace {

Code OverallCode(const CheckResponse& response, bool global_quota_mode) {
  // envoyproxy/ratelimit's rule: OVER_LIMIT when a descriptor not in quota mode is, or when
  // there are quota-mode descriptors and all of them are. Unlimited descriptors do not count.
  size_t quota = 0;
  size_t quota_over = 0;
  for (const DescriptorStatus& status : response.descriptors) {
    if (status.unlimited && status.limits.empty()) {
      continue;
    }
    const bool in_quota =
        global_quota_mode || (!status.limits.empty() && status.limits.front().rule->quota_mode);
    const bool over = status.code == Code::kOverLimit;
    if (!in_quota && over) {
      return Code::kOverLimit;
    }
    quota += in_quota ? 1 : 0;
    quota_over += in_quota && over ? 1 : 0;
  }
  return quota > 0 && quota_over == quota ? Code::kOverLimit : Code::kOk;
}

}  // namespace

absl::Status Limiter::Plan(const CheckRequest& request, const Snapshot& snap,
                           std::string& key_buffer, CheckResponse& response, Batch& batch) const {
  FG_RETURN_IF_ERROR(ValidateRequest(request));
  response.descriptors.resize(request.descriptors.size());
  const core::DomainConfig* domain = snap.FindDomain(request.domain);
  response.unknown_domain = domain == nullptr;

  // Match every descriptor first: `replaces` works across the whole request. The set stays
  // empty (and unallocated) unless some matched rule replaces another.
  MatchedNodes matched(request.descriptors.size(), nullptr);
  absl::flat_hash_set<std::string_view> replaced;
  MatchDescriptors(request, domain, matched, replaced);

  const uint64_t request_hits = request.hits_addend == 0 ? 1 : request.hits_addend;
  for (size_t i = 0; i < request.descriptors.size(); ++i) {
    const DescriptorRequest& desc = request.descriptors[i];
    if (domain == nullptr || (!desc.limit.has_value() && matched[i] == nullptr)) {
      continue;  // no limit applies
    }
    const uint64_t hits = desc.hits_addend.has_value() ? *desc.hits_addend : request_hits;
    // Rules whose stats key depends on the request, or whose wildcard shares one counter
    // (share_threshold), need how each entry matched. All limits of a node agree on both.
    const core::RateLimitRule* first = matched[i] != nullptr && !matched[i]->limits.empty()
                                           ? &matched[i]->limits.front()
                                           : nullptr;
    core::MatchPath path;
    if (first != nullptr && (first->request_stats_key || first->shares_threshold)) {
      domain->Match(desc.entries, &path);
    }
    const size_t suffix =
        first != nullptr && first->shares_threshold
            ? PutDescriptorPart(key_buffer, request.domain, core::StateEntries(desc.entries, path))
            : PutDescriptorPart(key_buffer, request.domain, desc.entries);
    auto add_op = [&](const core::RateLimitRule& rule) -> absl::Status {
      if (batch.ops.size() >= options_.max_limits_per_request) {
        return absl::InvalidArgumentError(
            absl::StrCat("request has more than ", options_.max_limits_per_request, " limits"));
      }
      PutRulePart(key_buffer.data() + suffix, rule);
      StoreOp& op = batch.ops.emplace_back();
      op.key_hash = hasher_.Hash(key_buffer);
      op.spec = rule.spec;
      op.hits = hits;
      // A quota-mode refusal, like a shadow one, does not undo the request's other limits.
      op.shadow = rule.shadow_mode || rule.quota_mode || options_.global_quota_mode;
      op.consistency = rule.consistency;
      op.failure_mode = rule.failure_mode;
      op.shed = request.shed;
      if (wants_state_keys_) {
        KeepStateKey(batch.keys, op, key_buffer, suffix);
      }
      Planned& planned = batch.planned.emplace_back(Planned{i, &rule, hits});
      if (rule.request_stats_key) {
        planned.counters = CountersForRequest(
            core::RequestStatsKey(request.domain, desc.entries, path, rule), rule.stats_key);
      }
      if (rule.block_duration_ns > 0) {
        // The block is a state of its own: one hit per block_duration with no burst, so a hit
        // (made when the limit refuses) makes reads refuse for exactly block_duration.
        StoreOp block = op;
        block.key_hash = BlockKey(op.key_hash);
        block.spec = BlockSpec(rule.block_duration_ns);
        block.hits = 0;
        if (wants_state_keys_) {
          KeepStateKey(batch.keys, block, key_buffer, suffix, 'B');
        }
        batch.ops.push_back(block);
        batch.planned.push_back(Planned{i, &rule, 0, /*counters=*/nullptr, /*block=*/true});
      }
      return absl::OkStatus();
    };
    if (desc.limit.has_value()) {
      FG_ASSIGN_OR_RETURN(const core::RateLimitRule* added,
                          AddOverrideRule(request.domain, desc, response));
      FG_RETURN_IF_ERROR(add_op(*added));
      // Its key is made of request values: bounded like the others, past the bound counted
      // under the domain's name.
      batch.planned.back().counters = CountersForRequest(added->stats_key, request.domain);
      continue;
    }
    for (const core::RateLimitRule& rule : matched[i]->limits) {
      if (!replaced.empty() && !rule.name.empty() && replaced.contains(rule.name)) {
        continue;
      }
      if (rule.unlimited) {
        response.descriptors[i].unlimited = true;
        continue;
      }
      FG_RETURN_IF_ERROR(add_op(rule));
    }
  }
  if (wants_state_keys_) {
    PointStateKeys(absl::MakeSpan(batch.ops), batch.keys);
  }
  return absl::OkStatus();
}

absl::StatusOr<CheckResponse> Limiter::Check(const CheckRequest& request) {
  // Built in place and returned by name: a response keeps its descriptors and limits inline,
  // so moving it would copy them.
  absl::StatusOr<CheckResponse> result(absl::in_place);
  if (absl::Status status = Decide(request, *result); !status.ok()) {
    result = std::move(status);
  }
  return result;
}

// A check between Begin and Finish: what is left to do once the store has answered. Decide keeps
// it on its stack; a suspended CheckAsync keeps it on the heap, owned by the store's callback.
struct Limiter::InFlight {
  const CheckRequest* request = nullptr;
  CheckResponse* response = nullptr;
  // The snapshot the check was planned on. Kept alive by response->config, which shares its
  // owner (see Begin), so it outlives a suspension during which this thread moves on.
  const Snapshot* snap = nullptr;
  Batch batch;
  absl::InlinedVector<Decision, kInlineOps> decisions;
  int64_t lease = 0;
  uint32_t cache_generation = 0;
};

absl::Status Limiter::Decide(const CheckRequest& request, CheckResponse& response) {
  InFlight f;
  FG_ASSIGN_OR_RETURN(const Next next, Begin(request, response, f));
  if (next == Next::kDone) {
    return absl::OkStatus();
  }
  bool committed = false;
  if (next == Next::kAskStore) {
    committed = store_->Apply(f.batch.ops, response.decided_at_ns, absl::MakeSpan(f.decisions));
  }
  Finish(f, next == Next::kAskStore, committed, /*loop=*/nullptr);
  return absl::OkStatus();
}

void Limiter::CheckAsync(const CheckRequest& request, CheckResponse& response,
                         boost::asio::io_context& loop, Done done) {
  if (!store_->MaySuspend()) {
    // A local store answers inline: Check's own path, on this stack.
    std::move(done)(Decide(request, response));
    return;
  }
  auto f = std::make_unique<InFlight>();
  absl::StatusOr<Next> next = Begin(request, response, *f);
  if (!next.ok()) {
    std::move(done)(next.status());
    return;
  }
  if (*next != Next::kAskStore) {
    if (*next == Next::kFinish) {
      Finish(*f, /*asked=*/false, /*committed=*/false, &loop);
    }
    std::move(done)(absl::OkStatus());
    return;
  }
  InFlight* raw = f.get();  // the callback owns it from here on
  store_->ApplyAsync(
      raw->batch.ops, response.decided_at_ns, absl::MakeSpan(raw->decisions), loop,
      [this, f = std::move(f), done = std::move(done), loop = &loop](bool committed) mutable {
        Finish(*f, /*asked=*/true, committed, loop);
        std::move(done)(absl::OkStatus());
      });
}

absl::StatusOr<Limiter::Next> Limiter::Begin(const CheckRequest& request, CheckResponse& response,
                                             InFlight& f) {
  ThreadState& local = Local();
  const Snapshot& snap = CurrentSnapshot(local);
  Batch& batch = f.batch;
  FG_RETURN_IF_ERROR(Plan(request, snap, local.key, response, batch));
  // Aliases the thread's own owner of the snapshot (see CurrentSnapshot).
  response.config = std::shared_ptr<const core::Config>(local.snapshot, snap.config.get());
  f.request = &request;
  f.response = &response;
  f.snap = &snap;
  checks_.fetch_add(1, std::memory_order_relaxed);
  // One reading for the store and the response.
  response.decided_at_ns = options_.clock->NowNs();
  if (batch.ops.empty()) {
    return Next::kDone;
  }
  // Concurrency slots are acquired under a lease token that only this response carries.
  for (StoreOp& op : batch.ops) {
    if (op.spec.algorithm == Algorithm::kConcurrency && op.kind == StoreOp::Kind::kCheck &&
        op.hits > 0) {
      if (f.lease == 0) {
        f.lease = MintLease();
      }
      op.lease = static_cast<uint64_t>(f.lease);
    }
  }
  f.decisions.resize(batch.ops.size());
  f.cache_generation = refusals_ != nullptr ? refusals_->generation() : 0;
  if (FastRefuse(batch, response.decided_at_ns, absl::MakeSpan(f.decisions))) {
    fast_refusals_.fetch_add(1, std::memory_order_relaxed);
    return Next::kFinish;
  }
  return Next::kAskStore;
}

void Limiter::Finish(InFlight& f, bool asked, bool committed, boost::asio::io_context* loop) {
  CheckResponse& response = *f.response;
  const Snapshot& snap = *f.snap;
  const Batch& batch = f.batch;
  const absl::Span<const StoreOp> ops = batch.ops;
  const absl::Span<Decision> decisions = absl::MakeSpan(f.decisions);
  const int64_t now = response.decided_at_ns;
  if (asked) {
    response.lease = committed ? f.lease : 0;
    AfterDecision(batch, now, f.cache_generation, decisions, loop);
  }
  for (size_t k = 0; k < ops.size(); ++k) {
    const Planned& p = batch.planned[k];
    if (p.block) {
      continue;  // folded into the op it follows (AfterDecision)
    }
    DescriptorStatus& status = response.descriptors[p.descriptor];
    LimitResult& result = status.limits.emplace_back();
    result.rule = p.rule;
    result.decision = decisions[k];
    if (!result.decision.allowed && p.rule->shadow_mode) {
      result.shadow = true;
    } else if (!result.decision.allowed) {
      status.code = Code::kOverLimit;
    }

    RuleCounters* counters = CountersForRule(snap, p);
    counters->total_hits.fetch_add(p.hits, std::memory_order_relaxed);
    if (!result.decision.allowed) {
      counters->over_limit.fetch_add(p.hits, std::memory_order_relaxed);
      if (!asked) {
        counters->over_limit_with_local_cache.fetch_add(p.hits, std::memory_order_relaxed);
      }
      if (result.shadow) {
        counters->shadow_mode.fetch_add(p.hits, std::memory_order_relaxed);
      }
    } else if (committed) {
      counters->within_limit.fetch_add(p.hits, std::memory_order_relaxed);
      // As Envoy: the hits past floor(limit * ratio), at most this check's.
      const uint64_t limit = result.decision.limit;
      const uint64_t after = limit - std::min(limit, result.decision.remaining);
      const uint64_t threshold =
          static_cast<uint64_t>(std::floor(static_cast<double>(limit) * options_.near_limit_ratio));
      if (limit > 0 && after > threshold) {
        counters->near_limit.fetch_add(std::min(p.hits, after - threshold),
                                       std::memory_order_relaxed);
      }
    }
  }
  response.overall = OverallCode(response, options_.global_quota_mode);
  if (response.overall == Code::kOverLimit) {
    over_limit_checks_.fetch_add(1, std::memory_order_relaxed);
  }
  for (DescriptorStatus& status : response.descriptors) {
    for (size_t k = 0; k < status.limits.size(); ++k) {
      const LimitResult& r = status.limits[k];
      if (status.primary < 0) {
        status.primary = static_cast<int>(k);
        continue;
      }
      const LimitResult& best = status.limits[status.primary];
      const bool refused = !r.decision.allowed && !r.shadow;
      const bool best_refused = !best.decision.allowed && !best.shadow;
      if (best_refused) {
        continue;
      }
      if (refused || r.decision.remaining < best.decision.remaining) {
        status.primary = static_cast<int>(k);
      }
    }
  }
}

bool Limiter::FastRefuse(const Batch& batch, int64_t now_ns, absl::Span<Decision> decisions) const {
  const absl::Span<const StoreOp> ops = batch.ops;
  if (refusals_ == nullptr) {
    return false;
  }
  // Only when every limit of the request is known refused: the answer for each is then exact
  // (refused, nothing left, retry when the cache says) without asking anyone.
  for (size_t k = 0; k < ops.size(); ++k) {
    const StoreOp& op = ops[k];
    if (batch.planned[k].block) {
      // A block read: answered with the op it follows.
      decisions[k] = Decision{};
      continue;
    }
    if (op.shadow || op.hits == 0 || op.kind != StoreOp::Kind::kCheck) {
      return false;
    }
    const int64_t until = refusals_->RefusedUntil(op.key_hash, now_ns);
    if (until == 0) {
      return false;
    }
    Decision& d = decisions[k];
    d = Decision{};
    d.allowed = false;
    d.limit = op.spec.Capacity();
    d.remaining = 0;
    d.retry_after_ns = until - now_ns;
    d.reset_after_ns = until - now_ns;
  }
  return true;
}

void Limiter::AfterDecision(const Batch& batch, int64_t now_ns, uint32_t cache_generation,
                            absl::Span<Decision> decisions, boost::asio::io_context* loop) {
  absl::InlinedVector<StoreOp, 1> blocks;
  for (size_t k = 0; k < batch.ops.size(); ++k) {
    const Planned& p = batch.planned[k];
    Decision& d = decisions[k];
    if (p.block) {
      // The limit before it is blocked: refuse it for the rest of the block.
      if (!d.allowed) {
        Decision& limited = decisions[k - 1];
        // Unavailable only when nothing but an unasked counter refuses it.
        limited.unavailable = d.unavailable && (limited.allowed || limited.unavailable);
        limited.allowed = false;
        limited.remaining = 0;
        limited.retry_after_ns = std::max(limited.retry_after_ns, d.retry_after_ns);
        limited.reset_after_ns = std::max(limited.reset_after_ns, d.retry_after_ns);
      }
      continue;
    }
    const StoreOp& op = batch.ops[k];
    // A refusal the owner did not make (shed, or a closed failure mode) neither starts a block
    // nor is cached: the next check asks again.
    if (d.allowed || op.shadow || op.shed || d.unavailable) {
      continue;
    }
    const bool blocked_already =
        k + 1 < batch.ops.size() && batch.planned[k + 1].block && !decisions[k + 1].allowed;
    if (p.rule->block_duration_ns > 0 && !blocked_already && d.retry_after_ns != 0 &&
        d.retry_after_ns != Decision::kNever) {
      // Refused by the limit itself: start the block. Not for hits that can never pass (more
      // than the limit or burst): they say nothing of the key's traffic, and a caller could
      // otherwise block a key for everyone with one oversized request.
      StoreOp block = batch.ops[k + 1];
      block.hits = 1;
      blocks.push_back(block);
      d.retry_after_ns = std::max(d.retry_after_ns, p.rule->block_duration_ns);
      d.reset_after_ns = std::max(d.reset_after_ns, p.rule->block_duration_ns);
    }
    if (refusals_ != nullptr && RefusalIsCacheable(op.spec, op.hits, d)) {
      refusals_->Refuse(op.key_hash, now_ns + d.retry_after_ns, cache_generation);
    }
  }
  if (blocks.empty()) {
    return;
  }
  if (loop == nullptr || !store_->MaySuspend()) {
    absl::InlinedVector<Decision, 1> ignored(blocks.size());
    store_->Apply(blocks, now_ns, absl::MakeSpan(ignored));
    return;
  }
  // The check's answer does not wait for its block to be written (the block's owner may be
  // another node); the decisions it is written into live until the store is done with them.
  auto ignored = std::make_unique<absl::InlinedVector<Decision, 1>>(blocks.size());
  const absl::Span<Decision> out = absl::MakeSpan(*ignored);
  store_->ApplyAsync(blocks, now_ns, out, *loop, [ignored = std::move(ignored)](bool) {});
}

int64_t Limiter::MintLease() {
  const uint64_t n = leases_minted_.fetch_add(1, std::memory_order_relaxed);
  char bytes[sizeof(n)];
  std::memcpy(bytes, &n, sizeof(n));
  // 63 bits of SipHash output under a random key: JSON and proto int64 carry it as is.
  const int64_t lease =
      static_cast<int64_t>(lease_hasher_.Hash(std::string_view(bytes, sizeof(bytes))) >> 1);
  return lease != 0 ? lease : 1;
}

// A release's ops and the decisions the store writes for them.
struct Limiter::Releases {
  absl::InlinedVector<StoreOp, kInlineOps> ops;
  std::string keys;  // the ops' state keys, as Batch::keys
  absl::InlinedVector<Decision, kInlineOps> decisions;
};

namespace {

// A release's decision is allowed when it found the lease on its key and freed its slots.
absl::Status ReleaseOutcome(absl::Span<const Decision> decisions) {
  if (std::none_of(decisions.begin(), decisions.end(),
                   [](const Decision& d) { return d.allowed; })) {
    return absl::FailedPreconditionError("the lease is unknown, already released or expired");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Limiter::PlanRelease(const CheckRequest& request, int64_t lease, Releases& releases) {
  ThreadState& local = Local();
  const Snapshot& snap = CurrentSnapshot(local);
  CheckResponse response;
  Batch batch;
  FG_RETURN_IF_ERROR(Plan(request, snap, local.key, response, batch));
  for (StoreOp& op : batch.ops) {
    if (op.spec.algorithm == Algorithm::kConcurrency) {
      op.kind = StoreOp::Kind::kRelease;
      op.lease = static_cast<uint64_t>(lease);
      releases.ops.push_back(op);
    }
  }
  if (releases.ops.empty()) {
    return absl::FailedPreconditionError(
        "nothing to release: the request matches no concurrency limit");
  }
  if (wants_state_keys_) {
    for (StoreOp& op : releases.ops) {
      releases.keys.append(op.state_key);
    }
    PointStateKeys(absl::MakeSpan(releases.ops), releases.keys);
  }
  releases.decisions.resize(releases.ops.size());
  return absl::OkStatus();
}

absl::Status Limiter::Release(const CheckRequest& request, int64_t lease) {
  Releases releases;
  FG_RETURN_IF_ERROR(PlanRelease(request, lease, releases));
  store_->Apply(releases.ops, options_.clock->NowNs(), absl::MakeSpan(releases.decisions));
  return ReleaseOutcome(releases.decisions);
}

void Limiter::ReleaseAsync(const CheckRequest& request, int64_t lease,
                           boost::asio::io_context& loop, Done done) {
  if (!store_->MaySuspend()) {
    std::move(done)(Release(request, lease));
    return;
  }
  auto releases = std::make_unique<Releases>();
  if (absl::Status planned = PlanRelease(request, lease, *releases); !planned.ok()) {
    std::move(done)(std::move(planned));
    return;
  }
  Releases* raw = releases.get();  // the callback owns it from here on
  store_->ApplyAsync(raw->ops, options_.clock->NowNs(), absl::MakeSpan(raw->decisions), loop,
                     [releases = std::move(releases), done = std::move(done)](bool) mutable {
                       std::move(done)(ReleaseOutcome(releases->decisions));
                     });
}

void Limiter::ForEachRuleCounters(
    const std::function<void(const std::string&, const RuleCounters&)>& fn) const {
  absl::MutexLock lock(&counters_mu_);
  for (const auto& [key, counters] : counters_) {
    fn(key, counters);
  }
}

LimiterStats Limiter::GetStats() const {
  LimiterStats stats;
  stats.checks = checks_.load(std::memory_order_relaxed);
  stats.over_limit_checks = over_limit_checks_.load(std::memory_order_relaxed);
  stats.fast_refusals = fast_refusals_.load(std::memory_order_relaxed);
  stats.config_version = config()->version;
  return stats;
}

}  // namespace floodgate::limiter
